"""`bajax eval vocoder`: copy synthesis. Each utterance at 24 kHz -> its ground-truth mel
(`bajax.audio.mel.flow_mel_24k`, the mel the flow decoder produces) -> the vocoder -> 24 kHz audio, scored
against the utterance (cut to whole mel hops) with the RECONSTRUCTION metrics plus F0 RMSE and voicing error.
`--baseline` adds Griffin-Lim on the same mels as a second system (rows grouped by `system`), so a vocoder's
figures come with the classical inversion's beside them.
"""

from __future__ import annotations

import numpy as np

from bajax.eval import protocol, runner

SAMPLE_RATE, HOP = 24000, 480


def evaluate(settings: runner.Settings, *, vocoder: str, step: int | None = None, baseline: bool = False,
             gl_iters: int = 32) -> tuple[dict, dict]:
    from bajax.audio.mel import flow_mel_24k
    from bajax.flow.vocoder import GriffinLim
    from bajax.speech.hift import HiFTVocoder

    systems = {"hift": HiFTVocoder.load(vocoder, step=step, seed=settings.seed, flag="vocoder")}
    models = {"vocoder": systems["hift"].source}
    if baseline:
        systems["griffin_lim"] = GriffinLim(n_iter=gl_iters, seed=settings.seed)
        models["baseline"] = f"griffin-lim ({gl_iters} iterations)"

    def score(utt: protocol.Utterance) -> list[dict]:
        wave, source_sr = protocol.load_audio(utt, SAMPLE_RATE)
        wave = wave[: len(wave) // HOP * HOP]
        mel = flow_mel_24k(wave)
        rows = []
        for name, system in systems.items():
            est = np.asarray(system(mel), np.float32)
            row = {"system": name, "source_sr": source_sr, "seconds": len(wave) / SAMPLE_RATE}
            runner.reconstruction(row, wave, est, SAMPLE_RATE, f0=True)
            rows.append(row)
        return rows

    return runner.evaluate(
        "vocoder", settings, score=score,
        metrics=(*runner.RECONSTRUCTION, "f0_rmse", "voicing_error"), models=models, sample_rate=SAMPLE_RATE,
        group_by="system",
        protocol_notes={"reference": "the input utterance at 24 kHz, cut to whole mel hops (480 samples)",
                        "mel": "bajax.audio.mel.flow_mel_24k of the reference"})

"""Held-out copy synthesis for benchmarks (bench/vocoder.py): audio -> 24 kHz mel -> a vocoder -> audio, scored
against the original. `bajax eval vocoder` (bajax/eval/vocoding.py) is the full protocol with every metric.

The utterances are the first `seconds` of the first `count` distinct audio files of the embedded corpus's
`valid` split (documents never trained on). Every vocoder sees the same mels; the scores are means over
the utterances of `bajax.eval.spectral`'s multi-resolution STFT distance and mel L1 (lower is better).
"""

from __future__ import annotations

import numpy as np

from bajax.eval.spectral import mel_l1, mr_stft_distance

SAMPLE_RATE, HOP = 24000, 480


def held_out_waves(count: int = 8, seconds: float = 3.0) -> list[np.ndarray]:
    """24 kHz float32 waves, each a whole number of mel hops long."""
    from bajax.audio import io as audio_io
    from bajax.audio.resample import resample
    from bajax.data import manifest, sources

    entries, _ = manifest.read(str(sources.corpus_dir() / sources.CORPUS_MANIFEST))
    waves, seen = [], set()
    for entry in entries:
        if entry.split != "valid" or entry.audio[0] in seen:
            continue
        seen.add(entry.audio[0])
        wave, sr = audio_io.read(entry.audio[0])
        wave = resample(wave, sr, SAMPLE_RATE)[: int(seconds * SAMPLE_RATE)]
        waves.append(np.asarray(wave[: len(wave) // HOP * HOP], np.float32))
        if len(waves) == count:
            break
    return waves


def score(vocoders: dict, waves: list[np.ndarray]) -> list[dict[str, dict[str, float]]]:
    """Per wave, {vocoder name: {"mr_stft", "mel_l1"}} of `{name: Vocoder}` resynthesising its mel."""
    from bajax.audio.mel import flow_mel_24k

    rows = []
    for wave in waves:
        mel = flow_mel_24k(wave)
        rows.append({name: {"mr_stft": mr_stft_distance(wave, out), "mel_l1": mel_l1(wave, out)}
                     for name, out in ((name, np.asarray(v(mel), np.float32)) for name, v in vocoders.items())})
    return rows


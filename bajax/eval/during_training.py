"""The speech metrics of `train.eval_speech`: Griffin-Lim of a batch of mels (inside the kind's jitted call) and
the host-side scores of (reference, estimate) waveform pairs.

Scores (bajax.eval.spectral, bajax.eval.quality), each a mean over the held-out utterances:
    speech_mel_l1   mel L1: of the two mels when the kind compares mels (flow, tokenizer), else of the flow
                    decoder's 24 kHz mel of the two waves (vocoder)
    speech_mr_stft  multi-resolution STFT distance of the waves
    speech_pesq     wide-band PESQ (1.04 .. 4.64), over the utterances where PESQ succeeds
    speech_stoi     STOI (about 0 .. 1), over the utterances where STOI succeeds
    speech_failed   utterances where PESQ raised ValueError (e.g. no utterance found in the reference) or STOI
                    could not score (a silent reference; fewer than 30 non-silent frames, where pystoi warns and
                    returns 1e-5): counted here and left out of that metric's mean, never hidden
    speech_utterances  how many were scored
"""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from bajax.audio.mel import LOG_MEL_FLOOR, hann_window
from bajax.flow.vocoder import GriffinLim, _griffin_lim


def griffin_lim_batch(gl: GriffinLim, mel: jax.Array, mel_lengths: jax.Array) -> jax.Array:
    """Waves [B, T * hop] of mels [B, T, n_mels] (jit-able), each row what `gl(mel[b, :length])` gives except
    near its end (the padding reaches n_fft / hop frames back, one window further each iteration). Frames past
    a row's length are set to the log floor (digital silence) first, so padding adds no energy near an
    utterance's end. Every row starts from the same seeded phase (`gl.seed`): equal mels give equal waves."""
    frames = mel.shape[1]
    valid = jnp.arange(frames)[None, :] < mel_lengths[:, None]
    mel = jnp.where(valid[..., None], mel.astype(jnp.float32), LOG_MEL_FLOOR)
    mag = jax.vmap(gl.magnitude)(mel)
    phase = jax.random.uniform(jax.random.key(gl.seed), mag.shape[1:], jnp.float32) * 2 * np.pi
    window = jnp.asarray(hann_window(gl.n_fft), jnp.float32)
    invert = lambda m: _griffin_lim(m, jnp.exp(1j * phase), window, n_fft=gl.n_fft, hop=gl.hop, n_iter=gl.n_iter,
                                    momentum=gl.momentum)
    signal = jax.vmap(invert)(mag)
    offset = (gl.n_fft - gl.hop) // 2                                     # the analysis padding
    return signal[:, offset:offset + frames * gl.hop]


def mel_pair_outputs(gl: GriffinLim, ref_mel: jax.Array, est_mel: jax.Array, mel_lengths: jax.Array) -> dict:
    """A `SpeechEval.run` output (bajax.models.spec) comparing two mels [B, T, n_mels]: the mels themselves (for
    the mel L1) and both inverted by the same Griffin-Lim, so the waves differ only where the mels do."""
    return {"ref": griffin_lim_batch(gl, ref_mel, mel_lengths), "est": griffin_lim_batch(gl, est_mel, mel_lengths),
            "lengths": mel_lengths * gl.hop, "ref_mel": ref_mel.astype(jnp.float32),
            "est_mel": est_mel.astype(jnp.float32), "mel_lengths": mel_lengths}


@dataclasses.dataclass(frozen=True)
class Pair:
    """One held-out utterance: reference and estimate waves at `sample_rate`; `mel_l1` when the kind compared
    mels itself (None: the flow mel L1 of the two waves)."""
    ref: np.ndarray
    est: np.ndarray
    sample_rate: int
    mel_l1: float | None = None


def pairs_of(outputs: dict, sample_rate: int, rows: int) -> list[Pair]:
    """The first `rows` utterances of a kind's `SpeechEval.run` outputs (numpy), cut to their lengths."""
    out = []
    for b in range(rows):
        n = int(outputs["lengths"][b])
        mel_l1 = None
        if "est_mel" in outputs:
            t = int(outputs["mel_lengths"][b])
            diff = np.asarray(outputs["est_mel"][b, :t], np.float64) - np.asarray(outputs["ref_mel"][b, :t], np.float64)
            mel_l1 = float(np.mean(np.abs(diff)))
        out.append(Pair(np.asarray(outputs["ref"][b, :n], np.float32), np.asarray(outputs["est"][b, :n], np.float32),
                        sample_rate, mel_l1))
    return out


def _stoi_or_none(ref, est, sr: int) -> float | None:
    """STOI, or None for a silent reference (pystoi would correlate with zeros and say 0) or where pystoi finds
    too few non-silent frames (it warns and returns 1e-5 then)."""
    from bajax.eval.quality import stoi

    if not np.any(ref):
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = stoi(ref, est, sr)
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        return None
    return value


def score(pairs: list[Pair]) -> dict[str, float]:
    """The means of the module docstring (NaN for PESQ or STOI when no utterance could be scored by it)."""
    from bajax.audio.resample import resample
    from bajax.eval.quality import pesq_wb
    from bajax.eval.spectral import mel_l1, mr_stft_distance

    rows = {"mel_l1": [], "mr_stft": [], "pesq": [], "stoi": []}
    failed = 0
    for p in pairs:
        if p.mel_l1 is not None:
            rows["mel_l1"].append(p.mel_l1)
        else:
            ref24, est24 = (p.ref, p.est) if p.sample_rate == 24000 else (resample(p.ref, p.sample_rate, 24000),
                                                                         resample(p.est, p.sample_rate, 24000))
            rows["mel_l1"].append(mel_l1(ref24, est24))
        rows["mr_stft"].append(mr_stft_distance(p.ref, p.est))
        bad = False
        try:
            rows["pesq"].append(pesq_wb(p.ref, p.est, p.sample_rate))
        except ValueError:
            bad = True
        value = _stoi_or_none(p.ref, p.est, p.sample_rate)
        if value is None:
            bad = True
        else:
            rows["stoi"].append(value)
        failed += bad
    mean = lambda xs: float(np.mean(xs)) if xs else float("nan")
    return {**{f"speech_{k}": mean(v) for k, v in rows.items()}, "speech_failed": float(failed),
            "speech_utterances": float(len(pairs))}

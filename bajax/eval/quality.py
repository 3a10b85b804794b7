"""Intrusive speech quality and intelligibility: PESQ (wide-band), STOI and ESTOI of an estimate against its
reference. Both waves are mono float in [-1, 1] at the same rate and are cut to the shorter length first (a
vocoder's output may differ by a few samples); higher is better for all three.
"""

from __future__ import annotations

import numpy as np

from bajax.audio.resample import resample
from bajax.eval.deps import require

PESQ_RATE = 16000


def _pair(ref, est, what: str) -> tuple[np.ndarray, np.ndarray]:
    ref, est = np.asarray(ref, np.float32).reshape(-1), np.asarray(est, np.float32).reshape(-1)
    n = min(len(ref), len(est))
    if n == 0:
        raise ValueError(f"{what} of an empty waveform")
    if not (np.all(np.isfinite(ref[:n])) and np.all(np.isfinite(est[:n]))):
        raise ValueError(f"{what}: a waveform has NaN or infinite samples")
    return ref[:n], est[:n]


def pesq_wb(ref, est, sr: int) -> float:
    """Wide-band PESQ (ITU-T P.862.2), MOS-LQO from 1.04 to 4.64 (identical signals), via the `pesq` package
    (the ITU reference C code). Waves at another rate than 16 kHz are resampled to 16 kHz first
    (`bajax.audio.resample`). A silent reference, or one in which PESQ finds no utterance, is a ValueError."""
    pesq = require("pesq", "PESQ")
    ref, est = _pair(ref, est, "PESQ")
    if not np.any(ref):
        raise ValueError("PESQ of a silent (all-zero) reference")
    if sr != PESQ_RATE:
        ref, est = resample(ref, sr, PESQ_RATE), resample(est, sr, PESQ_RATE)
    try:
        return float(pesq.pesq(PESQ_RATE, ref, est, "wb"))
    except pesq.PesqError as e:
        raise ValueError(f"PESQ failed ({type(e).__name__}: {e}); is there speech in the reference?") from e


def stoi(ref, est, sr: int) -> float:
    """Short-Time Objective Intelligibility (Taal et al., IEEE TASLP 2011) via `pystoi`: the mean correlation of
    one-third-octave band envelopes over 384 ms segments, after pystoi resamples to 10 kHz and drops the
    reference's silent frames (40 dB below its loudest). About 1 for identical signals."""
    return _stoi(ref, est, sr, extended=False)


def estoi(ref, est, sr: int) -> float:
    """Extended STOI (Jensen & Taal, IEEE TASLP 2016) via `pystoi`: like `stoi` but correlating normalised
    spectro-temporal segments, so it also penalises modulated noise; about 1 for identical signals."""
    return _stoi(ref, est, sr, extended=True)


def _stoi(ref, est, sr: int, extended: bool) -> float:
    pystoi = require("pystoi", "ESTOI" if extended else "STOI")
    ref, est = _pair(ref, est, "STOI")
    return float(pystoi.stoi(ref.astype(np.float64), est.astype(np.float64), sr, extended=extended))

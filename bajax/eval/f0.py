"""F0 agreement between a reference and an estimate: F0 RMSE and voicing decision error.

Both waves go to 24 kHz (`bajax.audio.resample`) and are cut to the shorter length; F0 is
`bajax.vocoder.pitch.f0_of` (the vocoder's YIN, 71-800 Hz, 0 = unvoiced) read on its own 20 ms grid (WORLD's
frame count, so no frame is a blend of two grid points). The pair of tracks is the standard basis of the
F0 metrics of TTS and vocoder papers (e.g. Hayashi et al. 2017; Kumar et al. 2019, MelGAN): RMSE in Hz over
frames voiced in both, and the fraction of frames whose voiced / unvoiced decisions differ.
"""

from __future__ import annotations

import numpy as np

from bajax.audio.resample import resample
from bajax.vocoder.pitch import HOP, SAMPLE_RATE, f0_of, grid_frames


def f0_tracks(ref, est, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """(F0 of ref, F0 of est) in Hz on the same 20 ms grid, 0 where unvoiced."""
    ref = resample(np.asarray(ref, np.float32).reshape(-1), sr, SAMPLE_RATE)
    est = resample(np.asarray(est, np.float32).reshape(-1), sr, SAMPLE_RATE)
    n = min(len(ref), len(est))
    if n < HOP:
        raise ValueError(f"F0 metrics need at least {HOP / SAMPLE_RATE * 1000:.0f} ms of both waves; got "
                         f"{n / SAMPLE_RATE * 1000:.1f} ms")
    frames = grid_frames(n)
    return f0_of(ref[:n], frames).astype(np.float64), f0_of(est[:n], frames).astype(np.float64)


def f0_rmse(ref, est, sr: int) -> float:
    """sqrt(mean((F0_ref - F0_est)^2)) in Hz over the frames voiced in both; NaN when no frame is."""
    a, b = f0_tracks(ref, est, sr)
    both = (a > 0) & (b > 0)
    return float(np.sqrt(np.mean((a[both] - b[both]) ** 2))) if both.any() else float("nan")


def voicing_error(ref, est, sr: int) -> float:
    """Voicing decision error: the fraction of frames voiced in exactly one of the two waves (0 to 1)."""
    a, b = f0_tracks(ref, est, sr)
    return float(np.mean((a > 0) != (b > 0)))

"""Sample-rate conversion with soxr (high quality, deterministic, CPU)."""

from __future__ import annotations

import numpy as np
import soxr


def resample(wave: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resamples a mono float waveform [n] from `sr_in` to `sr_out` Hz; returns float32.

    soxr's 'HQ' preset is used: the same input always gives the same output, which keeps prepared
    shards reproducible.
    """
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"resample expects a mono waveform [n], got shape {wave.shape}; down-mix first")
    if sr_in <= 0 or sr_out <= 0:
        raise ValueError(f"sample rates must be positive, got {sr_in} -> {sr_out}")
    if sr_in == sr_out or wave.size == 0:
        return wave.copy()
    return np.asarray(soxr.resample(wave, sr_in, sr_out, quality="HQ"), dtype=np.float32)

"""Fixed sinusoidal tables (Whisper's formula) and the non-trainable variable that holds them.

The table is computed in float64 and rounded once. The reference builds it in float32 (torch), whose
rounded arguments t * w_i drift by up to ~1e-4 at t = 1500; so the table is STORED (not recomputed at call
time): an imported checkpoint carries its own exact table and the exporter writes it back unchanged.
"""

from __future__ import annotations

import numpy as np
from flax import nnx


class FixedTable(nnx.Variable):
    """A constant table stored with the model: not a Param, so the optimizer never updates it."""


def whisper_sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
    """[length, channels] = [sin(t * w_i) | cos(t * w_i)], w_i = exp(-i * ln(max_timescale) / (C/2 - 1))."""
    if channels % 2:
        raise ValueError(f"sinusoidal table needs an even channel count, got {channels}")
    half = channels // 2
    increment = np.log(max_timescale) / max(half - 1, 1)
    inv = np.exp(-increment * np.arange(half, dtype=np.float64))
    scaled = np.arange(length, dtype=np.float64)[:, None] * inv[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)

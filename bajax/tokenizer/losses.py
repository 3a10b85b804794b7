"""Tokenizer reconstruction losses (paper eq. 1-3, SPEC section 2), as masked SUMS for additive batching.

Each term is a sum over valid (frame, bin) pairs; the caller divides by the valid frames x bins of the whole
global batch, so micro-batch losses add up to the full-batch loss (gradient accumulation is exact).
Multi-scale (our reading of "two distinct hop lengths and window sizes"): the same L1 + L2 on the mels
average-pooled in time by each factor of `scales`, each normalised like the full-resolution term.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _pool(x: jax.Array, w: jax.Array, factor: int) -> tuple[jax.Array, jax.Array]:
    """Mean-pool x [B, T, C] over time by `factor` using only valid frames; pooled frame valid if any is."""
    b, t, c = x.shape
    pad = -t % factor
    x = jnp.pad(x * w[..., None], ((0, 0), (0, pad), (0, 0))).reshape(b, -1, factor, c)
    w = jnp.pad(w, ((0, 0), (0, pad))).reshape(b, -1, factor)
    n = jnp.sum(w, -1)
    return jnp.sum(x, 2) / jnp.maximum(n, 1.0)[..., None], (n > 0).astype(jnp.float32)


def l1_l2_sums(pred: jax.Array, target: jax.Array, weight: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Sum of |e| and of e^2 over valid frames (weight [B, T] in {0, 1}), fp32."""
    e = (pred.astype(jnp.float32) - target.astype(jnp.float32)) * weight[..., None]
    return jnp.sum(jnp.abs(e)), jnp.sum(e * e)


def mel_loss_sums(pred: jax.Array, target: jax.Array, weight: jax.Array, scales=(2, 4)) -> dict:
    """{'l1', 'l2'} at full resolution plus {'ms_l1', 'ms_l2'}: pooled terms rescaled to full-frame units."""
    l1, l2 = l1_l2_sums(pred, target, weight)
    ms_l1 = ms_l2 = jnp.zeros((), jnp.float32)
    for f in scales:
        p, w = _pool(pred.astype(jnp.float32), weight, f)
        q, _ = _pool(target.astype(jnp.float32), weight, f)
        a, b = l1_l2_sums(p, q, w)
        # A pooled frame stands for `f` frames: scale so each scale weighs like the full-resolution term.
        ms_l1, ms_l2 = ms_l1 + a * f / len(scales), ms_l2 + b * f / len(scales)
    return {"l1": l1, "l2": l2, "ms_l1": ms_l1, "ms_l2": ms_l2}

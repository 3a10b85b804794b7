"""Rotary position embedding, rotate-half convention (GPT-NeoX / Qwen2 / Hugging Face).

Positions are given per token rather than derived from the sequence index, so a packed row restarts at 0
in every segment and a decoding step passes its absolute position explicitly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def rope_frequencies(head_dim: int, theta: float) -> jax.Array:
    """Inverse frequencies [head_dim // 2] (fp32)."""
    return 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))


def apply_rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """Rotates x [B, T, ..., head_dim] by angles positions [B, T] * freqs; angles in fp32."""
    head_dim = x.shape[-1]
    angles = positions.astype(jnp.float32)[..., None] * rope_frequencies(head_dim, theta)  # [B, T, D/2]
    angles = angles.reshape(angles.shape[:2] + (1,) * (x.ndim - 3) + angles.shape[-1:])
    cos = jnp.concatenate([jnp.cos(angles)] * 2, axis=-1)
    sin = jnp.concatenate([jnp.sin(angles)] * 2, axis=-1)
    xf = x.astype(jnp.float32)
    half = head_dim // 2
    rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
    return (xf * cos + rotated * sin).astype(x.dtype)

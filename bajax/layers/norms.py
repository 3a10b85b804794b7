"""Normalisation layers: RMSNorm and LayerNorm (with or without bias).

Statistics are always computed in fp32, whatever the compute dtype, because a mean of squares in bf16
loses most of its mantissa for wide hidden sizes; the result is cast back to the input's dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class RMSNorm(nnx.Module):
    """y = x / rms(x) * weight (Qwen2 / Baichuan style, weight initialised to ones)."""

    def __init__(self, features: int, *, eps: float = 1e-6, axis_name: str | None = "norm"):
        self.eps = eps
        self.weight = nnx.Param(jnp.ones((features,), jnp.float32), logical_axes=(axis_name,))

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # bf16 -> fp32; float64 stays
        var = jnp.mean(jnp.square(xf), axis=-1, keepdims=True)
        y = xf * jax.lax.rsqrt(var + self.eps) * self.weight[...]
        return y.astype(x.dtype)


class LayerNorm(nnx.Module):
    """y = (x - mean) / std * scale (+ bias when `use_bias`)."""

    def __init__(self, features: int, *, eps: float = 1e-5, use_bias: bool = True,
                 axis_name: str | None = "norm"):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((features,), jnp.float32), logical_axes=(axis_name,))
        self.bias = (nnx.Param(jnp.zeros((features,), jnp.float32), logical_axes=(axis_name,))
                     if use_bias else None)

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # bf16 -> fp32; float64 stays
        mean = jnp.mean(xf, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
        y = (xf - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...]
        if self.bias is not None:
            y = y + self.bias[...]
        return y.astype(x.dtype)

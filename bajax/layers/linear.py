"""Linear projections and embedding tables whose parameters carry logical axis names.

`Linear` is a general dense layer: it contracts the last `len(in_shape)` dimensions of its input with a
kernel of shape `in_shape + out_shape`, so attention projections can keep heads and head_dim as separate
(separately shardable) kernel dimensions instead of a flat `heads * head_dim`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from bajax import kernels
from bajax.layers import lora

Shape = int | Sequence[int]


def _tuple(s: Shape) -> tuple[int, ...]:
    return (int(s),) if isinstance(s, int) else tuple(int(d) for d in s)


def fan_in_init(key: jax.Array, shape: tuple[int, ...], fan_in: int) -> jax.Array:
    """Truncated normal with variance 1/fan_in (keeps activations O(1) at init for any width)."""
    std = 1.0 / math.sqrt(fan_in) / 0.87962566103423978  # undo the variance lost by truncating at 2 std
    return std * jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32)


class Linear(nnx.Module):
    """y = x · kernel (+ bias); `axes` names every kernel dimension (inputs first, then outputs).

    `add_adapter` (called by `bajax.layers.lora.attach`) adds a LoRA pair beside the kernel."""

    lora_a: nnx.Param | None = None    # class defaults: a Linear without adapters has neither leaf
    lora_b: nnx.Param | None = None

    def __init__(self, in_shape: Shape, out_shape: Shape, *, axes: Sequence[str | None],
                 use_bias: bool = False, dtype=jnp.float32, rngs: nnx.Rngs):
        self.in_shape, self.out_shape = _tuple(in_shape), _tuple(out_shape)
        axes = tuple(axes)
        if len(axes) != len(self.in_shape) + len(self.out_shape):
            raise ValueError(f"Linear {self.in_shape}->{self.out_shape}: axes {axes} need one name per dim")
        self.dtype = dtype
        fan_in = math.prod(self.in_shape)
        self.kernel = nnx.Param(fan_in_init(rngs.params(), self.in_shape + self.out_shape, fan_in),
                                logical_axes=axes)
        self.bias = (nnx.Param(jnp.zeros(self.out_shape, jnp.float32), logical_axes=axes[len(self.in_shape):])
                     if use_bias else None)

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel[...].astype(self.dtype)
        x = x.astype(self.dtype)
        y = kernels.linear(x, kernel, len(self.in_shape))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        if self.lora_a is not None:
            h = kernels.linear(lora.dropout(x, self.lora_dropout), self.lora_a[...].astype(self.dtype),
                               len(self.in_shape))
            y = y + kernels.linear(h, self.lora_b[...].astype(self.dtype), 1) * jnp.asarray(self.lora_scale,
                                                                                             self.dtype)
        return y

    def add_adapter(self, rank: int, scale: float, dropout: float, key: jax.Array) -> None:
        """LoRA factors A (random) and B (zeros) for this kernel, stacked and sharded like it."""
        shape = self.kernel.get_value().shape
        n_in = len(self.in_shape)
        lead = len(shape) - n_in - len(self.out_shape)    # stacked layer dims in front (inside a Stack)
        a_axes, b_axes = lora.factor_axes(self.kernel.get_metadata()["logical_axes"], lead, n_in)
        a, b = lora.init_factors(key, shape, lead, n_in, rank)
        self.lora_a = lora.Adapter(a, logical_axes=a_axes)
        self.lora_b = lora.Adapter(b, logical_axes=b_axes)
        self.lora_scale, self.lora_dropout = float(scale), float(dropout)


class Embedding(nnx.Module):
    """A lookup table [num, features]; `attend` multiplies by its transpose (tied output heads)."""

    def __init__(self, num: int, features: int, *, axes: tuple[str | None, str | None] = ("vocab", "embed"),
                 dtype=jnp.float32, init_std: float = 0.02, rngs: nnx.Rngs):
        self.num, self.features, self.dtype = num, features, dtype
        self.embedding = nnx.Param(init_std * jax.random.normal(rngs.params(), (num, features), jnp.float32),
                                   logical_axes=axes)

    def __call__(self, ids: jax.Array) -> jax.Array:
        return jnp.take(self.embedding[...].astype(self.dtype), ids, axis=0)

    def attend(self, x: jax.Array) -> jax.Array:
        return jnp.einsum("...d,vd->...v", x.astype(self.dtype), self.embedding[...].astype(self.dtype))

"""Feed-forward blocks: SwiGLU (Qwen2 backbone) and a GELU MLP (audio head, encoders)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from bajax import kernels
from bajax.layers.linear import Linear


def gelu_exact(x: jax.Array) -> jax.Array:
    """x * Phi(x) with the erf form of torch's default `nn.GELU()`."""
    return kernels.gelu(x)


def gelu(x: jax.Array, approximate: bool = False) -> jax.Array:
    return jax.nn.gelu(x, approximate=True) if approximate else gelu_exact(x)


class SwiGLU(nnx.Module):
    """down(silu(gate(x)) * up(x)), no biases."""

    def __init__(self, embed: int, hidden: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.gate_proj = Linear(embed, hidden, axes=("embed", "mlp"), dtype=dtype, rngs=rngs)
        self.up_proj = Linear(embed, hidden, axes=("embed", "mlp"), dtype=dtype, rngs=rngs)
        self.down_proj = Linear(hidden, embed, axes=("mlp", "embed"), dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class GeluMLP(nnx.Module):
    """fc2(gelu(fc1(x))); exact (erf) GELU unless `approximate`."""

    def __init__(self, embed: int, hidden: int, *, use_bias: bool = True, approximate: bool = False,
                 dtype=jnp.float32, rngs: nnx.Rngs):
        self.approximate = approximate
        self.fc1 = Linear(embed, hidden, axes=("embed", "mlp"), use_bias=use_bias, dtype=dtype, rngs=rngs)
        self.fc2 = Linear(hidden, embed, axes=("mlp", "embed"), use_bias=use_bias, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(gelu(self.fc1(x), self.approximate))

"""ConvRNNF0Predictor (despite its name, convolutions only): mel [B, T, 80] -> f0 [B, T] in Hz, >= 0.

    5 x (weight-normed Conv1d k3 p1 -> ELU)  ->  Linear(cond -> 1)  ->  |.|

The reference keeps the convs in an nn.Sequential with the ELUs between them, so its conv i is
`condnet.{2 i}`; here `condnet` holds only the convs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from bajax.vocoder.layers import Conv1d, Linear


class ConvRNNF0Predictor(nnx.Module):
    def __init__(self, cfg, dtype, *, rngs: nnx.Rngs):
        c = int(cfg.f0_cond_channels)
        ins = [int(cfg.in_channels)] + [c] * (int(cfg.f0_layers) - 1)
        self.condnet = nnx.List([Conv1d(i, c, 3, padding=1, dtype=dtype, rngs=rngs) for i in ins])
        self.classifier = Linear(c, 1, dtype=jnp.float32, rngs=rngs)

    def __call__(self, mel: jax.Array) -> jax.Array:
        x = mel
        for conv in self.condnet:
            x = jax.nn.elu(conv(x))
        return jnp.abs(self.classifier(x.astype(jnp.float32))[..., 0])


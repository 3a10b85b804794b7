"""The Pre-Net (SPEC section 4): conditioning features -> mu, the 80-bin mel prior the estimator refines.

    cond [B, Tc, D] --nearest resample--> [B, T, D] -> Linear D->in_hidden, SiLU, Linear ->hidden
    -> N causal pre-norm layers (RMSNorm, attention with q/v/out bias and no k bias, GELU FFN)
    -> RMSNorm -> Linear hidden->80 (no bias) = mu [B, T, 80]

There is no positional encoding: causal attention alone tells a frame where it is (the reference registers a
sinusoid buffer but never adds it). Resampling is per utterance (`src = floor(i * Tc_b / T_b)`, PyTorch's
'nearest'), so an utterance's prior does not depend on how much padding its batch has.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from bajax import sharding
from bajax.flow.attention import self_attention
from bajax.layers.attention import Attention
from bajax.layers.linear import Linear
from bajax.layers.mlp import GeluMLP
from bajax.layers.norms import RMSNorm
from bajax.layers.stack import Stack

_ACT = ("batch", "length", "embed")


def length_mask(lengths: jax.Array, length: int) -> jax.Array:
    """bool [B, T]: frame t < lengths[b]."""
    return jnp.arange(length)[None, :] < lengths[:, None]


def nearest_resample(x: jax.Array, in_lengths: jax.Array, out_lengths: jax.Array, length: int) -> jax.Array:
    """[B, Tc, D] -> [B, length, D]: output frame i of utterance b copies input frame floor(i * in_b / out_b);
    frames at or past out_b are zero."""
    i = jnp.arange(length)[None, :]
    ratio = in_lengths.astype(jnp.float32) / jnp.maximum(out_lengths, 1).astype(jnp.float32)
    src = jnp.floor(i * ratio[:, None]).astype(jnp.int32)
    src = jnp.clip(src, 0, jnp.maximum(in_lengths[:, None] - 1, 0))
    y = jnp.take_along_axis(x, src[..., None], axis=1)
    return jnp.where(length_mask(out_lengths, length)[..., None], y, 0)


class PreNetLayer(nnx.Module):
    """x + attn(rms(x)); x + fc2(gelu(fc1(rms(x)))) (the reference's Whisper layer with RMSNorm)."""

    def __init__(self, hidden: int, heads: int, ffn: int, eps: float, chunk: int, dtype, *, rngs: nnx.Rngs):
        if hidden % heads:
            raise ValueError(f"model.prenet_hidden={hidden} must be divisible by model.prenet_heads={heads}")
        self.chunk = chunk  # compute block of the causal attention (the result does not depend on it)
        self.self_attn_layer_norm = RMSNorm(hidden, eps=eps)
        self.self_attn = Attention(hidden, heads, heads, hidden // heads, qkv_bias=True, out_bias=True,
                                   rope_theta=None, dtype=dtype, rngs=rngs)
        # Whisper convention: k has no bias (it would add the same constant to all of a query's scores).
        self.self_attn.k_proj.bias = None
        self.final_layer_norm = RMSNorm(hidden, eps=eps)
        self.mlp = GeluMLP(hidden, ffn, use_bias=True, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, valid: jax.Array) -> jax.Array:
        h = self_attention(self.self_attn, self.self_attn_layer_norm(x), valid, self.chunk, causal=True)
        x = sharding.constrain(x + h, _ACT)
        return sharding.constrain(x + self.mlp(self.final_layer_norm(x)), _ACT)


class PreNet(nnx.Module):
    def __init__(self, cfg, dtype, *, rngs: nnx.Rngs):
        h = cfg.prenet_hidden
        self.in_proj = Linear(cfg.cond_dim, cfg.prenet_in_hidden, axes=("embed", "mlp"), use_bias=True,
                              dtype=dtype, rngs=rngs)
        self.in_out = Linear(cfg.prenet_in_hidden, h, axes=("mlp", "embed"), use_bias=True, dtype=dtype,
                             rngs=rngs)
        self.layers = Stack(lambda r: PreNetLayer(h, cfg.prenet_heads, cfg.prenet_ffn, cfg.prenet_norm_eps,
                                                  int(cfg.chunk), dtype, rngs=r),
                            cfg.prenet_layers, rngs=rngs, scan_layers=cfg.scan_layers, remat_policy=cfg.remat)
        self.final_norm = RMSNorm(h, eps=cfg.prenet_norm_eps)
        self.out_proj = Linear(h, cfg.n_mels, axes=("embed", "mel"), dtype=dtype, rngs=rngs)

    def __call__(self, cond: jax.Array, cond_lengths: jax.Array, mel_lengths: jax.Array,
                 length: int) -> jax.Array:
        """cond [B, Tc, D], lengths [B] -> mu [B, length, n_mels] fp32, zero past mel_lengths."""
        x = nearest_resample(cond, cond_lengths, mel_lengths, length)
        x = self.in_out(jax.nn.silu(self.in_proj(x)))
        x = sharding.constrain(x, _ACT)
        valid = length_mask(mel_lengths, length)

        def run(layer, h, _):
            return layer(h, valid), None

        x, _ = self.layers.scan(run, x)
        x = jnp.where(valid[..., None], x, 0)            # the reference zeroes padding before the final norm
        mu = self.out_proj(self.final_norm(x)).astype(jnp.float32)
        return jnp.where(valid[..., None], mu, 0.0)

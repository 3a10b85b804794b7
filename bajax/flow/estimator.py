"""The CFM estimator v(x_t, mu, t): CosyVoice-2's causal 1-D U-Net (SPEC section 4), channels last.

    in = concat(x, mu) [B, T, 160]; t_emb = Linear->SiLU->Linear(sinusoid(1000 t))
    down:  ResNet1D 160->C + n transformer blocks (skip saved) -> causal Conv1d k3
    mid:   M x [ResNet1D C->C + n transformer blocks]
    up:    concat(x, skip) -> ResNet1D 2C->C + n transformer blocks -> causal Conv1d k3
    final: causal block (conv k3 -> LayerNorm -> Mish) -> 1x1 Conv1d -> 80, times the mask

With one channel entry the reference's down/up "samplers" are stride-1 causal convs, so every stage runs at
the mel frame rate and share one padding mask. Every convolution is causal (left-padded) and
attention is block-causal in chunks of `chunk` frames, so frames of chunk c never see later chunks: the
decoder can stream chunk by chunk. Inputs are multiplied by the mask before every convolution, as in the
reference, so padding never leaks into valid frames.

Mask-mixture training (`model.train_masks`, training only): the loss passes per-sample chunk sizes
`chunks` [B] (full, causal = 1, chunk, 2 x chunk, ...) and every transformer block then attends with that
row's mask (dense `masked_attention`), so one checkpoint serves offline (full) and streaming synthesis.
Without `chunks` (sampling, default training) the blocks use the static block-causal chunk loop.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from bajax import sharding
from bajax.flow.attention import self_attention
from bajax.layers.attention import Attention
from bajax.layers.conv import Conv1d
from bajax.layers.linear import Linear
from bajax.layers.mlp import GeluMLP
from bajax.layers.norms import LayerNorm
from bajax.layers.stack import Stack

_ACT = ("batch", "length", "embed")


def mish(x: jax.Array) -> jax.Array:
    return x * jnp.tanh(jax.nn.softplus(x))


def time_sinusoid(t: jax.Array, dim: int, scale: float) -> jax.Array:
    """[B] -> [B, dim] = [sin(scale t w_i) | cos(scale t w_i)], w_i = 10000^(-i / (dim/2 - 1)), fp32."""
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) / max(half - 1, 1) * jnp.arange(half, dtype=jnp.float32))
    args = scale * t.astype(jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class CausalBlock(nnx.Module):
    """mask -> causal Conv1d k -> LayerNorm -> Mish -> mask."""

    def __init__(self, c_in: int, c_out: int, kernel: int, eps: float, dtype, *, rngs: nnx.Rngs):
        self.conv = Conv1d(c_in, c_out, kernel, padding="causal", dtype=dtype, rngs=rngs)
        self.norm = LayerNorm(c_out, eps=eps)

    def __call__(self, x: jax.Array, m: jax.Array) -> jax.Array:
        return mish(self.norm(self.conv(x * m))) * m


class ResNet1D(nnx.Module):
    """block1(x) + Linear(Mish(t_emb)) -> block2 -> + 1x1 conv(x): the time step enters every ResNet."""

    def __init__(self, c_in: int, c_out: int, cfg, dtype, *, rngs: nnx.Rngs):
        self.block1 = CausalBlock(c_in, c_out, cfg.conv_kernel, cfg.norm_eps, dtype, rngs=rngs)
        self.time_proj = Linear(cfg.time_hidden, c_out, axes=("mlp", "conv_out"), use_bias=True, dtype=dtype,
                                rngs=rngs)
        self.block2 = CausalBlock(c_out, c_out, cfg.conv_kernel, cfg.norm_eps, dtype, rngs=rngs)
        self.res_conv = Conv1d(c_in, c_out, 1, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, m: jax.Array, t_emb: jax.Array) -> jax.Array:
        h = self.block1(x, m) + self.time_proj(mish(t_emb))[:, None, :]
        return self.block2(h, m) + self.res_conv(x * m)


class TransformerBlock(nnx.Module):
    """x + attn(LN(x)); x + FFN(LN(x)) (diffusers BasicTransformerBlock: q/k/v without bias, out with bias,
    exact-GELU FFN with biases)."""

    def __init__(self, cfg, dtype, *, rngs: nnx.Rngs):
        c = cfg.channels
        self.chunk = int(cfg.chunk)
        self.norm1 = LayerNorm(c, eps=cfg.norm_eps)
        self.attn = Attention(c, cfg.heads, cfg.heads, cfg.head_dim, qkv_bias=False, out_bias=True,
                              rope_theta=None, dtype=dtype, rngs=rngs)
        self.norm3 = LayerNorm(c, eps=cfg.norm_eps)
        self.ff = GeluMLP(c, cfg.ffn, use_bias=True, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, valid: jax.Array, chunks: jax.Array | None = None) -> jax.Array:
        x = sharding.constrain(x + self_attention(self.attn, self.norm1(x), valid, self.chunk, chunks=chunks),
                               _ACT)
        return sharding.constrain(x + self.ff(self.norm3(x)), _ACT)


class Stage(nnx.Module):
    """One U-Net block: a ResNet1D then `transformer_blocks` transformer blocks (stacked, scanned)."""

    def __init__(self, c_in: int, cfg, dtype, *, rngs: nnx.Rngs):
        self.resnet = ResNet1D(c_in, cfg.channels, cfg, dtype, rngs=rngs)
        self.blocks = Stack(lambda r: TransformerBlock(cfg, dtype, rngs=r), cfg.transformer_blocks, rngs=rngs,
                            scan_layers=cfg.scan_layers, remat_policy=cfg.remat)

    def __call__(self, x, m, valid, t_emb, chunks=None):
        x = sharding.constrain(self.resnet(x, m, t_emb), _ACT)
        x, _ = self.blocks.scan(lambda blk, h, _: (blk(h, valid, chunks), None), x)
        return x


class Estimator(nnx.Module):
    def __init__(self, cfg, dtype, *, rngs: nnx.Rngs):
        c, n_in = cfg.channels, 2 * cfg.n_mels
        self.dtype, self.time_scale, self.time_dim = dtype, cfg.time_scale, n_in
        self.time_in = Linear(n_in, cfg.time_hidden, axes=("embed", "mlp"), use_bias=True, dtype=dtype,
                              rngs=rngs)
        self.time_out = Linear(cfg.time_hidden, cfg.time_hidden, axes=("mlp", "embed"), use_bias=True,
                               dtype=dtype, rngs=rngs)
        self.down = Stage(n_in, cfg, dtype, rngs=rngs)
        self.down_conv = Conv1d(c, c, cfg.conv_kernel, padding="causal", dtype=dtype, rngs=rngs)
        self.mid = Stack(lambda r: Stage(c, cfg, dtype, rngs=r), cfg.mid_blocks, rngs=rngs,
                         scan_layers=cfg.scan_layers, remat_policy="none")
        self.up = Stage(2 * c, cfg, dtype, rngs=rngs)
        self.up_conv = Conv1d(c, c, cfg.conv_kernel, padding="causal", dtype=dtype, rngs=rngs)
        self.final_block = CausalBlock(c, c, cfg.conv_kernel, cfg.norm_eps, dtype, rngs=rngs)
        self.final_proj = Conv1d(c, cfg.n_mels, 1, dtype=dtype, rngs=rngs)

    def time_embedding(self, t: jax.Array) -> jax.Array:
        return self.time_out(jax.nn.silu(self.time_in(time_sinusoid(t, self.time_dim, self.time_scale))))

    def __call__(self, x: jax.Array, mu: jax.Array, t: jax.Array, valid: jax.Array,
                 chunks: jax.Array | None = None) -> jax.Array:
        """x, mu [B, T, 80]; t [B] in [0, 1]; valid bool [B, T] -> v [B, T, 80] fp32, zero on padding.

        `chunks` int32 [B] (training with `model.train_masks` only): each row's attention chunk size."""
        m = valid[..., None].astype(self.dtype)
        t_emb = self.time_embedding(t)
        h = jnp.concatenate([x, mu], axis=-1).astype(self.dtype)
        h = self.down(h, m, valid, t_emb, chunks)
        skip = h
        h = self.down_conv(h * m)
        h, _ = self.mid.scan(lambda stage, y, _: (stage(y, m, valid, t_emb, chunks), None), h)
        h = self.up(jnp.concatenate([h, skip], axis=-1), m, valid, t_emb, chunks)
        h = self.up_conv(h * m)
        h = self.final_block(h, m)
        return (self.final_proj(h * m) * m).astype(jnp.float32)

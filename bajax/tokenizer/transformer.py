"""Whisper-style pre-LayerNorm transformer layers, shared by the tokenizer's encoder and audio decoder.

    x = x + out_proj(attn(LN1(x)))     q / v / out projections with bias, k WITHOUT bias (Whisper)
    x = x + fc2(gelu(fc1(LN2(x))))     exact GELU, biases, LayerNorm eps 1e-5

No positional encoding inside (the models add a sinusoidal table before the first layer). The encoder
attends bidirectionally within an utterance, the decoder causally; padding frames attend only to padding
(segment 0), so real frames never see them and every softmax row is non-empty.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from bajax.layers.attention import Attention
from bajax.layers.masks import attention_mask
from bajax.layers.mlp import GeluMLP
from bajax.layers.norms import LayerNorm
from bajax.layers.stack import Stack
from bajax.sharding import constrain


class WhisperLayer(nnx.Module):
    def __init__(self, d: int, heads: int, ffn: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.self_attn_layer_norm = LayerNorm(d, eps=1e-5)
        self.self_attn = Attention(d, heads, heads, d // heads, qkv_bias=True, out_bias=True, rope_theta=None,
                                   dtype=dtype, rngs=rngs)
        # Whisper's k projection has no bias (a bias on k shifts every score of a query equally, so it
        # would be a no-op under softmax); layers.Attention has one switch for q/k/v, so drop k's here.
        self.self_attn.k_proj.bias = None
        self.final_layer_norm = LayerNorm(d, eps=1e-5)
        self.mlp = GeluMLP(d, ffn, use_bias=True, approximate=False, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        x = x + self.self_attn(self.self_attn_layer_norm(x), mask).astype(x.dtype)
        x = x + self.mlp(self.final_layer_norm(x)).astype(x.dtype)
        return constrain(x, ("batch", "length", "embed"))


class WhisperStack(nnx.Module):
    """`num` WhisperLayers with stacked parameters (scanned or looped, with remat) and a final LayerNorm."""

    def __init__(self, d: int, heads: int, ffn: int, num: int, *, causal: bool, dtype=jnp.float32,
                 scan_layers: bool = True, remat: str = "none", rngs: nnx.Rngs):
        self.causal = causal
        self.layers = Stack(lambda r: WhisperLayer(d, heads, ffn, dtype=dtype, rngs=r), num, rngs=rngs,
                            scan_layers=scan_layers, remat_policy=remat)
        self.layer_norm = LayerNorm(d, eps=1e-5)

    def __call__(self, x: jax.Array, valid: jax.Array) -> jax.Array:
        """x [B, T, d] (residual stream, fp32), valid bool [B, T] -> final-normed [B, T, d], 0 at padding."""
        seg = valid.astype(jnp.int32)
        mask = attention_mask(seg, seg, pattern="causal" if self.causal else "bidirectional")
        x, _ = self.layers.scan(lambda layer, h, _: (layer(h, mask), None), x)
        return jnp.where(valid[..., None], self.layer_norm(x), 0.0)

"""The independent audio head: a small depth transformer that predicts a frame's 8 RVQ codes in order.

For one frame with LLM hidden state h (final-normed) and codes c_0..c_7 the depth sequence is

    [h, E0(c0), E0(c0)+E1(c1), ..., sum_{j<7} Ej(cj)]          (8 positions, no positional embedding)

built from the LLM's SHARED audio embedding tables (passed in, not owned here). Position k predicts code
c_k, so causality over the 8 positions means code k sees only h and codes < k. Each layer is

    r = x + MHA(RMSNorm1(x));  r = RMSNorm2(r);  out = r + FFN_k(r)

with separate FFN weights per depth position k (stacked as [8, ...] params; the reference stores them
concatenated as linear1 [2h, 8h] / linear2 [h, 16h]). The reference FFN keeps biases it never uses, so FFN
biases are off unless `ffn_bias=True` (config `audio_head_ffn_bias`); an exporter can only map them if off.
After the layers: RMSNorm `headnorm`, then heads[k] = Linear(h, cb_k + 1) with bias; column cb_k is
end-of-audio, which only codebook 0 may emit (`mask_end_of_audio`).

All B*T frames run at once, depth-major: activations are [8, N, H] with N = B*T, so the per-position FFN
is one batched matmul whose batch axis (depth) leads on both operands (no transposes; about 2x faster on
CPU than frame-major), heads[k] reads the contiguous slice x[k], and the 8x8 causal attention is computed
pair by pair on depth slices (`bajax.lm.depth_attention`).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from bajax import sharding
from bajax.layers.attention import Attention
from bajax.layers.linear import Embedding, Linear, fan_in_init
from bajax.layers.mlp import gelu_exact
from bajax.layers.norms import RMSNorm
from bajax.layers.stack import Stack
from bajax.lm.depth_attention import depth_attention

DEPTH = 8
_DEPTH_ACT = ("depth", "batch", "embed")  # logical axes of the head's [8, N, H] activations


class DepthFFN(nnx.Module):
    """FFN_k(x) = W2_k gelu(W1_k x + b1_k) + b2_k with one weight set per depth position k (exact GELU)."""

    def __init__(self, hidden: int, depth: int, *, use_bias: bool, dtype, rngs: nnx.Rngs):
        self.dtype = dtype
        keys1, keys2 = jax.random.split(rngs.params(), depth), jax.random.split(rngs.params(), depth)
        w1 = jax.vmap(lambda k: fan_in_init(k, (hidden, 2 * hidden), hidden))(keys1)
        w2 = jax.vmap(lambda k: fan_in_init(k, (2 * hidden, hidden), 2 * hidden))(keys2)
        self.linear1 = nnx.Param(w1, logical_axes=("depth", "embed", "mlp"))
        self.linear2 = nnx.Param(w2, logical_axes=("depth", "mlp", "embed"))
        self.bias1 = (nnx.Param(jnp.zeros((depth, 2 * hidden), jnp.float32), logical_axes=("depth", "mlp"))
                      if use_bias else None)
        self.bias2 = (nnx.Param(jnp.zeros((depth, hidden), jnp.float32), logical_axes=("depth", "embed"))
                      if use_bias else None)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [n, N, H] (depth-major) with n <= depth positions; position k uses weight set k."""
        n = x.shape[0]
        x = x.astype(self.dtype)
        y = jnp.einsum("knh,khf->knf", x, self.linear1[:n].astype(self.dtype))
        if self.bias1 is not None:
            y = y + self.bias1[:n, None].astype(self.dtype)
        y = gelu_exact(y)
        y = jnp.einsum("knf,kfh->knh", y, self.linear2[:n].astype(self.dtype))
        if self.bias2 is not None:
            y = y + self.bias2[:n, None].astype(self.dtype)
        return y


class AudioHeadLayer(nnx.Module):
    def __init__(self, hidden: int, heads: int, *, eps: float, ffn_bias: bool, dtype, rngs: nnx.Rngs):
        if hidden % heads:
            raise ValueError(f"audio head: hidden={hidden} must be divisible by audio_head_heads={heads}")
        self.layernorm1 = RMSNorm(hidden, eps=eps)
        # torch nn.MultiheadAttention: in-projection with bias, out-projection with bias, no RoPE.
        self.self_attention = Attention(hidden, heads, heads, hidden // heads, qkv_bias=True, out_bias=True,
                                        rope_theta=None, dtype=dtype, rngs=rngs)
        self.layernorm2 = RMSNorm(hidden, eps=eps)
        self.ffn = DepthFFN(hidden, DEPTH, use_bias=ffn_bias, dtype=dtype, rngs=rngs)

    def attend(self, x: jax.Array) -> jax.Array:
        """Causal MHA over the depth axis of x [n, N, H], with the Attention module's projections."""
        attn = self.self_attention
        q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)  # [n, N, heads, d]
        q = q * jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
        return attn.o_proj(depth_attention(q, k, v))

    def __call__(self, x: jax.Array) -> jax.Array:
        x = sharding.constrain(x, _DEPTH_ACT)
        r = x + self.attend(self.layernorm1(x))
        r = self.layernorm2(r)
        return sharding.constrain(r + self.ffn(r), _DEPTH_ACT)


class AudioHead(nnx.Module):
    def __init__(self, hidden: int, heads: int, layers: int, codebook_sizes: Sequence[int], *, eps: float,
                 ffn_bias: bool = False, dtype=jnp.float32, scan_layers: bool = True,
                 remat_policy: str = "none", rngs: nnx.Rngs):
        if len(codebook_sizes) != DEPTH:
            raise ValueError(f"the audio head needs {DEPTH} codebook sizes, got {tuple(codebook_sizes)}")
        self.codebook_sizes = tuple(int(c) for c in codebook_sizes)
        self.dtype = dtype
        self.transformer_layers = Stack(
            lambda r: AudioHeadLayer(hidden, heads, eps=eps, ffn_bias=ffn_bias, dtype=dtype, rngs=r),
            layers, rngs=rngs, scan_layers=scan_layers, remat_policy=remat_policy)
        self.headnorm = RMSNorm(hidden, eps=eps)
        self.heads = nnx.List([Linear(hidden, c + 1, axes=("embed", "codebook"), use_bias=True, dtype=dtype,
                                      rngs=rngs) for c in self.codebook_sizes])

    def depth_inputs(self, h: jax.Array, codes: jax.Array, tables: Sequence[Embedding],
                     num_positions: int = DEPTH) -> jax.Array:
        """[n, N, H] (depth-major): h, then running sums of the code embeddings E_j(c_j) for j < k."""
        x = [h.astype(self.dtype)]
        total = None
        for j in range(num_positions - 1):
            e = tables[j](codes[:, j]).astype(self.dtype)
            total = e if total is None else total + e
            x.append(total)
        # The N = B*T frames are the batch: without this constraint XLA keeps the depth-major activations of
        # the GLOBAL batch on every device (1.5 TB per chip for the 7B recipe, see launch/README.md).
        return sharding.constrain(jnp.stack(x, axis=0), _DEPTH_ACT)

    def __call__(self, h: jax.Array, codes: jax.Array, tables: Sequence[Embedding],
                 num_positions: int = DEPTH) -> list[jax.Array]:
        """Logits of the first `num_positions` codebooks: a list of [N, cb_k + 1].

        h [N, H] final-normed LLM states; codes [N, 8] teacher-forced codes (only codes < num_positions - 1
        are read, so sampling can pass zeros for codes not drawn yet).
        """
        x = self.depth_inputs(h, codes, tables, num_positions)
        x, _ = self.transformer_layers.scan(lambda layer, c, _: (layer(c), None), x)
        x = self.headnorm(x)
        return [self.heads[k](x[k]) for k in range(num_positions)]


def mask_end_of_audio(logits: Sequence[jax.Array]) -> list[jax.Array]:
    """Logits with end-of-audio (the last column) disabled for codebooks 1..7: only codebook 0 may stop."""
    out = [logits[0]]
    for lg in logits[1:]:
        out.append(lg.at[..., -1].set(jnp.finfo(lg.dtype).min))
    return out

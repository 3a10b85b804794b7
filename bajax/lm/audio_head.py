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

All N frames it is given run at once (in training the loss gives it only the frames that carry audio
targets, gathered per batch shard, see bajax/lm/losses.py; N = B*T when it runs everywhere), as a list of
8 depth slices [N, H]: the shared projections and
FFN_k apply to the slices through `kernels.depth_map` (one matmul over the stacked slices; on CPU a matmul
per slice when the slices are long), heads[k] reads slice k, and `kernels.depth_attention` is the 8x8
causal attention over the slices.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from bajax import kernels, sharding
from bajax.layers.attention import Attention
from bajax.layers.linear import Embedding, Linear, fan_in_init
from bajax.layers.norms import RMSNorm
from bajax.layers.stack import Stack

DEPTH = 8
_SLICE_ACT = ("batch", "embed")  # logical axes of one depth slice [N, H]


def project(linear: Linear, xs: list[jax.Array]) -> list[jax.Array]:
    """`linear` applied to every depth slice (the same weights at every depth position)."""
    return kernels.depth_map(lambda x, _: linear(x), xs)


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

    def __call__(self, xs: list[jax.Array]) -> list[jax.Array]:
        """FFN_k of every depth slice xs[k] [N, H]."""
        return kernels.depth_map(lambda x, k: self._apply(x.astype(self.dtype), k), xs)

    def _apply(self, x: jax.Array, k: int | slice) -> jax.Array:
        """x [N, H] with an int k, or [n, N, H] with the slice of depth positions it holds."""
        batched = "knh,khf->knf" if x.ndim == 3 else "nh,hf->nf"
        y = jnp.einsum(batched, x, self.linear1[k].astype(self.dtype))
        if self.bias1 is not None:
            y = y + self._bias(self.bias1, k, x.ndim)
        y = jnp.einsum(batched, kernels.gelu(y), self.linear2[k].astype(self.dtype))
        if self.bias2 is not None:
            y = y + self._bias(self.bias2, k, x.ndim)
        return y

    def _bias(self, bias, k, ndim: int) -> jax.Array:
        b = bias[k].astype(self.dtype)
        return b[:, None] if ndim == 3 else b


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

    def attend(self, xs: list[jax.Array]) -> list[jax.Array]:
        """Causal MHA over the depth slices xs (each [N, H]), with the Attention module's projections."""
        attn = self.self_attention
        q, k, v = (project(p, xs) for p in (attn.q_proj, attn.k_proj, attn.v_proj))  # each [N, heads, d]
        out = kernels.depth_attention(q, k, v, q[0].shape[-1] ** -0.5)
        return project(attn.o_proj, out)

    def __call__(self, xs: list[jax.Array]) -> list[jax.Array]:
        xs = [sharding.constrain(x, _SLICE_ACT) for x in xs]
        attended = self.attend([self.layernorm1(x) for x in xs])
        rs = [self.layernorm2(x + a) for x, a in zip(xs, attended)]
        return [sharding.constrain(r + f, _SLICE_ACT) for r, f in zip(rs, self.ffn(rs))]


# The reference builds the head's three RMSNorms with its RMSNorm default eps (audio_modeling_omni.RMSNorm,
# eps=1e-6) and never passes config.rms_norm_eps, so the head's eps is 1e-6 whatever the backbone's is.
HEAD_NORM_EPS = 1e-6


class AudioHead(nnx.Module):
    def __init__(self, hidden: int, heads: int, layers: int, codebook_sizes: Sequence[int], *,
                 eps: float = HEAD_NORM_EPS,
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
                     num_positions: int = DEPTH) -> list[jax.Array]:
        """The depth slices, each [N, H]: h, then running sums of the code embeddings E_j(c_j) for j < k."""
        x = [h.astype(self.dtype)]
        for j in range(num_positions - 1):
            e = tables[j](codes[:, j]).astype(self.dtype)
            x.append(e if j == 0 else x[-1] + e)
        # The N = B*T frames are the batch: without this constraint XLA keeps the depth slices of the GLOBAL
        # batch on every device (1.5 TB per chip for the 7B recipe, see launch/README.md).
        return [sharding.constrain(t, _SLICE_ACT) for t in x]

    def __call__(self, h: jax.Array, codes: jax.Array, tables: Sequence[Embedding],
                 num_positions: int = DEPTH) -> list[jax.Array]:
        """Logits of the first `num_positions` codebooks: a list of [N, cb_k + 1].

        h [N, H] final-normed LLM states; codes [N, 8] teacher-forced codes (only codes < num_positions - 1
        are read, so sampling can pass zeros for codes not drawn yet).
        """
        xs = self.depth_inputs(h, codes, tables, num_positions)
        xs, _ = self.transformer_layers.scan(lambda layer, c, _: (layer(c), None), xs)
        return [self.heads[k](self.headnorm(x)) for k, x in enumerate(xs)]


def mask_end_of_audio(logits: Sequence[jax.Array]) -> list[jax.Array]:
    """Logits with end-of-audio (the last column) disabled for codebooks 1..7: only codebook 0 may stop."""
    out = [logits[0]]
    for lg in logits[1:]:
        out.append(lg.at[..., -1].set(jnp.finfo(lg.dtype).min))
    return out

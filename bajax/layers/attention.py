"""Multi-head attention with grouped-query heads, optional RoPE, optional q/k/v and output biases, and
an optional KV cache for incremental decoding.

Grouped-query attention never repeats K/V: the G = heads / kv_heads query heads of a KV head are folded
into the query length and contracted against that KV head's keys in one matmul. Scores and softmax are
fp32 whatever the compute dtype (`preferred_element_type`); probabilities are cast back to the compute
dtype for the value matmul.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from bajax.kernels import attention as attention_kernels
from bajax.layers.kv_cache import write_kv
from bajax.layers.linear import Linear
from bajax.layers.rope import apply_rope

# Finite "minus infinity": a fully masked row (which the segment rules avoid anyway) gives a uniform
# distribution instead of NaN.
_NEG = -1e30


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None,
                          causal_blocks: int = 1) -> jax.Array:
    """q [B, T, H, D], k/v [B, S, KV, D], mask bool [B, T, S] (True = attend) -> [B, T, H, D].

    `causal_blocks` > 1 declares the mask causal over the same T positions (no query attends a later key)
    and splits the queries into that many blocks: block i reads only the keys of blocks <= i, skipping
    the all-masked upper triangle (with 4 blocks, 3/8 of the score, softmax and value work). The result
    is the same; a T it does not divide runs as one block.
    """
    t, s = q.shape[1], k.shape[1]
    if causal_blocks <= 1 or t != s or t % causal_blocks:
        return _attend(q, k, v, mask)
    bt = t // causal_blocks
    blocks = [_attend(q[:, i * bt:(i + 1) * bt], k[:, :(i + 1) * bt], v[:, :(i + 1) * bt],
                      None if mask is None else mask[:, i * bt:(i + 1) * bt, :(i + 1) * bt])
              for i in range(causal_blocks)]
    return jnp.concatenate(blocks, axis=1)


def _attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Softmax attention of all queries over all keys.

    The G query heads sharing a KV head are folded into the query length ([B, KV, T*G, D]), so each KV
    head does one large matmul with K/V in a leading-batch layout (XLA:CPU runs that layout well, forward
    and backward, where a 5-D einsum with non-leading batch dims gets extra transposes).
    """
    b, t, h, d = q.shape
    s, kv = k.shape[1], k.shape[2]
    if h % kv:
        raise ValueError(f"query heads {h} must be a multiple of kv heads {kv}")
    g = h // kv
    q = (q * jnp.asarray(d ** -0.5, q.dtype)).reshape(b, t, kv, g, d).transpose(0, 2, 1, 3, 4)
    q = q.reshape(b, kv, t * g, d)
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, KV, S, D]
    scores = jnp.einsum("bkqd,bksd->bkqs", q, k, preferred_element_type=jnp.float32).reshape(b, kv, t, g, s)
    if mask is not None:
        scores = jnp.where(mask[:, None, :, None, :], scores, _NEG)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype).reshape(b, kv, t * g, s)
    out = jnp.einsum("bkqs,bksd->bkqd", probs, v).reshape(b, kv, t, g, d)
    return out.transpose(0, 2, 1, 3, 4).reshape(b, t, h, d)


class Attention(nnx.Module):
    """Self-attention; `rope_theta=None` disables RoPE (e.g. the audio head's depth transformer)."""

    def __init__(self, embed: int, heads: int, kv_heads: int, head_dim: int, *, qkv_bias: bool = False,
                 out_bias: bool = False, rope_theta: float | None = 10000.0, causal_blocks: int = 1,
                 dtype=jnp.float32, rngs: nnx.Rngs):
        """`causal_blocks` > 1: the masks this layer sees without a cache are causal, so query blocks skip
        later keys (see `dot_product_attention`)."""
        if heads % kv_heads:
            raise ValueError(f"attention: heads={heads} must be a multiple of kv_heads={kv_heads}")
        self.rope_theta = rope_theta
        self.causal_blocks = int(causal_blocks)
        self.q_proj = Linear(embed, (heads, head_dim), axes=("embed", "heads", "head_dim"),
                             use_bias=qkv_bias, dtype=dtype, rngs=rngs)
        self.k_proj = Linear(embed, (kv_heads, head_dim), axes=("embed", "kv_heads", "head_dim"),
                             use_bias=qkv_bias, dtype=dtype, rngs=rngs)
        self.v_proj = Linear(embed, (kv_heads, head_dim), axes=("embed", "kv_heads", "head_dim"),
                             use_bias=qkv_bias, dtype=dtype, rngs=rngs)
        self.o_proj = Linear((heads, head_dim), embed, axes=("heads", "head_dim", "embed"),
                             use_bias=out_bias, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array | None, positions: jax.Array | None = None,
                 cache_kv: tuple[jax.Array, jax.Array] | None = None, cache_index: jax.Array | None = None,
                 *, segment_ids: jax.Array | None = None, implementation: str = "xla"):
        """x [B, T, E]; mask bool [B, T, S]. Without a cache returns [B, T, E]; with `cache_kv` (this
        layer's k/v caches [B, S, KV, D]) writes the new keys at `cache_index`, attends over the whole
        cache and returns (out, (k_cache, v_cache)).

        Causal packed self-attention without a dense mask: mask=None, `segment_ids` [B, T] and an
        `implementation` of `bajax.kernels.attention` other than "xla" (which builds the mask itself)."""
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.rope_theta is not None:
            q = apply_rope(q, positions, self.rope_theta)
            k = apply_rope(k, positions, self.rope_theta)
        if cache_kv is None and segment_ids is not None:
            return self.o_proj(attention_kernels.attention(q, k, v, segment_ids, implementation=implementation))
        if cache_kv is None:
            return self.o_proj(dot_product_attention(q, k, v, mask, self.causal_blocks))
        k_all, v_all = write_kv(cache_kv[0], cache_kv[1], k, v, cache_index)
        out = dot_product_attention(q, k_all.astype(q.dtype), v_all.astype(q.dtype), mask)
        return self.o_proj(out), (k_all, v_all)

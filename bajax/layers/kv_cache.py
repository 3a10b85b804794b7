"""A fixed-size key/value cache for incremental decoding (static shapes, one write index).

The cache is a plain pytree (NamedTuple), passed in and returned by attention, so it flows through
`jax.lax.scan` over stacked layers and through `jax.jit` without mutable state. Keys are stored after
RoPE, so a step only rotates its own new keys.

`segment_ids` [B, S] marks which slots hold which sequence: -1 for unwritten slots (never attended),
0 for padding (e.g. left-padded prompts), >= 1 for real tokens. Slot order is the causal order.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class KVCache(NamedTuple):
    k: jax.Array            # [..., B, S, kv_heads, head_dim] (leading 'layers' dim when stacked)
    v: jax.Array
    segment_ids: jax.Array  # [B, S] int32
    index: jax.Array        # scalar int32: next slot to write

    @property
    def max_len(self) -> int:
        return self.segment_ids.shape[-1]


def init_cache(batch: int, max_len: int, kv_heads: int, head_dim: int, *, layers: int | None = None,
               dtype=jnp.float32) -> KVCache:
    """An empty cache; `layers` adds the leading stacked-layer dimension to k and v."""
    lead = () if layers is None else (layers,)
    shape = lead + (batch, max_len, kv_heads, head_dim)
    return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype),
                   jnp.full((batch, max_len), -1, jnp.int32), jnp.zeros((), jnp.int32))


def write_segments(cache: KVCache, segment_ids: jax.Array) -> KVCache:
    """Records the segment ids of T new tokens at the write index (done once, before the layers)."""
    seg = jax.lax.dynamic_update_slice(cache.segment_ids, segment_ids.astype(jnp.int32), (0, cache.index))
    return cache._replace(segment_ids=seg)


def write_kv(k_cache: jax.Array, v_cache: jax.Array, k: jax.Array, v: jax.Array,
             index: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One layer's cache [B, S, KV, D] with new k, v [B, T, KV, D] written at slot `index`."""
    start = (0, index, 0, 0)
    return (jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), start),
            jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), start))

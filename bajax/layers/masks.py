"""Boolean attention masks: causal, bidirectional and block-causal, combined with packed segments.

A mask is built ONCE per forward pass as bool [B, Tq, Tk] and shared by every layer (it is a constant
of the layer scan), so no [B, H, T, T] float bias is ever materialised. `True` means "may attend".

Segments: a query attends only to keys with the same segment id. Padding has segment 0 and therefore
attends only to padding, which keeps every softmax row non-empty (no NaN) while real tokens never see
padding. Unwritten KV-cache slots carry segment -1, which matches nothing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

PATTERNS = ("causal", "bidirectional", "block_causal")


def attention_mask(q_segment: jax.Array, kv_segment: jax.Array, q_index: jax.Array | None = None,
                   kv_index: jax.Array | None = None, *, pattern: str = "causal",
                   chunk: int | None = None) -> jax.Array:
    """bool [B, Tq, Tk] from segment ids [B, Tq] / [B, Tk] and order indices ([B, T] or [T]).

    causal: key index <= query index. block_causal: key chunk <= query chunk (index // chunk), i.e. full
    attention inside a chunk and causal across chunks. bidirectional: every key of the same segment.
    Indices are sequence slots (or per-segment positions); they default to arange.
    """
    if pattern not in PATTERNS:
        raise ValueError(f"attention mask pattern must be one of {PATTERNS}, got {pattern!r}")
    mask = q_segment[:, :, None] == kv_segment[:, None, :]
    if pattern == "bidirectional":
        return mask
    if q_index is None:
        q_index = jnp.arange(q_segment.shape[1])
    if kv_index is None:
        kv_index = jnp.arange(kv_segment.shape[1])
    q_index = jnp.broadcast_to(q_index, q_segment.shape)
    kv_index = jnp.broadcast_to(kv_index, kv_segment.shape)
    if pattern == "block_causal":
        if not chunk or chunk < 1:
            raise ValueError(f"block_causal attention needs a chunk size >= 1, got {chunk!r}")
        q_index, kv_index = q_index // chunk, kv_index // chunk
    return mask & (kv_index[:, None, :] <= q_index[:, :, None])

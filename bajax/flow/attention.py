"""Chunked attention core for the flow decoder: block-causal (estimator) and causal (Pre-Net).

`bajax.layers.masks.attention_mask(pattern='block_causal')` + `dot_product_attention` computes all T x T scores
and masks the future chunks away. Here query chunk c is contracted only against keys [0, (c + 1) * chunk),
the keys it may see: the same result for 60% of the score FLOPs at 5 chunks, and no [B, H, T, T] score or
mask tensors. The loop over chunks is static (unrolled at trace time). Scores and softmax are fp32; masked
keys get a finite -1e30, so an all-padding row (an empty batch row) gives a uniform distribution, never NaN.
Padded queries may attend to valid keys (as in the reference, whose mask only hides padded keys); their
outputs are masked downstream and never reach valid frames.

`masked_attention` is the training-only alternative for `model.train_masks` (a CosyVoice-2 style mixture of
attention masks, see bajax/flow/config.py): each batch row has its own chunk size, a traced [B] array, so
the static chunk loop cannot serve it; it computes the dense [B, H, T, T] fp32 scores and masks them per row.
Sampling and default training never use it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_NEG = -1e30


def chunked_attention(q: jax.Array, k: jax.Array, v: jax.Array, key_valid: jax.Array, chunk: int, *,
                      causal: bool = False) -> jax.Array:
    """q, k, v [B, T, H, D]; key_valid bool [B, T] -> [B, T, H, D].

    Query t attends to keys s with s // chunk <= t // chunk (block-causal); `causal=True` further requires
    s <= t (plain causal attention, computed chunk by chunk)."""
    b, t, h, d = q.shape
    if chunk < 1:
        raise ValueError(f"attention chunk must be >= 1, got {chunk}")
    qh = jnp.swapaxes(q * jnp.asarray(d ** -0.5, q.dtype), 1, 2)        # [B, H, T, D]
    kh, vh = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)
    key_bias = jnp.where(key_valid, 0.0, _NEG).astype(jnp.float32)[:, None, None, :]   # [B, 1, 1, T]
    outs = []
    for start in range(0, t, chunk):
        stop = min(t, start + chunk)
        scores = jnp.einsum("bhqd,bhkd->bhqk", qh[:, :, start:stop], kh[:, :, :stop],
                            preferred_element_type=jnp.float32) + key_bias[..., :stop]
        if causal:
            future = jnp.arange(stop)[None, :] > jnp.arange(start, stop)[:, None]
            scores = jnp.where(future, _NEG, scores)
        probs = jax.nn.softmax(scores, axis=-1).astype(vh.dtype)
        outs.append(jnp.einsum("bhqk,bhkd->bhqd", probs, vh[:, :, :stop]))
    return jnp.swapaxes(jnp.concatenate(outs, axis=2), 1, 2)


# A per-row chunk size at least this large is full (bidirectional) attention over the valid frames.
FULL_CHUNK = 2 ** 30


def masked_attention(q: jax.Array, k: jax.Array, v: jax.Array, key_valid: jax.Array,
                     chunks: jax.Array) -> jax.Array:
    """q, k, v [B, T, H, D]; key_valid bool [B, T]; chunks int [B] -> [B, T, H, D].

    Row b's query t attends to valid keys s with s // chunks[b] <= t // chunks[b]: chunks[b] = `chunk` is
    `chunked_attention(..., chunk)`, 1 is causal attention and >= T (e.g. FULL_CHUNK) full attention."""
    b, t, h, d = q.shape
    qh = jnp.swapaxes(q * jnp.asarray(d ** -0.5, q.dtype), 1, 2)        # [B, H, T, D]
    kh, vh = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)
    c = jnp.maximum(jnp.asarray(chunks, jnp.int32), 1)[:, None, None]    # [B, 1, 1]
    pos = jnp.arange(t, dtype=jnp.int32)
    allowed = (pos[None, None, :] // c <= pos[None, :, None] // c) & key_valid[:, None, :]   # [B, Tq, Tk]
    scores = jnp.einsum("bhqd,bhkd->bhqk", qh, kh, preferred_element_type=jnp.float32)
    scores = jnp.where(allowed[:, None], scores, _NEG)
    probs = jax.nn.softmax(scores, axis=-1).astype(vh.dtype)
    return jnp.swapaxes(jnp.einsum("bhqk,bhkd->bhqd", probs, vh), 1, 2)


def self_attention(attn, x: jax.Array, key_valid: jax.Array, chunk: int, *, causal: bool = False,
                   chunks: jax.Array | None = None):
    """A `bajax.layers.Attention` module (its projections, no RoPE) applied with the chunked core, or, given
    per-row chunk sizes `chunks` [B] (mask-mixture training), with the dense `masked_attention`."""
    q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
    if chunks is None:
        out = chunked_attention(q, k, v, key_valid, chunk, causal=causal)
    else:
        out = masked_attention(q, k, v, key_valid, chunks)
    return attn.o_proj(out)

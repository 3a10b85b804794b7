"""Decoding core of the audio LLM (no CLI): KV-cached incremental forward and token / frame sampling.

`prefill` runs a prompt through the decoder into a fresh or existing cache; `step` appends one token (a
text id, or `audio_pad` with the frame's 8 codes) and returns its final-normed hidden state. Both are the
same computation as `AudioLLM.hidden` on the full sequence (tested to 1e-5 in fp32).

A frame is sampled by 8 sequential audio-head evaluations: code k is drawn from head k given h and the
codes < k already drawn (the head is causal, so running only the first k + 1 depth positions is exact).
End-of-audio (column cb_k) is masked for codebooks 1..7; the caller stops an audio segment when code 0
equals cb_0. Sampling follows the reference demo: repetition penalty, temperature, top-k, top-p; greedy
(argmax after the penalty) when temperature is 0.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from bajax.layers.kv_cache import KVCache
from bajax.lm.audio_head import DEPTH, mask_end_of_audio


@dataclasses.dataclass(frozen=True)
class Sampling:
    temperature: float = 0.5
    top_k: int = 5          # 0 = off
    top_p: float = 0.85     # 1.0 = off
    repetition_penalty: float = 1.3  # 1.0 = off


GREEDY = Sampling(temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0)


def prefill(model, tokens: jax.Array, audio_codes: jax.Array, positions: jax.Array, segment_ids: jax.Array,
            cache: KVCache) -> tuple[jax.Array, KVCache]:
    """Hidden states [B, T, H] of T new tokens appended to `cache`, and the updated cache."""
    batch = {"tokens": tokens, "audio_codes": audio_codes, "positions": positions, "segment_ids": segment_ids}
    return model.hidden(batch, cache)


def step(model, token: jax.Array, codes: jax.Array, position: jax.Array, segment_id: jax.Array,
         cache: KVCache) -> tuple[jax.Array, KVCache]:
    """One token per row: token [B], codes [B, 8], position [B], segment_id [B] -> (h [B, H], cache)."""
    h, cache = prefill(model, token[:, None], codes[:, None], position[:, None], segment_id[:, None], cache)
    return h[:, 0], cache


def apply_repetition_penalty(logits: jax.Array, history: jax.Array | None, penalty: float) -> jax.Array:
    """Divides positive / multiplies negative logits [B, V] of ids seen in history [B, L] (-1 = none)."""
    if history is None or penalty == 1.0:
        return logits
    b, v = logits.shape
    ids = jnp.where(history < 0, v, history)  # out of range -> dropped by the scatter
    seen = jnp.zeros((b, v), bool).at[jnp.arange(b)[:, None], ids].set(True, mode="drop")
    penalised = jnp.where(logits > 0, logits / penalty, logits * penalty)
    return jnp.where(seen, penalised, logits)


def sample_logits(logits: jax.Array, key: jax.Array, sampling: Sampling,
                  history: jax.Array | None = None) -> jax.Array:
    """Ids [B] drawn from logits [B, V] (fp32 arithmetic; masked entries may hold finfo.min)."""
    logits = apply_repetition_penalty(logits.astype(jnp.float32), history, sampling.repetition_penalty)
    if sampling.temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    neg = jnp.finfo(jnp.float32).min
    logits = logits / sampling.temperature
    if 0 < sampling.top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, sampling.top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, neg, logits)
    if sampling.top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        # the smallest logit still inside the nucleus; the top token is always kept
        keep = (mass_before < sampling.top_p).at[:, 0].set(True)
        cutoff = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < cutoff, neg, logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def sample_frame(model, h: jax.Array, key: jax.Array, sampling: Sampling,
                 history: jax.Array | None = None) -> jax.Array:
    """Codes [B, 8] of one frame from hidden states h [B, H]; history [B, L, 8] of earlier codes or None.

    Code 0 == codebook_sizes[0] means end-of-audio; the other codes are then meaningless.
    """
    codes = jnp.zeros((h.shape[0], DEPTH), jnp.int32)
    keys = jax.random.split(key, DEPTH)
    for k in range(DEPTH):
        logits = model.audio_head(h, codes, model.audio_embed, num_positions=k + 1)
        logits_k = mask_end_of_audio(logits)[k]
        hist_k = None if history is None else history[..., k]
        codes = codes.at[:, k].set(sample_logits(logits_k, keys[k], sampling, hist_k))
    return codes

"""The audio LLM (SPEC section 3): a Qwen2-shaped decoder over text tokens and audio frames, plus the
independent audio head.

Input embedding: text positions use the text table; positions whose token is `audio_pad` use instead the
SUM of their 8 code embeddings (`audio_embed[k]` has cb_k + 1 rows; row cb_k is end-of-audio). The decoder
is pre-norm (RMSNorm) with GQA attention (q/k/v bias, o_proj without bias, RoPE rotate-half) and SwiGLU,
then a final RMSNorm. `hidden(batch)` returns the final-normed states that both `text_logits` (untied
lm_head unless `tie_embeddings`) and `audio_logits` (the audio head) read.

Parameter paths (for freezing patterns and interop): embed_tokens, audio_embed.{k}, layers.layers.* (one
stacked decoder layer with a leading 'layers' axis), norm, lm_head, audio_head.*
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from bajax import sharding
from bajax.kernels import attention as attention_kernels
from bajax.layers.attention import Attention
from bajax.layers.kv_cache import KVCache, init_cache, write_segments
from bajax.layers.linear import Embedding, Linear
from bajax.layers.masks import attention_mask
from bajax.layers.mlp import SwiGLU
from bajax.layers.norms import RMSNorm
from bajax.layers.stack import Stack
from bajax.lm import special_tokens
from bajax.lm.audio_head import DEPTH, AudioHead
from bajax.lm.config import audio_head_heads

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_ACT = ("batch", "length", "embed")


def compute_dtype(name: str):
    if name not in _DTYPES:
        raise ValueError(f"model.dtype must be one of {sorted(_DTYPES)}, got {name!r}")
    return _DTYPES[name]


class DecoderLayer(nnx.Module):
    """x + attn(norm(x)), then + mlp(norm(.)) (Qwen2 layer)."""

    def __init__(self, cfg, dtype, *, rngs: nnx.Rngs):
        self.input_layernorm = RMSNorm(cfg.hidden, eps=cfg.norm_eps)
        self.self_attn = Attention(cfg.hidden, cfg.heads, cfg.kv_heads, cfg.head_dim, qkv_bias=True,
                                   out_bias=False, rope_theta=cfg.rope_theta,
                                   causal_blocks=cfg.attention_causal_blocks, dtype=dtype, rngs=rngs)
        self.post_attention_layernorm = RMSNorm(cfg.hidden, eps=cfg.norm_eps)
        self.mlp = SwiGLU(cfg.hidden, cfg.mlp, dtype=dtype, rngs=rngs)

    def __call__(self, x, mask, positions, cache_kv=None, cache_index=None, *, segment_ids=None,
                 implementation="xla"):
        attn = self.self_attn(self.input_layernorm(x), mask, positions, cache_kv, cache_index,
                              segment_ids=segment_ids, implementation=implementation)
        attn, new_kv = attn if cache_kv is not None else (attn, None)
        x = sharding.constrain(x + attn, _ACT)
        x = sharding.constrain(x + self.mlp(self.post_attention_layernorm(x)), _ACT)
        return x, new_kv


def head_logits(head, h: jax.Array, dtype, *, fp32: bool = False) -> jax.Array:
    """Logits of a text head (`Linear` [D, V], or a tied `Embedding` [V, D]); see `AudioLLM.text_logits`."""
    tied = isinstance(head, Embedding)
    if fp32 and dtype != jnp.float32 and (tied or head.lora_a is None):
        if tied:
            return jnp.einsum("...d,vd->...v", h.astype(dtype), head.embedding[...].astype(dtype),
                              preferred_element_type=jnp.float32)
        return jnp.einsum("...d,dv->...v", h.astype(dtype), head.kernel[...].astype(dtype),
                          preferred_element_type=jnp.float32)
    logits = head.attend(h) if tied else head(h)
    return logits.astype(jnp.float32) if fp32 else logits


class AudioLLM(nnx.Module):
    def __init__(self, cfg, *, rngs: nnx.Rngs):
        if len(cfg.codebook_sizes) != DEPTH:
            raise ValueError(f"model.codebook_sizes needs {DEPTH} entries, got {tuple(cfg.codebook_sizes)}")
        self.dtype = compute_dtype(cfg.dtype)
        self.attention = str(cfg.get("attention", "auto"))
        attention_kernels.resolve(self.attention, platform="cpu")  # validates the name
        self.audio_pad_id = special_tokens.ids_of(cfg)["audio_pad"]
        if self.audio_pad_id >= cfg.vocab_size:
            raise ValueError(f"model.vocab_size={cfg.vocab_size} is too small for vocab={cfg.vocab!r} "
                             f"(audio_pad id {self.audio_pad_id})")
        self.codebook_sizes = tuple(int(c) for c in cfg.codebook_sizes)
        self.kv_heads, self.head_dim, self.num_layers = cfg.kv_heads, cfg.head_dim, cfg.layers
        dtype = self.dtype
        self.embed_tokens = Embedding(cfg.vocab_size, cfg.hidden, axes=("vocab", "embed"), dtype=dtype,
                                      rngs=rngs)
        self.audio_embed = nnx.List([Embedding(c + 1, cfg.hidden, axes=("codebook", "embed"), dtype=dtype,
                                               rngs=rngs) for c in self.codebook_sizes])
        self.layers = Stack(lambda r: DecoderLayer(cfg, dtype, rngs=r), cfg.layers, rngs=rngs,
                            scan_layers=cfg.scan_layers, remat_policy=cfg.remat)
        self.norm = RMSNorm(cfg.hidden, eps=cfg.norm_eps)
        self.lm_head = (None if cfg.tie_embeddings else
                        Linear(cfg.hidden, cfg.vocab_size, axes=("embed", "vocab"), dtype=dtype, rngs=rngs))
        self.audio_head = AudioHead(
            cfg.hidden, audio_head_heads(cfg), cfg.audio_head_layers, self.codebook_sizes,   # eps: the reference's
            ffn_bias=bool(cfg.get("audio_head_ffn_bias", False)), dtype=dtype, scan_layers=cfg.scan_layers,
            remat_policy=cfg.remat, rngs=rngs)

    def embed(self, tokens: jax.Array, audio_codes: jax.Array) -> jax.Array:
        """[B, T, H]: text embedding, or the sum of the 8 code embeddings where tokens == audio_pad."""
        text = self.embed_tokens(tokens)
        audio = sum(self.audio_embed[k](audio_codes[..., k]) for k in range(DEPTH))
        x = jnp.where((tokens == self.audio_pad_id)[..., None], audio, text)
        return sharding.constrain(x, _ACT)

    def hidden(self, batch: dict, cache: KVCache | None = None):
        """Final-normed hidden states [B, T, H] from tokens / audio_codes / positions / segment_ids.

        With a `cache` (see `init_cache`) the T tokens are appended at its write index, attend to everything
        cached before them, and (hidden, updated cache) is returned.
        """
        tokens, positions, segments = batch["tokens"], batch["positions"], batch["segment_ids"]
        x = self.embed(tokens, batch["audio_codes"])
        if cache is None:
            return self.hidden_from_embeddings(x, positions, segments)
        t = tokens.shape[1]
        cache = write_segments(cache, segments)
        mask = attention_mask(segments, cache.segment_ids, cache.index + jnp.arange(t),
                              jnp.arange(cache.max_len))

        def run_cached(layer, h, kv):
            return layer(h, mask, positions, kv, cache.index)

        x, (k, v) = self.layers.scan(run_cached, x, (cache.k, cache.v))
        return self.norm(x), cache._replace(k=k, v=v, index=cache.index + t)

    def hidden_from_embeddings(self, x: jax.Array, positions: jax.Array, segment_ids: jax.Array) -> jax.Array:
        """Final-normed hidden states [B, T, H] of given input embeddings x [B, T, H] (no cache): the
        decoder of `hidden`, for callers that build their own inputs (the tokenizer's frozen-LM loss)."""
        impl = attention_kernels.resolve(self.attention, x.shape[1])
        if impl == "xla":
            mask = attention_mask(segment_ids, segment_ids)  # built once, shared by all layers

            def run(layer, h, _):
                return layer(h, mask, positions)[0], None
        else:  # the kernel builds its masks from the segment ids (no [B, T, T] array)
            def run(layer, h, _):
                return layer(h, None, positions, segment_ids=segment_ids, implementation=impl)[0], None

        x, _ = self.layers.scan(run, sharding.constrain(x, _ACT))
        return self.norm(x)

    def init_cache(self, batch_size: int, max_len: int) -> KVCache:
        return init_cache(batch_size, max_len, self.kv_heads, self.head_dim, layers=self.num_layers,
                          dtype=self.dtype)

    def text_logits(self, h: jax.Array, *, fp32: bool = False) -> jax.Array:
        """[B, T, vocab] in the compute dtype, or with `fp32` in fp32 from the matmul itself (bf16 inputs,
        fp32 accumulation and output: the loss's logits are not rounded to bf16 first)."""
        return head_logits(self.text_head, h, self.dtype, fp32=fp32)

    @property
    def text_head(self):
        """The module that makes text logits: the LM head, or the token embedding when they are tied."""
        return self.embed_tokens if self.lm_head is None else self.lm_head

    def audio_logits(self, h: jax.Array, audio_targets: jax.Array) -> list[jax.Array]:
        """8 arrays [B, T, cb_k + 1]; `audio_targets` [B, T, 8] feed the depth sequence (teacher forcing)."""
        return audio_head_logits(self.audio_head, self.audio_embed, h, audio_targets)


def audio_head_logits(audio_head, audio_embed, h: jax.Array, audio_targets: jax.Array) -> list[jax.Array]:
    """`AudioLLM.audio_logits` from the two modules it reads (the loss differentiates them on their own)."""
    b, t, d = h.shape
    out = audio_head(h.reshape(b * t, d), audio_targets.reshape(b * t, DEPTH), audio_embed)
    return [lg.reshape(b, t, -1) for lg in out]

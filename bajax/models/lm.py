"""The audio LLM kind: model, additive loss, packed-token data, FLOPs, the paper's two stages, reference names."""

from __future__ import annotations

import numpy as np

from bajax.interop.layout_lm import baichuan_lm
from bajax.lm import batch as lm_batch
from bajax.lm import flops as lm_flops
from bajax.lm import special_tokens
from bajax.lm.config import REFERENCE_HEAD_WIDTH, default_model_config
from bajax.lm.losses import AUDIO_CAPACITY, lm_loss, loss_totals
from bajax.lm.model import AudioLLM
from bajax.models.registry import register
from bajax.models.spec import Field, ModelKind, ReferenceLayout, rows_per_process

# Paper section 3.3.1: stage 1 trains only the audio embeddings and the audio head (LLM frozen);
# stage 2 trains everything except the text embedding and the LM head.
STAGES = {
    "stage1": {"train_only": (r"audio_embed/.*", r"audio_head/.*")},
    "stage2": {"freeze": (r"embed_tokens/.*", r"lm_head/.*")},
}


def build_model(model_cfg, rngs, frozen=None):
    del frozen  # the LLM has no frozen helper
    return AudioLLM(model_cfg, rngs=rngs)


def loss(model_cfg, frozen=None):
    text_weight, audio_weight = float(model_cfg.text_loss_weight), float(model_cfg.audio_loss_weight)
    # The audio head runs only at audio-target positions, in these capacity buckets (fractions of a batch
    # shard's positions; () runs it everywhere): bajax/lm/losses.py. Same loss either way.
    capacity = tuple(float(f) for f in model_cfg.get("audio_head_capacity", AUDIO_CAPACITY))
    text_chunk = int(model_cfg.get("text_loss_chunk", 0))

    def loss_fn(model, batch, rng, totals):
        del rng  # the LLM's training forward is deterministic
        return lm_loss(model, batch, totals=totals, text_loss_weight=text_weight, audio_loss_weight=audio_weight,
                       audio_capacity=capacity, text_chunk=text_chunk)

    return loss_fn


def batch_shapes(cfg) -> dict[str, tuple[int, ...]]:
    return lm_batch.shapes(cfg.train.batch_size, cfg.data.seq_len, len(cfg.model.codebook_sizes))


def make_dataset(cfg, process_index: int, process_count: int, split: str):
    from bajax.data.pipeline import lm_dataset

    m = cfg.model
    return lm_dataset(cfg.data, batch_size=rows_per_process(cfg.train, process_count), seq_len=cfg.data.seq_len,
                      vocab=m.vocab, vocab_size=m.vocab_size, codebook_sizes=tuple(m.codebook_sizes),
                      special=special_tokens.ids_of(m),
                      process_index=process_index, process_count=process_count, split=split)


def flops_per_step(cfg) -> float:
    per_token = lm_flops.train_flops_per_token(cfg.model, cfg.data.seq_len)["total"]
    return per_token * cfg.train.batch_size * cfg.data.seq_len


def useful_flops(cfg, batch: dict) -> float:
    """Training FLOPs of a host-local batch's useful work: the backbone and text head on its real (non-padding)
    tokens, the audio head on the positions with audio loss weight (where it runs; bajax/lm/losses.py)."""
    per_token = lm_flops.train_flops_per_token(cfg.model, cfg.data.seq_len, audio_fraction=0.0)["total"]
    real = batch["segment_ids"] > 0
    audio = np.count_nonzero(real & np.any(batch["audio_weights"] > 0, axis=-1))
    return per_token * np.count_nonzero(real) + 6.0 * lm_flops.audio_head_matmul_macs(cfg.model) * audio


def work_units(batch: dict) -> tuple[str, float]:
    return "tokens", float(np.count_nonzero(batch["segment_ids"]))


def reference_config(cfg) -> dict:
    m = cfg.model
    return {"hidden_size": m.hidden, "num_hidden_layers": m.layers, "num_attention_heads": m.heads,
            "num_key_value_heads": m.kv_heads, "head_dim": m.head_dim, "intermediate_size": m.mlp,
            "rope_theta": m.rope_theta, "rms_norm_eps": m.norm_eps, "vocab_size": m.vocab_size,
            "tie_word_embeddings": False, "attention_qkv_pack": True, "attention_qkv_bias": True,
            "use_norm_head": False,
            "audio_config": {"audio_head_transformer_layers": m.audio_head_layers,
                             "vq_config": {"codebook_sizes": list(m.codebook_sizes)}}}


def nonreference(cfg) -> list[str]:
    """The reference audio head builds hidden / 128 attention heads and asserts hidden % 128 == 0."""
    m, w = cfg.model, REFERENCE_HEAD_WIDTH
    if m.hidden % w:
        return [f"model.hidden={m.hidden}: the reference audio head needs a multiple of {w} "
                f"(CasualDepthTransformerLayer asserts hidden % {w} == 0)"]
    if m.audio_head_heads not in (0, m.hidden // w):
        return [f"model.audio_head_heads={m.audio_head_heads}: the reference audio head always uses hidden / {w} "
                f"= {m.hidden // w} heads (set 0 or {m.hidden // w})"]
    return []


def owns(name: str) -> bool:
    return name.startswith(("model.", "lm_head.", "audio_head."))


# XLA:CPU hands only the matmuls to YNNPACK, not its elementwise and reduction fusions: on the small LM step
# that was clearly faster than the default fusion types (bench/RESULTS_lm.md). The flow decoder's
# convolutions did not gain from it, so it is this kind's option, not a process-wide flag.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}

KIND = register(ModelKind(
    name="lm",
    default_model_config=default_model_config,
    build_model=build_model,
    loss=loss,
    loss_totals=loss_totals,
    batch_fields={k: Field(dtype, axes) for k, (dtype, axes) in lm_batch.FIELDS.items()},
    batch_shapes=batch_shapes,
    make_dataset=make_dataset,
    flops_per_step=flops_per_step,
    useful_flops=useful_flops,
    work_units=work_units,
    layout=ReferenceLayout(entries=baichuan_lm, reference_config=reference_config, owns=owns,
                           nonreference=nonreference),
    stages=STAGES,
    cpu_compiler_options=CPU_COMPILER_OPTIONS,
))

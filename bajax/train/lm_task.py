"""The audio LLM as a trainer task: model, additive loss, data, FLOPs and the paper's two stages."""

from __future__ import annotations

import numpy as np

from bajax.lm import flops as lm_flops
from bajax.lm.losses import lm_loss, loss_totals
from bajax.lm.model import AudioLLM
from bajax.train.task import Task, rows_per_process

# Paper section 3.3.1: stage 1 trains only the audio embeddings and the audio head (LLM frozen);
# stage 2 trains everything except the text embedding and the LM head.
STAGES = {
    "stage1": {"train_only": (r"audio_embed/.*", r"audio_head/.*")},
    "stage2": {"freeze": (r"embed_tokens/.*", r"lm_head/.*")},
}


def loss_fn(model, batch, rng, totals):
    del rng  # the LLM's training forward is deterministic
    return lm_loss(model, batch, totals=totals, text_loss_weight=model.text_loss_weight,
                   audio_loss_weight=model.audio_loss_weight)


def build_model(model_cfg, rngs):
    model = AudioLLM(model_cfg, rngs=rngs)
    # Loss weights are static Python floats on the module (not parameters).
    model.text_loss_weight = float(model_cfg.text_loss_weight)
    model.audio_loss_weight = float(model_cfg.audio_loss_weight)
    return model


def make_dataset(cfg, process_index: int, process_count: int, split: str):
    from bajax.data.pipeline import lm_dataset

    m = cfg.model
    return lm_dataset(cfg.data, batch_size=rows_per_process(cfg.train, process_count), seq_len=cfg.data.seq_len,
                      vocab=m.vocab, vocab_size=m.vocab_size, codebook_sizes=tuple(m.codebook_sizes),
                      process_index=process_index, process_count=process_count, split=split)


def flops_per_step(cfg) -> float:
    per_token = lm_flops.train_flops_per_token(cfg.model, cfg.data.seq_len)["total"]
    return per_token * cfg.train.batch_size * cfg.data.seq_len


def work_units(batch: dict) -> tuple[str, float]:
    return "tokens", float(np.count_nonzero(batch["segment_ids"]))


# XLA:CPU hands only the matmuls to YNNPACK, not its elementwise and reduction fusions: the small 4x512 fp32
# step on 2 cores took 10.4-12.6 s with the default fusion types, 9.4-10.2 s with dots only and 12.1-13.0 s
# with only the elementwise/reduce fusions (bench/RESULTS_lm.md). The flow decoder's convolutions did not
# gain from it, so it is this task's option, not a process-wide flag.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}

TASK = Task(name="lm", build_model=build_model, loss_fn=loss_fn, loss_totals=loss_totals,
            make_dataset=make_dataset, flops_per_step=flops_per_step, work_units=work_units, stages=STAGES,
            cpu_compiler_options=CPU_COMPILER_OPTIONS)

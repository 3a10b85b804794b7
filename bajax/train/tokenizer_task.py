"""The Baichuan-Audio-Tokenizer as a trainer task: model, additive loss, audio data, FLOPs.

Loss (SPEC section 2, `Tokenizer.loss_sums` + `combine`): L1 + L2 on the coarse and the refined mel with the
multi-scale terms, the scheduled commitment loss, and the text-alignment CE through the frozen LM. Every
term is a sum over the micro-batch divided by a total of the WHOLE global batch (`loss_totals`), so
micro-batch losses and gradients add up to the full-batch ones (exactly with
`model.decoder_reference_padding=False`; the reference's decoder normalises over the batch's longest item,
so with it a micro-batch's padding differs slightly from the full batch's).

Train vs eval: the trainer's evaluation puts `totals["train"] = False` (absent = training). Training samples
codes (Gumbel), drops layers, mixes in un-quantised samples (replacement curriculum) and updates the EMA
codebooks; evaluation quantises greedily with all layers and changes no state, so `eval_mel_mae` (the refined
mel's MAE on held-out audio) is the paper's Table 1 metric.

Metrics: the loss parts (`coarse_mae`, `refined_mae` = `mel_mae`, `*_mse`, `commit_loss`, `align_loss`,
`align_acc`) are additive. The RVQ's per-layer `usage_i`, `perplexity_i`, `dead_i`, `norm_mean_i`,
`norm_max_i`, `commit_i` and `depth_mean`, `replace_fraction`, `replaced`, `commit_weight` are not; the trainer
sums metrics over micro-batches, so they are scaled by micro-batch rows / global rows here and the logged
value is their MEAN over the micro-batches of the step.
"""

from __future__ import annotations

import numpy as np

from bajax.tokenizer import align
from bajax.tokenizer import flops as tok_flops
from bajax.tokenizer.config import default_model_config
from bajax.tokenizer.model import Tokenizer
from bajax.tokenizer.model import loss_totals as model_totals
from bajax.train.task import Task, rows_per_process

SAMPLE_RATE = 16000
# `loss_totals` sees only the batch, so it uses the SPEC's fixed frame grids; build_model checks the config.
_GRID = default_model_config()
_GRID_KEYS = ("mel_hop", "pool", "target_hop", "sample_rate", "target_sample_rate")


def loss_totals(batch: dict) -> dict:
    totals = model_totals(batch["wave_lengths"], _GRID, batch.get("text_weights"))
    totals["rows"] = batch["wave"].shape[0]  # static: scales the non-additive metrics in loss_fn
    return totals


def loss_fn(model, batch, rng, totals):
    train = totals.get("train", True)
    step = totals["step"]
    sums, rvq_metrics = model.loss_sums(batch["wave"], batch["wave_lengths"], train=train, rng=rng, step=step,
                                        text_tokens=batch.get("text_tokens"),
                                        text_weights=batch.get("text_weights"))
    loss, parts = model.combine(sums, totals, step)
    share = batch["wave"].shape[0] / totals["rows"]       # this micro-batch's share of the step
    metrics = {k: v * share for k, v in rvq_metrics.items()}
    metrics["commit_weight"] = parts.pop("commit_weight") * share
    metrics.update(parts, mel_mae=parts["refined_mae"])
    return loss, metrics


def build_model(model_cfg, rngs):
    wrong = [k for k in _GRID_KEYS if model_cfg[k] != _GRID[k]]
    if wrong:
        raise ValueError(f"model.{wrong[0]}={model_cfg[wrong[0]]}: the tokenizer task's loss normalisers use "
                         f"the SPEC frame grids ({', '.join(f'{k}={_GRID[k]}' for k in _GRID_KEYS)})")
    return Tokenizer(model_cfg, rngs=rngs)


def setup(model_cfg) -> None:
    """Before anything is traced: read the frozen alignment LM's checkpoint (model.align_lm_checkpoint)."""
    if model_cfg.loss.align_weight > 0:
        align.preload(model_cfg.align_lm, model_cfg.align_lm_checkpoint)


def make_dataset(cfg, process_index: int, process_count: int, split: str):
    from bajax.data.pipeline import audio_dataset

    return audio_dataset(cfg.data, batch_size=rows_per_process(cfg.train, process_count), kind="tokenizer",
                         process_index=process_index, process_count=process_count, split=split)


def code_frames(data_cfg) -> int:
    """Padded 80 ms code frames of a training batch (crop length, or the largest bucket)."""
    a = data_cfg.audio
    seconds = a.crop_seconds if a.mode == "crop" else max(a.bucket_seconds)
    return max(1, int(seconds * 12.5))


def flops_per_step(cfg) -> float:
    m = cfg.model
    flops = tok_flops.train_step_flops(m, code_frames(cfg.data), cfg.train.batch_size)
    if m.loss.align_weight > 0:
        flops += tok_flops.align_flops(m, code_frames(cfg.data), cfg.data.audio.text_len) * cfg.train.batch_size
    return flops


def work_units(batch: dict) -> tuple[str, float]:
    return "audio_seconds", float(np.sum(batch["wave_lengths"])) / SAMPLE_RATE


TASK = Task(name="tokenizer", build_model=build_model, loss_fn=loss_fn, loss_totals=loss_totals,
            make_dataset=make_dataset, flops_per_step=flops_per_step, work_units=work_units, setup=setup)

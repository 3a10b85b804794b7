"""The flow decoder as a trainer task: model, additive OT-CFM + prior loss, audio data, FLOPs.

Loss (SPEC section 4) = flow_loss_weight * masked MSE of the CFM field + prior_loss_weight * masked L1 of
the Pre-Net's mu, both summed over valid (frame, bin) pairs and divided by 80 x the valid frames of the
WHOLE global batch (`loss_totals`), so micro-batch losses add up to the full-batch loss exactly.
The conditioning comes from `bajax.flow.conditioning` (`model.cond_source`): the frozen tokenizer decoder
from codes in the paper setting, or the fixed 16 kHz mel of `wave16` for standalone runs.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from bajax.flow import conditioning
from bajax.flow import flops as flow_flops
from bajax.flow.model import FlowDecoder
from bajax.train.task import Task, rows_per_process

MEL_RATE = 50.0   # 24 kHz mel frames per second (hop 480)


def loss_totals(batch: dict) -> dict:
    """Valid mel frames of the global batch (at least 1, so an all-padding eval batch gives 0, not NaN)."""
    return {"frames": jnp.maximum(jnp.sum(batch["mel_lengths"].astype(jnp.float32)), 1.0)}


def loss_fn(model, batch, rng, totals):
    cond, cond_lengths = conditioning.conditioner(model.cond_source, model.tokenizer_checkpoint)(batch)
    sums = model.loss_sums(cond, cond_lengths, batch["mel24"], batch["mel_lengths"], rng)
    norm = totals["frames"] * model.n_mels
    cfm_loss, prior_loss = sums["cfm"] / norm, sums["prior"] / norm
    loss = model.flow_loss_weight * cfm_loss + model.prior_loss_weight * prior_loss
    return loss, {"cfm_loss": cfm_loss, "prior_mae": prior_loss}


def build_model(model_cfg, rngs):
    conditioning.check(model_cfg)
    model = FlowDecoder(model_cfg, rngs=rngs)
    # Static strings on the module (not parameters): which conditioner the loss uses.
    model.cond_source = str(model_cfg.cond_source)
    model.tokenizer_checkpoint = str(model_cfg.tokenizer_checkpoint)
    return model


def make_dataset(cfg, process_index: int, process_count: int, split: str):
    from bajax.data.pipeline import audio_dataset

    return audio_dataset(cfg.data, batch_size=rows_per_process(cfg.train, process_count), kind="flow",
                         process_index=process_index, process_count=process_count, split=split)


def mel_frames(data_cfg) -> int:
    """Padded 24 kHz mel frames of a training batch (crop length, or the largest bucket)."""
    a = data_cfg.audio
    seconds = a.crop_seconds if a.mode == "crop" else max(a.bucket_seconds)
    return 4 * max(1, int(seconds * 12.5))


def flops_per_step(cfg) -> float:
    return flow_flops.train_flops(cfg.model, mel_frames(cfg.data)) * cfg.train.batch_size


def work_units(batch: dict) -> tuple[str, float]:
    return "audio_seconds", float(np.sum(batch["mel_lengths"])) / MEL_RATE


TASK = Task(name="flow", build_model=build_model, loss_fn=loss_fn, loss_totals=loss_totals,
            make_dataset=make_dataset, flops_per_step=flops_per_step, work_units=work_units,
            setup=conditioning.preload)

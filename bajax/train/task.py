"""What the trainer needs to know about a model: the `Task` interface, and the registry of the three.

A task's loss must be ADDITIVE over micro-batches: `loss_totals(full_batch)` computes the normalisers
(token counts, frame counts) of the whole global batch once, and `loss_fn` divides its sums by them. Then
the sum of micro-batch losses and gradients equals the loss and gradient of the full batch exactly, which is
what makes gradient accumulation equal to a k-times larger batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
from flax import nnx
from ml_collections import ConfigDict

LossFn = Callable[[nnx.Module, dict, jax.Array, dict], tuple[jax.Array, dict]]


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    # (model config, rngs) -> module
    build_model: Callable[[ConfigDict, nnx.Rngs], nnx.Module]
    # (model, batch, rng, totals) -> (loss, metrics); metrics are additive like the loss. `totals` holds
    # what loss_totals returned plus "step" (the optimizer step, int32 scalar) for loss schedules.
    loss_fn: LossFn
    # global batch -> normalisers passed to every micro-batch's loss_fn
    loss_totals: Callable[[dict], dict]
    # (config, process_index, process_count, split) -> grain IterDataset of host-local numpy batches
    make_dataset: Callable[[ConfigDict, int, int, str], object]
    # config -> analytic training FLOPs of one optimizer step (forward + backward, whole global batch)
    flops_per_step: Callable[[ConfigDict], float]
    # host-local numpy batch -> (unit name, count) for throughput, e.g. ("tokens", 2048)
    work_units: Callable[[dict], tuple[str, float]]
    # named presets of trainable parameters: {'stage1': {'train_only': (...)}, ...}
    stages: dict = dataclasses.field(default_factory=dict)
    # model config -> None, run once before anything is traced: loads frozen helper models (the flow
    # decoder's tokenizer, the tokenizer's alignment LM) that must not be restored inside a trace
    setup: Callable[[ConfigDict], None] | None = None
    # XLA compiler options of this task's train and eval steps when they compile for CPU (chosen by
    # measurement per model; other backends get none)
    cpu_compiler_options: dict = dataclasses.field(default_factory=dict)


def rows_per_process(train_cfg, process_count: int) -> int:
    """The host-local rows of a global batch; every process feeds the same number."""
    if train_cfg.batch_size % process_count:
        raise ValueError(f"train.batch_size={train_cfg.batch_size} must be divisible by the "
                         f"{process_count} processes")
    return train_cfg.batch_size // process_count


def get_task(kind: str) -> Task:
    if kind == "lm":
        from bajax.train.lm_task import TASK
    elif kind == "tokenizer":
        from bajax.train.tokenizer_task import TASK
    elif kind == "flow":
        from bajax.train.flow_task import TASK
    else:
        raise ValueError(f"config kind={kind!r}: no trainer task; valid kinds are 'lm', 'tokenizer', 'flow'")
    return TASK

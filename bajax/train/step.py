"""The train state and the pure train step (gradient accumulation, freezing, clipping, AdamW).

State = {'step': int32, 'model': nnx.State of the whole model, 'opt': optax state of the TRAINABLE params}.
Storing the whole model (not only what trains) keeps checkpoints in one layout whatever the stage, so a
stage-1 checkpoint initialises stage 2 and an imported Hugging Face model initialises either.
A kind with several optimizers (`ModelKind.updates`, a GAN) keeps one optimizer state per update,
'opt': {name: state}, and runs its updates in order within one step, each on the model the previous left.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from bajax import sharding
from bajax.layers import lora as lora_layers
from bajax.models import LossFn, ModelKind, lora
from bajax.train import optim
from bajax.train.freeze import path_str

BATCH_AXES = ("batch",)


@dataclasses.dataclass(frozen=True)
class Phase:
    """One optimizer of a run: the parameters it trains, its transformation, schedule and loss factory."""
    name: str                      # '' for a kind with one optimizer (its state is state['opt'] itself)
    trains: Callable               # nnx filter (path, value) -> bool
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    loss: Callable                 # (model_cfg, frozen) -> LossFn
    start: int = 0                 # the first step it updates (`Update.start`)


def phases(kind: ModelKind, cfg, is_trainable) -> list[Phase]:
    """The run's optimizers: one over every trainable parameter, or one per `kind.updates` entry (each over
    the trainable parameters that update owns, with the optimizer of its config section)."""
    steps = cfg.train.steps
    if not kind.updates:
        return [Phase("", is_trainable, optim.make_optimizer(cfg.optim, steps), optim.schedule(cfg.optim, steps),
                      kind.loss)]

    def owned(owns):
        return lambda path, value: is_trainable(path, value) and owns(path_str(path))

    return [Phase(u.name, owned(u.owns), optim.make_optimizer(cfg[u.optim], steps),
                  optim.schedule(cfg[u.optim], steps), u.loss, int(u.start(cfg))) for u in kind.updates]


def _unless_started(active, updates, new_opt, old_opt):
    """(updates, opt state) of a phase that runs from a later step: zero updates and the old state before it."""
    updates = jax.tree.map(lambda u: jnp.where(active, u, jnp.zeros_like(u)), updates)
    return updates, jax.tree.map(lambda new, old: jnp.where(active, new, old), new_opt, old_opt)


def init_state(kind: ModelKind, model_cfg, seed: int, run_phases: list[Phase], frozen=None, lora_cfg=None):
    """A fresh train state; `lora_cfg` (the run's `train.lora`) attaches adapters to the model."""
    model = lora.build(kind, model_cfg, nnx.Rngs(seed), frozen or {}, lora_cfg)
    model_state = nnx.state(model)
    opt = {p.name: p.tx.init(nnx.split_state(model_state, p.trains, ...)[0]) for p in run_phases}
    return {"step": jnp.zeros((), jnp.int32), "model": model_state, "opt": opt.get("", opt)}


def state_shardings(abstract_state, mesh: jax.sharding.Mesh):
    """Shardings of a train state: model and optimizer moments follow the params' logical axes;
    counters and other unannotated leaves are replicated."""
    replicated = NamedSharding(mesh, PartitionSpec())

    def one(x):
        if isinstance(x, nnx.Variable):
            return sharding.state_shardings(x, mesh)
        return replicated

    return jax.tree.map(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))



def micro_steps(cfg, batch_shards: int) -> int:
    """The micro-batches per step: `train.grad_accum`, raised to the smallest count whose micro-batch holds at
    most `train.max_tokens_per_device` tokens (rows x `data.seq_len`) per batch shard (`batch_shards` = the
    mesh's data x fsdp devices) and splits the batch evenly. So one config trains at 4k and at 16k tokens per
    row: activations scale with the micro-batch, and a longer sequence takes more, smaller micro-steps. One
    row per shard is the floor (`bajax plan` says when even that does not fit)."""
    k = int(cfg.train.grad_accum)
    cap, seq = int(cfg.train.get("max_tokens_per_device", 0)), int(cfg.data.get("seq_len", 0) or 0)
    rows = int(cfg.train.batch_size)
    if cap <= 0 or seq <= 0 or rows % batch_shards:
        return k
    fits = [n for n in range(k, rows // batch_shards + 1)
            if rows % (n * batch_shards) == 0 and rows // (n * batch_shards) * seq <= cap]
    if fits:
        return fits[0]
    return max(n for n in range(k, rows // batch_shards + 1) if rows % (n * batch_shards) == 0)


def _micro_batches(batch: dict, k: int) -> dict:
    """[B, ...] -> [k, B/k, ...] taking rows i, i+k, i+2k, ... into micro-batch i, so every micro-batch
    draws evenly from every device's contiguous block of rows (no resharding between micro-steps)."""

    def split(x):
        if x.shape[0] % k:
            raise ValueError(f"batch of {x.shape[0]} rows is not divisible by train.grad_accum={k}")
        y = x.reshape(x.shape[0] // k, k, *x.shape[1:])
        return jnp.swapaxes(y, 0, 1)

    return jax.tree.map(split, batch)


# Folded into a micro-step's key for LoRA dropout masks, apart from the key the loss itself draws from.
_ADAPTER_DROPOUT_SALT = 0x10A


def make_train_step(run_phases: list[Phase], loss_fns: list[LossFn], loss_totals, graphdef, *, seed: int,
                    grad_accum: int, adapter_dropout: bool = False):
    """A pure `step(state, batch) -> (state, metrics)` to be wrapped in `jax.jit` by the caller; `loss_fns`
    are the phases' losses built for the run's config, `loss_totals` their normalisers of the global batch.
    `adapter_dropout`: the model has LoRA adapters with dropout, on in this step (never in evaluation)."""

    def forward(loss_fn, model, batch, rng, totals):
        if not adapter_dropout:
            return loss_fn(model, batch, rng, totals)
        with lora_layers.training(jax.random.fold_in(rng, _ADAPTER_DROPOUT_SALT)):
            return loss_fn(model, batch, rng, totals)

    def loss_and_grad(loss_fn, trains, trainable, others, batch, rng, totals):
        def loss_of(params):
            # copy=True: the forward may mutate non-param Variables (EMA codebooks) inside this trace.
            model = nnx.merge(graphdef, params, others, copy=True)
            loss, metrics = forward(loss_fn, model, batch, rng, totals)
            # Non-trainable state mutated by the forward pass (e.g. RVQ EMA codebooks) leaves here.
            _, new_others = nnx.split_state(nnx.state(model), trains, ...)
            return loss, (metrics, new_others)

        (loss, (metrics, new_others)), grads = jax.value_and_grad(loss_of, has_aux=True)(trainable)
        return loss, metrics, new_others, grads

    def accumulate(loss_fn, trains, trainable, others, batch, rng, totals):
        """(loss, metrics, others, grads) of the whole batch, over `grad_accum` micro-batches."""
        if grad_accum == 1:
            return loss_and_grad(loss_fn, trains, trainable, others, batch, rng, totals)
        micro = _micro_batches(batch, grad_accum)
        f32_zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), trainable)

        def body(carry, xs):
            others, grad_sum, loss_sum, metric_sum = carry
            mb, i = xs
            mb = jax.tree.map(lambda x: sharding.constrain(x, BATCH_AXES + (None,) * (x.ndim - 1)), mb)
            loss, metrics, others, grads = loss_and_grad(loss_fn, trains, trainable, others, mb,
                                                         jax.random.fold_in(rng, i), totals)
            grad_sum = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), grad_sum, grads)
            metric_sum = jax.tree.map(jnp.add, metric_sum, metrics)
            return (others, grad_sum, loss_sum + loss, metric_sum), None

        first_metrics = jax.eval_shape(
            lambda: loss_and_grad(loss_fn, trains, trainable, others, jax.tree.map(lambda x: x[0], micro), rng,
                                  totals)[1])
        zeros_metrics = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), first_metrics)
        carry = (others, f32_zeros, jnp.zeros((), jnp.float32), zeros_metrics)
        (others, grads, loss, metrics), _ = jax.lax.scan(body, carry, (micro, jnp.arange(grad_accum)))
        return loss, metrics, others, grads

    single = len(run_phases) == 1 and run_phases[0].name == ""

    def step(state, batch):
        rng = jax.random.fold_in(jax.random.key(seed), state["step"])
        totals = {**loss_totals(batch), "step": state["step"]}  # schedules (e.g. RVQ curricula) read step
        model_state, opt, metrics = state["model"], {}, {}
        for i, (phase, loss_fn) in enumerate(zip(run_phases, loss_fns)):
            trainable, others = nnx.split_state(model_state, phase.trains, ...)
            phase_rng = rng if single else jax.random.fold_in(rng, i)
            loss, phase_metrics, others, grads = accumulate(loss_fn, phase.trains, trainable, others, batch,
                                                            phase_rng, totals)
            opt_state = state["opt"] if single else state["opt"][phase.name]
            updates, opt[phase.name] = phase.tx.update(grads, opt_state, trainable)
            if phase.start > 0:   # not started: no update, and an optimizer state that has not counted the step
                updates, opt[phase.name] = _unless_started(state["step"] >= phase.start, updates,
                                                           opt[phase.name], opt_state)
            model_state = nnx.merge_state(optax.apply_updates(trainable, updates), others)
            # The last phase's loss, grad norm and lr are the run's `loss`, `grad_norm`, `lr` (a GAN: the
            # generator's); every phase's also carry its name.
            metrics.update(phase_metrics)
            metrics.update(loss=loss, grad_norm=optax.global_norm(grads), lr=phase.schedule(state["step"]))
            if not single:
                metrics.update({f"loss_{phase.name}": loss, f"grad_norm_{phase.name}": metrics["grad_norm"],
                                f"lr_{phase.name}": metrics["lr"]})
        new_state = {"step": state["step"] + 1, "model": model_state, "opt": opt[""] if single else opt}
        return new_state, metrics

    return step

"""The train state and the pure train step (gradient accumulation, freezing, clipping, AdamW).

State = {'step': int32, 'model': nnx.State of the whole model, 'opt': optax state of the TRAINABLE params}.
Storing the whole model (not only what trains) keeps checkpoints in one layout whatever the stage, so a
stage-1 checkpoint initialises stage 2 and an imported Hugging Face model initialises either.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from bajax import sharding
from bajax.models import LossFn, ModelKind

BATCH_AXES = ("batch",)


def init_state(kind: ModelKind, model_cfg, seed: int, tx: optax.GradientTransformation, is_trainable,
               frozen=None):
    model = kind.build_model(model_cfg, nnx.Rngs(seed), frozen or {})
    model_state = nnx.state(model)
    trainable, _ = nnx.split_state(model_state, is_trainable, ...)
    return {"step": jnp.zeros((), jnp.int32), "model": model_state, "opt": tx.init(trainable)}


def state_shardings(abstract_state, mesh: jax.sharding.Mesh):
    """Shardings of a train state: model and optimizer moments follow the params' logical axes;
    counters and other unannotated leaves are replicated."""
    replicated = NamedSharding(mesh, PartitionSpec())

    def one(x):
        if isinstance(x, nnx.Variable):
            return sharding.state_shardings(x, mesh)
        return replicated

    return jax.tree.map(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))



def _micro_batches(batch: dict, k: int) -> dict:
    """[B, ...] -> [k, B/k, ...] taking rows i, i+k, i+2k, ... into micro-batch i, so every micro-batch
    draws evenly from every device's contiguous block of rows (no resharding between micro-steps)."""

    def split(x):
        if x.shape[0] % k:
            raise ValueError(f"batch of {x.shape[0]} rows is not divisible by train.grad_accum={k}")
        y = x.reshape(x.shape[0] // k, k, *x.shape[1:])
        return jnp.swapaxes(y, 0, 1)

    return jax.tree.map(split, batch)


def make_train_step(loss_fn: LossFn, loss_totals, graphdef, tx: optax.GradientTransformation, is_trainable, *,
                    seed: int, grad_accum: int, lr_schedule):
    """A pure `step(state, batch) -> (state, metrics)` to be wrapped in `jax.jit` by the caller; `loss_fn` is
    the kind's loss built for the run's config, `loss_totals` its normalisers of the global batch."""

    def loss_and_grad(trainable, others, batch, rng, totals):
        def loss_of(params):
            # copy=True: the forward may mutate non-param Variables (EMA codebooks) inside this trace.
            model = nnx.merge(graphdef, params, others, copy=True)
            loss, metrics = loss_fn(model, batch, rng, totals)
            # Non-trainable state mutated by the forward pass (e.g. RVQ EMA codebooks) leaves here.
            _, new_others = nnx.split_state(nnx.state(model), is_trainable, ...)
            return loss, (metrics, new_others)

        (loss, (metrics, new_others)), grads = jax.value_and_grad(loss_of, has_aux=True)(trainable)
        return loss, metrics, new_others, grads

    def step(state, batch):
        rng = jax.random.fold_in(jax.random.key(seed), state["step"])
        totals = {**loss_totals(batch), "step": state["step"]}  # schedules (e.g. RVQ curricula) read step
        trainable, others = nnx.split_state(state["model"], is_trainable, ...)
        if grad_accum == 1:
            loss, metrics, others, grads = loss_and_grad(trainable, others, batch, rng, totals)
        else:
            micro = _micro_batches(batch, grad_accum)
            f32_zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), trainable)

            def body(carry, xs):
                others, grad_sum, loss_sum, metric_sum = carry
                mb, i = xs
                mb = jax.tree.map(lambda x: sharding.constrain(x, BATCH_AXES + (None,) * (x.ndim - 1)), mb)
                loss, metrics, others, grads = loss_and_grad(trainable, others, mb, jax.random.fold_in(rng, i),
                                                             totals)
                grad_sum = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), grad_sum, grads)
                metric_sum = jax.tree.map(jnp.add, metric_sum, metrics)
                return (others, grad_sum, loss_sum + loss, metric_sum), None

            first_metrics = jax.eval_shape(
                lambda: loss_and_grad(trainable, others, jax.tree.map(lambda x: x[0], micro), rng, totals)[1])
            zeros_metrics = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), first_metrics)
            carry = (others, f32_zeros, jnp.zeros((), jnp.float32), zeros_metrics)
            (others, grads, loss, metrics), _ = jax.lax.scan(body, carry, (micro, jnp.arange(grad_accum)))

        updates, opt_state = tx.update(grads, state["opt"], trainable)
        trainable = optax.apply_updates(trainable, updates)
        metrics = dict(metrics)
        metrics["loss"] = loss
        metrics["grad_norm"] = optax.global_norm(grads)
        metrics["lr"] = lr_schedule(state["step"])
        new_state = {"step": state["step"] + 1, "model": nnx.merge_state(trainable, others), "opt": opt_state}
        return new_state, metrics

    return step

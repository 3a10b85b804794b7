"""Optimizer: AdamW with linear warm-up and cosine decay, global-norm clipping, decay on matrices only."""

from __future__ import annotations

import jax
import optax
from ml_collections import ConfigDict


def schedule(optim: ConfigDict, total_steps: int) -> optax.Schedule:
    decay_steps = optim.decay_steps or total_steps
    warmup = min(optim.warmup_steps, max(decay_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=optim.lr,
        warmup_steps=warmup,
        decay_steps=max(decay_steps, warmup + 1),
        end_value=optim.lr * optim.end_lr_ratio,
    )


def _decay_mask(params):
    # Norm scales and biases (vectors) are not decayed; weights of rank >= 2 are.
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(optim: ConfigDict, total_steps: int) -> optax.GradientTransformation:
    """The transformation applied to the TRAINABLE parameters only (frozen ones get no state)."""
    parts = []
    if optim.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(optim.clip_norm))
    parts.append(optax.adamw(schedule(optim, total_steps), b1=optim.b1, b2=optim.b2, eps=optim.eps,
                             weight_decay=optim.weight_decay, mask=_decay_mask))
    return optax.chain(*parts)

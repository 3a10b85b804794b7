"""Optimizer: AdamW with linear warm-up and cosine decay, global-norm clipping, decay on weight matrices only."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
import optax
from flax import nnx
from ml_collections import ConfigDict

from bajax.train.freeze import path_str

# Axes along which a parameter is a stack of independent copies: `nnx.scan` over layers, and the audio head's
# per-depth-step weights. They say nothing about whether one copy is a matrix or a vector.
_STACK_AXES = frozenset({"layers", "depth"})
# A projection's output split into heads is one feature dimension: [heads, head_dim] is a vector per head.
_HEAD_AXES = frozenset({"heads", "kv_heads"})


def _decays_by_axes(name: str, axes: Sequence[str | None]) -> bool:
    if "norm" in axes or name.startswith("bias") or name == "scale":
        return False
    features = [a for a in axes if a not in _STACK_AXES]
    if _HEAD_AXES.intersection(features):
        features = [a for a in features if a != "head_dim"]
    return len(features) >= 2


def _decays_by_name(path: Sequence, ndim: int) -> bool:
    # A bare array (no logical axes): judge by its path. Norm modules are named *norm*, biases bias*.
    keys = [str(getattr(p, "key", p)) for p in path]
    name = keys[-1] if keys else ""
    if name.startswith("bias") or name == "scale" or any("norm" in k.lower() for k in keys[:-1]):
        return False
    return ndim >= 2


def decays(path: Sequence, leaf) -> bool:
    """Whether weight decay applies to the parameter at `path`: weight matrices, projection and convolution
    kernels and embedding tables (two or more feature axes, not counting the stacking axes `layers` and
    `depth`, and counting a [heads, head_dim] pair as one); never norm scales, biases or other vectors, however
    many layers they are stacked over. `leaf` is an `nnx.Variable` (decided from its `logical_axes`) or a
    bare array (decided from its path)."""
    name = str(getattr(path[-1], "key", path[-1])) if path else ""
    if isinstance(leaf, nnx.Variable):
        axes = leaf.get_metadata().get("logical_axes")
        if axes is not None:
            return _decays_by_axes(name, tuple(axes))
        leaf = leaf.get_value()
    return _decays_by_name(path, np.ndim(leaf))


def decay_mask(params):
    """The weight-decay mask of a parameter tree (an nnx.State of Params, or a tree of bare arrays): a bool
    where each Variable (or array) is, a prefix of the tree as `optax.masked` accepts."""
    return jax.tree_util.tree_map_with_path(decays, params, is_leaf=lambda x: isinstance(x, nnx.Variable))


def decayed_paths(params) -> list[str]:
    """'/'-joined paths of the parameters that decay (for tests and reports)."""
    flat = jax.tree_util.tree_flatten_with_path(decay_mask(params))[0]
    return [path_str(p) for p, m in flat if m]


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


def make_optimizer(optim: ConfigDict, total_steps: int) -> optax.GradientTransformation:
    """The transformation applied to the TRAINABLE parameters only (frozen ones get no state)."""
    parts = []
    if optim.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(optim.clip_norm))
    parts.append(optax.adamw(schedule(optim, total_steps), b1=optim.b1, b2=optim.b2, eps=optim.eps,
                             weight_decay=optim.weight_decay, mask=decay_mask))
    return optax.chain(*parts)

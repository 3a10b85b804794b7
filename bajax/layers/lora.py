"""LoRA: low-rank adapters attached to the `Linear` layers of any model after it is built.

    y = x W (+ b)   ->   y = x W (+ b) + (alpha / r) * dropout(x) A B
    A [in..., r]  fan-in truncated normal      B [r, out...]  zeros, so the adapted model starts equal to the base

Why a transform over a built model instead of a flag in every layer: the LLM backbone, the audio head and the
flow decoder all project with the same `Linear`, so one pass over the module graph adapts any of them
(`attach`), and no model code or config knows about LoRA. The adapters are leaves `lora_a` / `lora_b` BESIDE
the kernel they adapt (`.../q_proj/kernel`, `.../q_proj/lora_a`, `.../q_proj/lora_b`): base parameter paths do
not move, so a pre-trained checkpoint without adapters still restores into the base, and export merges
`kernel + scale * A B` leaf by leaf.

Sharding: A keeps the kernel's input axes and B its output axes (the rank dimension is replicated), so an
adapter is split like the weight it adapts; inside a `Stack` both carry the leading `layers` axis too.

Dropout on the adapter input runs only inside `training(key)` (the train step enters it; evaluation and
generation do not), with a fresh key per adapted call: the step's key folded with each stacked layer's index
(`Stack.scan` calls `layer(i)`) and a per-trace call counter, so no two adapters or layers share a mask.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import re
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

A, B = "lora_a", "lora_b"      # leaf names of the two factors, beside the adapted `kernel`


class Adapter(nnx.Param):
    """A LoRA factor. It is a Param (counted, checkpointed, sharded by its logical axes like any), and its own
    type, so a filter can tell adapters from the base weights they adapt (with LoRA on, only these train)."""


def factor_axes(kernel_axes: Sequence[str | None], lead: int, n_in: int) -> tuple[tuple, tuple]:
    """Logical axes of (A, B) from the kernel's: `lead` stacked axes, then A = inputs + rank, B = rank +
    outputs (the rank dimension is unnamed, i.e. replicated)."""
    axes = tuple(kernel_axes)
    stacked, ins, outs = axes[:lead], axes[lead:lead + n_in], axes[lead + n_in:]
    return stacked + ins + (None,), stacked + (None,) + outs


def init_factors(key: jax.Array, kernel_shape: Sequence[int], lead: int, n_in: int, rank: int):
    """(A, B) arrays for a kernel of `kernel_shape` with `lead` stacked dims and `n_in` input dims."""
    shape = tuple(int(d) for d in kernel_shape)
    stacked, ins, outs = shape[:lead], shape[lead:lead + n_in], shape[lead + n_in:]
    fan_in = math.prod(ins)
    std = 1.0 / math.sqrt(fan_in) / 0.87962566103423978   # variance 1/fan_in after truncation at 2 std
    a = std * jax.random.truncated_normal(key, -2.0, 2.0, stacked + ins + (rank,), jnp.float32)
    return a, jnp.zeros(stacked + (rank,) + outs, jnp.float32)


# -- dropout only while training ---------------------------------------------------------------------------

@dataclasses.dataclass
class _Keys:
    key: jax.Array
    calls: int = 0


_keys: contextvars.ContextVar[_Keys | None] = contextvars.ContextVar("bajax_lora_dropout", default=None)


@contextlib.contextmanager
def training(key: jax.Array) -> Iterator[None]:
    """Adapter dropout is on inside the block, with masks drawn from `key`."""
    token = _keys.set(_Keys(key))
    try:
        yield
    finally:
        _keys.reset(token)


def dropout_active() -> bool:
    return _keys.get() is not None


@contextlib.contextmanager
def layer(index) -> Iterator[None]:
    """Within one stacked layer (`index` may be a traced scan counter): its adapters draw their own masks."""
    outer = _keys.get()
    if outer is None:
        yield
        return
    token = _keys.set(_Keys(jax.random.fold_in(outer.key, index)))
    try:
        yield
    finally:
        _keys.reset(token)


def _next_key() -> jax.Array | None:
    keys = _keys.get()
    if keys is None:
        return None
    keys.calls += 1
    return jax.random.fold_in(keys.key, keys.calls)


def dropout(x: jax.Array, rate: float) -> jax.Array:
    key = _next_key() if rate > 0 else None
    if key is None:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), x.dtype)).astype(x.dtype)


# -- attaching adapters to a built model -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Settings:
    rank: int
    alpha: float
    dropout: float = 0.0
    targets: tuple[str, ...] = ()

    @property
    def scale(self) -> float:
        return float(self.alpha) / int(self.rank)


class NoMatch(ValueError):
    """A target pattern that adapts no Linear layer; the message lists the paths it could have matched."""


def linear_paths(model) -> list[tuple[str, object]]:
    """('/'-joined module path, module) of every Linear of `model`, in graph order."""
    from bajax.layers.linear import Linear

    return [("/".join(str(p) for p in path), node) for path, node in nnx.iter_graph(model)
            if isinstance(node, Linear)]


def matches(pattern: re.Pattern, module_path: str) -> bool:
    """A target names a Linear by its module path or by its kernel's parameter path."""
    return bool(pattern.fullmatch(module_path) or pattern.fullmatch(module_path + "/kernel"))


def attach(model, settings: Settings, key: jax.Array) -> list[str]:
    """Adds adapters to every Linear of `model` whose path a target matches (call it where the model is
    built, inside the same traced function); returns the adapted module paths. Every target must match."""
    if settings.rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {settings.rank}")
    if not 0.0 <= settings.dropout < 1.0:
        raise ValueError(f"LoRA dropout must be in [0, 1), got {settings.dropout}")
    linears = linear_paths(model)
    patterns = [re.compile(t) for t in settings.targets]
    for pattern in patterns:
        if not any(matches(pattern, p) for p, _ in linears):
            names = sorted({re.sub(r"/\d+(?=/|$)", "/<i>", p) + "/kernel" for p, _ in linears})   # list entries once
            sample = ", ".join(names[:40]) or "(the model has no Linear layer)"
            raise NoMatch(f"target {pattern.pattern!r} matches no Linear layer; Linear kernels are at paths: "
                          f"{sample}{', ...' if len(names) > 40 else ''}")
    adapted = []
    for i, (path, linear) in enumerate(linears):
        if any(matches(r, path) for r in patterns):
            linear.add_adapter(settings.rank, settings.scale, settings.dropout, jax.random.fold_in(key, i))
            adapted.append(path)
    return adapted


# -- merging (export) --------------------------------------------------------------------------------------

def merge_kernel(kernel: np.ndarray, a: np.ndarray, b: np.ndarray, scale: float) -> np.ndarray:
    """kernel + scale * A B for ONE layer's slices (no stacked dims): A [in..., r], B [r, out...]; computed in
    float64 and returned in the kernel's dtype, so the merge adds no error beyond that dtype's rounding."""
    rank = a.shape[-1]
    delta = a.reshape(-1, rank).astype(np.float64) @ b.reshape(rank, -1).astype(np.float64)
    return (kernel.astype(np.float64) + scale * delta.reshape(kernel.shape)).astype(kernel.dtype)

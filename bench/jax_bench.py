"""Timing helpers shared by the JAX benchmarks.

`split_jit`: jitting a module call the way bajax's own code does (bajax/tokenizer/encode.py, bajax/speech, the trainer).

`jax.jit` over the module's split state, not `nnx.jit`: for inference calls on this CPU, `nnx.jit` ran the
base bridge + RVQ encode at 0.8-1.1 s against 0.50-0.52 s for `jax.jit` on the same state (measured
2026-11-22), its per-call graph bookkeeping being on the timed path. Benchmarks must time what users run.
"""

from __future__ import annotations

import time

import jax
from flax import nnx


def split_jit(module, fn):
    """`fn(module, *args)` as a jitted `(*args) -> out` with the module's state passed as an argument."""
    graphdef, state = nnx.split(module)
    jitted = jax.jit(lambda s, *args: fn(nnx.merge(graphdef, s), *args))
    return lambda *args: jitted(state, *args)


def best_seconds(fn, repeats: int) -> float:
    """Best wall time of `repeats` calls of `fn` (its output waited for), after one compile/warm-up call."""
    jax.block_until_ready(fn())
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return best

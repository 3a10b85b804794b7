"""EMA codebook state and its update: pure functions of (state, batch statistics), jit- and GSPMD-friendly.

The update never goes through the optimizer: the training step computes per-batch statistics with plain
`jnp.sum` / `segment_sum` over the (possibly data-parallel sharded) batch axis, which under `jax.jit` with
GSPMD is already the GLOBAL sum across shards, so the result is the same on 1 or N devices (tested).
Nothing here reads a per-shard quantity.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx


class CodebookEMA(nnx.Variable):
    """Codebook state updated by the EMA rule in the training step; the optimizer never sees it."""


class EMAState(NamedTuple):
    embed: jax.Array          # [K, D] the code vectors used for quantisation
    embed_avg: jax.Array      # [K, D] EMA of the sum of vectors assigned to each code
    cluster_size: jax.Array   # [K]    EMA of the number of vectors assigned to each code
    unused_steps: jax.Array   # [K]    consecutive training steps without any assignment (int32)


class BatchStats(NamedTuple):
    counts: jax.Array         # [K]    valid vectors assigned to each code in this (global) batch
    sums: jax.Array           # [K, D] sum of those vectors
    candidates: jax.Array     # [K, D] one random valid batch vector per code (restart candidates)


class EMAConfig(NamedTuple):
    decay: float = 0.99
    eps: float = 1e-5         # Laplace smoothing
    beta: float = 0.0         # L2 constraint: embed *= (1 - beta) after the EMA step; 0 disables
    restart_after: int = 0    # restart a code unused for this many consecutive steps; <= 0 disables
    threshold: float = 0.0    # ... or whose EMA count falls below this; <= 0 disables
    restart_count: float = 1.0  # cluster_size given to a restarted code (embed_avg = vector * this)


def batch_stats(x: jax.Array, codes: jax.Array, weight: jax.Array, size: int, rng: jax.Array) -> BatchStats:
    """Counts, sums and restart candidates from vectors `x [N, D]`, their codes `[N]` and 0/1 `weight [N]`.

    Padding (weight 0) contributes nothing: it is routed to code 0 with zero weight (static shapes).
    Candidates are drawn uniformly among the weighted rows by inverting the cumulative weight, so the
    draw depends on the valid rows and their order only, not on how much padding surrounds them.
    """
    x = jax.lax.stop_gradient(x.astype(jnp.float32))
    w = weight.astype(jnp.float32)
    idx = jnp.where(w > 0, codes, 0)
    counts = jax.ops.segment_sum(w, idx, num_segments=size)
    sums = jax.ops.segment_sum(x * w[:, None], idx, num_segments=size)
    cum = jnp.cumsum(w)
    total = cum[-1]
    u = jax.random.uniform(rng, (size,), minval=0.0, maxval=1.0) * total
    pick = jnp.clip(jnp.searchsorted(cum, u, side="right"), 0, x.shape[0] - 1)
    candidates = jnp.take(x, pick, axis=0)
    return BatchStats(counts, sums, candidates)


def laplace_smoothed(cluster_size: jax.Array, eps: float) -> jax.Array:
    """(N + eps) / (sum N + K eps) * sum N: no count is zero, the total is unchanged."""
    total = jnp.sum(cluster_size)
    return (cluster_size + eps) / (total + cluster_size.shape[0] * eps) * total


def ema_update(state: EMAState, stats: BatchStats, cfg: EMAConfig) -> tuple[EMAState, jax.Array]:
    """One EMA step, then the L2 constraint, then dead-code restart. Returns (new state, dead mask [K]).

    Order matters: the restart comes LAST so this step's EMA cannot overwrite a restarted code.
    """
    a = cfg.decay
    cluster_size = a * state.cluster_size + (1.0 - a) * stats.counts
    embed_avg = a * state.embed_avg + (1.0 - a) * stats.sums
    embed = embed_avg / laplace_smoothed(cluster_size, cfg.eps)[:, None]

    if cfg.beta > 0:
        # Scale the running sum too: otherwise the next EMA step recomputes embed = m / N and undoes the
        # shrink, and the constraint never accumulates into a bound on the norms.
        shrink = 1.0 - cfg.beta
        embed, embed_avg = embed * shrink, embed_avg * shrink

    unused = jnp.where(stats.counts > 0, 0, state.unused_steps + 1).astype(jnp.int32)
    dead = jnp.zeros(cluster_size.shape, bool)
    if cfg.restart_after > 0:
        dead |= unused >= cfg.restart_after
    if cfg.threshold > 0:
        dead |= cluster_size < cfg.threshold
    # A batch with no valid vector has no candidates: restart nothing.
    dead &= jnp.sum(stats.counts) > 0

    cand = stats.candidates
    embed = jnp.where(dead[:, None], cand, embed)
    embed_avg = jnp.where(dead[:, None], cand * cfg.restart_count, embed_avg)
    cluster_size = jnp.where(dead, cfg.restart_count, cluster_size)
    unused = jnp.where(dead, 0, unused)
    return EMAState(embed, embed_avg, cluster_size, unused), dead

"""Optimal-transport conditional flow matching (SPEC section 4): the training loss and the Euler sampler.

Training: z ~ N(0, I), t ~ U(0, 1), x_t = (1 - (1 - s) t) z + t x1, target u = x1 - (1 - s) z, s = sigma_min;
the loss is the squared error of v(x_t, mu, t) against u summed over VALID frames and bins (the caller
divides by the global count, so the loss is additive over micro-batches). With probability `cfg_dropout`
a sample's mu is zeroed, which teaches the same network the unconditional field for guidance.
With `model.train_masks` the loss also gets per-sample attention chunk sizes [B] (drawn by
`FlowDecoder.loss_sums`), which it hands to the field: v(x_t, mu', t, valid, chunks).

Sampling: t_k = 1 - cos(k / N * pi / 2) (dense near t = 0, where the field changes fastest), N Euler steps
x <- x + (t_{k+1} - t_k) v, with v = (1 + g) v(x, mu) - g v(x, 0). The conditional and unconditional
evaluations run as ONE estimator call on a batch of 2B. Noise comes from an explicit key, so a fixed key
gives the same mel bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

# v(x [B, T, 80], mu [B, T, 80], t [B], valid bool [B, T]) -> [B, T, 80] fp32
Field = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


def time_grid(steps: int) -> np.ndarray:
    """The cosine grid [steps + 1], float32, from exactly 0.0 to exactly 1.0, strictly increasing."""
    if steps < 1:
        raise ValueError(f"the sampler needs at least one Euler step, got {steps}")
    grid = 1.0 - np.cos(np.linspace(0.0, 1.0, steps + 1) * np.pi / 2)
    grid[0], grid[-1] = 0.0, 1.0       # cos(pi/2) is 6e-17 in float64: pin the end points exactly
    return grid.astype(np.float32)


def sample_t(rng: jax.Array, batch: int, schedule: str) -> jax.Array:
    t = jax.random.uniform(rng, (batch,), jnp.float32)
    if schedule == "cosine":           # the released CosyVoice code; the SPEC (default) is uniform
        return 1.0 - jnp.cos(t * 0.5 * jnp.pi)
    if schedule != "uniform":
        raise ValueError(f"model.t_schedule must be 'uniform' or 'cosine', got {schedule!r}")
    return t


def interpolate(x1: jax.Array, z: jax.Array, t: jax.Array, sigma_min: float) -> tuple[jax.Array, jax.Array]:
    """(x_t, u) of the OT path for targets x1, noise z [B, T, C] and times t [B], in fp32."""
    x1, z = x1.astype(jnp.float32), z.astype(jnp.float32)
    tb = t.astype(jnp.float32)[:, None, None]
    return (1.0 - (1.0 - sigma_min) * tb) * z + tb * x1, x1 - (1.0 - sigma_min) * z


def cfm_loss_sum(field: Field, x1: jax.Array, mu: jax.Array, valid: jax.Array, rng: jax.Array, *,
                 sigma_min: float, cfg_dropout: float, t_schedule: str = "uniform",
                 chunks: jax.Array | None = None) -> jax.Array:
    """Sum over valid frames and bins of (v(x_t, mu', t) - u)^2, fp32 scalar (mu' = mu or 0 per sample).

    `chunks` int32 [B] (mask-mixture training): per-sample attention chunk sizes passed to the field as a
    fifth argument; None calls the field with four (the fixed block-causal mask)."""
    k_t, k_z, k_drop = jax.random.split(rng, 3)
    b = x1.shape[0]
    t = sample_t(k_t, b, t_schedule)
    z = jax.random.normal(k_z, x1.shape, jnp.float32)
    x_t, u = interpolate(x1, z, t, sigma_min)
    keep = jax.random.uniform(k_drop, (b,)) >= cfg_dropout
    mu = jnp.where(keep[:, None, None], mu, 0.0)
    m = valid[..., None]
    x_t = jnp.where(m, x_t, 0.0)       # padding carries no noise (the estimator masks it anyway)
    v = field(x_t, mu, t, valid) if chunks is None else field(x_t, mu, t, valid, chunks)
    return jnp.sum(jnp.where(m, jnp.square(v.astype(jnp.float32) - u), 0.0))


def euler_sample(field: Field, mu: jax.Array, valid: jax.Array, noise: jax.Array, *, steps: int,
                 guidance: float) -> jax.Array:
    """Integrates dx/dt = v from x_0 = noise over the cosine grid; returns x_1 [B, T, C] fp32 (masked)."""
    grid = jnp.asarray(time_grid(steps))
    b = mu.shape[0]
    m = valid[..., None]
    mu2 = jnp.concatenate([mu, jnp.zeros_like(mu)], axis=0)    # conditional rows, then unconditional rows
    valid2 = jnp.concatenate([valid, valid], axis=0)

    def step(x, ts):
        t, dt = ts
        v2 = field(jnp.concatenate([x, x], axis=0), mu2, jnp.full((2 * b,), t), valid2)
        v = (1.0 + guidance) * v2[:b] - guidance * v2[b:]
        return x + dt * v, None

    x0 = jnp.where(m, noise.astype(jnp.float32), 0.0)
    x1, _ = jax.lax.scan(step, x0, (grid[:-1], grid[1:] - grid[:-1]))
    return jnp.where(m, x1, 0.0)

"""The flow decoder (SPEC section 4): Pre-Net prior + CFM estimator, its losses and its sampler.

    conditioning [B, Tc, D] --Pre-Net--> mu [B, T, 80] --(Euler, guided CFM)--> mel [B, T, 80] (24 kHz, 50 Hz)

Parameter paths: prenet.{in_proj, in_out, layers.layers.*, final_norm, out_proj},
estimator.{time_in, time_out, down.*, down_conv, mid.layers.*, up.*, up_conv, final_block, final_proj}.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from bajax.flow import cfm
from bajax.flow.estimator import Estimator
from bajax.flow.prenet import PreNet, length_mask

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str):
    if name not in _DTYPES:
        raise ValueError(f"model.dtype must be one of {sorted(_DTYPES)}, got {name!r}")
    return _DTYPES[name]


class FlowDecoder(nnx.Module):
    def __init__(self, cfg, *, rngs: nnx.Rngs):
        dtype = compute_dtype(cfg.dtype)
        self.n_mels = int(cfg.n_mels)
        # Static (non-parameter) settings read by the loss and the sampler.
        self.sigma_min, self.cfg_dropout = float(cfg.sigma_min), float(cfg.cfg_dropout)
        self.t_schedule = str(cfg.t_schedule)
        self.sample_steps, self.guidance = int(cfg.sample_steps), float(cfg.guidance)
        self.temperature = float(cfg.temperature)
        self.prenet = PreNet(cfg, dtype, rngs=rngs)
        self.estimator = Estimator(cfg, dtype, rngs=rngs)

    def prior(self, cond, cond_lengths, mel_lengths, length: int) -> jax.Array:
        """mu [B, length, n_mels] fp32 from conditioning [B, Tc, D]."""
        return self.prenet(cond, cond_lengths, mel_lengths, length)

    def loss_sums(self, cond, cond_lengths, mel, mel_lengths, rng) -> dict:
        """Sums over valid frames x bins (fp32): 'cfm' squared error and 'prior' absolute error of mu."""
        length = mel.shape[1]
        valid = length_mask(mel_lengths, length)
        mu = self.prior(cond, cond_lengths, mel_lengths, length)
        target = mel.astype(jnp.float32)
        prior = jnp.sum(jnp.where(valid[..., None], jnp.abs(mu - target), 0.0))
        flow = cfm.cfm_loss_sum(self.estimator, target, mu, valid, rng, sigma_min=self.sigma_min,
                                cfg_dropout=self.cfg_dropout, t_schedule=self.t_schedule)
        return {"cfm": flow, "prior": prior}

    def sample(self, cond, cond_lengths, mel_lengths, length: int, rng: jax.Array, *,
               steps: int | None = None, guidance: float | None = None,
               temperature: float | None = None) -> jax.Array:
        """A mel [B, length, n_mels] fp32, zero past mel_lengths; the same `rng` gives the same mel."""
        steps = self.sample_steps if steps is None else steps
        guidance = self.guidance if guidance is None else guidance
        temperature = self.temperature if temperature is None else temperature
        mu = self.prior(cond, cond_lengths, mel_lengths, length)
        noise = temperature * jax.random.normal(rng, mu.shape, jnp.float32)
        valid = length_mask(mel_lengths, length)
        return cfm.euler_sample(self.estimator, mu, valid, noise, steps=steps, guidance=guidance)

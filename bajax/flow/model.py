"""The flow decoder (SPEC section 4): Pre-Net prior + CFM estimator, its losses and its sampler.

    conditioning [B, Tc, D] --Pre-Net--> mu [B, T, 80] --(Euler, guided CFM)--> mel [B, T, 80] (24 kHz, 50 Hz)

Parameter paths: prenet.{in_proj, in_out, layers.layers.*, final_norm, out_proj},
estimator.{time_in, time_out, down.*, down_conv, mid.layers.*, up.*, up_conv, final_block, final_proj}.

Mask-mixture training (`model.train_masks`, e.g. "full,causal,chunk,chunk2"; see bajax/flow/config.py):
`loss_sums` draws one attention mask per sample from the listed choices (key: the loss rng folded with a
fixed constant, so the CFM noise, t and dropout draws are the same as without the flag) and the estimator's
transformer blocks attend with it. Empty (the default) keeps the fixed block-causal chunk; `sample` always
uses the fixed chunk.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from bajax.flow import cfm
from bajax.flow.attention import FULL_CHUNK
from bajax.flow.estimator import Estimator
from bajax.flow.prenet import PreNet, length_mask

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


_MASK_STREAM = 0x6D61736B           # fold_in constant of the mask draw's key ("mask")


def train_mask_choices(spec: str, chunk: int) -> tuple[tuple[int, ...], tuple[float, ...]] | None:
    """Parses `model.train_masks` into (chunk sizes, probabilities), or None for "" (the fixed chunk).

    Comma-separated entries `name` or `name:weight`; name is 'full' (FULL_CHUNK: bidirectional), 'causal'
    (1), 'chunk' (`chunk` = model.chunk), 'chunk2' (2 x chunk) or a positive integer (that many frames).
    Weights default to 1 and are normalised: "full,causal,chunk,chunk2" draws each with probability 1/4."""
    spec = spec.strip()
    if not spec:
        return None
    named = {"full": FULL_CHUNK, "causal": 1, "chunk": chunk, "chunk2": 2 * chunk}
    sizes, weights = [], []
    for entry in spec.split(","):
        name, _, weight = entry.strip().partition(":")
        name = name.strip()
        if name in named:
            size = named[name]
        elif name.isdigit() and int(name) >= 1:
            size = int(name)
        else:
            raise ValueError(f"model.train_masks: unknown mask {name!r} in {spec!r}; use full, causal, chunk, "
                             "chunk2 or a positive number of frames, optionally with ':weight'")
        try:
            w = float(weight) if weight.strip() else 1.0
        except ValueError:
            raise ValueError(f"model.train_masks: weight {weight!r} of {name!r} is not a number") from None
        if not w > 0:
            raise ValueError(f"model.train_masks: weight of {name!r} must be > 0, got {w}")
        sizes.append(min(size, FULL_CHUNK))
        weights.append(w)
    total = sum(weights)
    return tuple(sizes), tuple(w / total for w in weights)


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
        self.train_masks = train_mask_choices(str(cfg.get("train_masks", "")), int(cfg.chunk))
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
                                cfg_dropout=self.cfg_dropout, t_schedule=self.t_schedule,
                                chunks=self.train_chunks(rng, mel.shape[0]))
        return {"cfm": flow, "prior": prior}

    def train_chunks(self, rng: jax.Array, batch: int) -> jax.Array | None:
        """Per-sample attention chunk sizes int32 [batch] drawn for `model.train_masks`; None when it is empty."""
        if self.train_masks is None:
            return None
        sizes, probs = self.train_masks
        idx = jax.random.choice(jax.random.fold_in(rng, _MASK_STREAM), len(sizes), (batch,),
                                p=jnp.asarray(probs, jnp.float32))
        return jnp.asarray(sizes, jnp.int32)[idx]

    def sample(self, cond, cond_lengths, mel_lengths, length: int, rng: jax.Array, *,
               steps: int | None = None, guidance: float | None = None,
               temperature: float | None = None, noise: jax.Array | None = None) -> jax.Array:
        """A mel [B, length, n_mels] fp32, zero past mel_lengths; the same `rng` gives the same mel. `noise`
        [B, length, n_mels] (temperature included) replaces the draw from `rng`."""
        steps = self.sample_steps if steps is None else steps
        guidance = self.guidance if guidance is None else guidance
        temperature = self.temperature if temperature is None else temperature
        mu = self.prior(cond, cond_lengths, mel_lengths, length)
        if noise is None:
            noise = temperature * jax.random.normal(rng, mu.shape, jnp.float32)
        valid = length_mask(mel_lengths, length)
        return cfm.euler_sample(self.estimator, mu, valid, noise, steps=steps, guidance=guidance)

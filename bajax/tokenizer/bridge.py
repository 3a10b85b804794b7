"""The 4x bridge between the Whisper encoder (50 Hz) and the RVQ (12.5 Hz), and the replacement curriculum.

    g, u = gate_proj(x), up_proj(x)             Conv1d d -> 4d, kernel 4, stride 4, no bias
    xr   = 4 consecutive frames concatenated    [B, T/4, 4d]
    res  = LayerNorm(down_proj(silu(g) * u) + xr)
    RVQ on res; decoder input = proj_decoder(quantised) (Linear 4d -> d with bias).

Progressive replacement (paper 3.1, instance level): during training a sample's decoder input is the VQ
output with probability `replace_fraction(step)` (rising 10% -> 100%), otherwise the un-quantised `res`;
the RVQ itself (codes, EMA, commitment) always sees every sample.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from bajax.layers.conv import Conv1d
from bajax.layers.linear import Linear
from bajax.layers.norms import LayerNorm
from bajax.sharding import constrain
from bajax.tokenizer.rvq import ResidualVQ


def ramp(step, start: float, end: float, begin: int, steps: int) -> jax.Array:
    """Linear schedule: `start` until step `begin`, then linearly to `end` over `steps` steps, then `end`."""
    if steps <= 0:
        return jnp.where(jnp.asarray(step) >= begin, end, start).astype(jnp.float32)
    frac = jnp.clip((jnp.asarray(step, jnp.float32) - begin) / steps, 0.0, 1.0)
    return (start + (end - start) * frac).astype(jnp.float32)


def code_lengths(enc_lengths: jax.Array, pool: int = 4) -> jax.Array:
    """Code frames per utterance (SPEC section 1): only complete groups of `pool` encoder frames."""
    return enc_lengths // pool


class Bridge(nnx.Module):
    """Down-sampling bridge + RVQ + proj_decoder; parameter names follow the reference's bridge."""

    def __init__(self, d_model: int, pool: int, rvq, *, replace=None, dtype=jnp.float32, rngs: nnx.Rngs):
        """`rvq`: the `model.rvq` config section; `replace`: `model.replace` (None = always the VQ output)."""
        width = d_model * pool
        self.pool, self.width, self.dtype = pool, width, dtype
        self.replace = None if replace is None else (float(replace.start), float(replace.end),
                                                     int(replace.begin), int(replace.steps))
        self.gate_proj = Conv1d(d_model, width, pool, stride=pool, use_bias=False, dtype=dtype, rngs=rngs)
        self.up_proj = Conv1d(d_model, width, pool, stride=pool, use_bias=False, dtype=dtype, rngs=rngs)
        self.down_proj = Linear(width, width, axes=("mlp", "code_dim"), dtype=dtype, rngs=rngs)
        self.layer_norm = LayerNorm(width, eps=1e-5)
        self.rvq = ResidualVQ.from_config(rvq, width, rngs=rngs)
        self.proj_decoder = Linear(width, d_model, axes=("code_dim", "embed"), use_bias=True, dtype=dtype,
                                   rngs=rngs)

    def features(self, x: jax.Array, enc_lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Encoder output x [B, T, d] -> (res [B, ceil(T/pool), pool*d] fp32, code mask [B, ceil(T/pool)])."""
        b, t, d = x.shape
        pad = -t % self.pool
        x = jnp.pad(x, ((0, 0), (0, pad), (0, 0)))                     # zeros, as the reference
        xr = x.reshape(b, (t + pad) // self.pool, self.pool * d).astype(self.dtype)
        h = jax.nn.silu(self.gate_proj(x)) * self.up_proj(x)
        h = constrain(h, ("batch", "length", "mlp"))
        res = self.layer_norm((self.down_proj(h) + xr).astype(jnp.float32))
        res = constrain(res, ("batch", "length", "code_dim"))
        mask = jnp.arange(res.shape[1])[None, :] < code_lengths(enc_lengths, self.pool)[:, None]
        return res, mask

    def replace_fraction(self, step) -> jax.Array:
        """Fraction of samples whose decoder input is the VQ output at this training step."""
        if self.replace is None:
            return jnp.float32(1.0)
        return ramp(step, *self.replace)

    def __call__(self, x: jax.Array, enc_lengths: jax.Array, *, train: bool = False,
                 rng: jax.Array | None = None, step=0):
        """-> (decoder input [B, T', d], code mask [B, T'], codes [B, T', n], metrics dict).

        Train: the RVQ training call (EMA update etc.) and the instance-level replacement curriculum.
        Eval: greedy codes, every sample takes the VQ output.
        """
        return self.forward(x, enc_lengths, train=train, rng=rng, step=step)[:4]

    def forward(self, x: jax.Array, enc_lengths: jax.Array, *, train: bool = False,
                rng: jax.Array | None = None, step=0):
        """`__call__`'s outputs plus the straight-through VQ output of EVERY sample [B, T', pool*d] (fp32),
        whatever the replacement curriculum chose: the text-alignment loss reads the quantised features."""
        res, mask = self.features(x, enc_lengths)
        if train:
            if rng is None:
                raise ValueError("Bridge(train=True) needs an rng key")
            vq_rng, pick_rng = jax.random.split(jax.random.fold_in(rng, 1))
            quantized, codes, metrics = self.rvq(res, mask, train=True, rng=vq_rng, step=step)
            frac = self.replace_fraction(step)
            use_vq = jax.random.bernoulli(jax.random.fold_in(pick_rng, jnp.asarray(step, jnp.uint32)), frac,
                                          (res.shape[0],))
            mixed = jnp.where(use_vq[:, None, None], quantized, res)
            metrics = dict(metrics, replace_fraction=frac, replaced=jnp.mean(use_vq.astype(jnp.float32)))
        else:
            quantized, codes, metrics = self.rvq(res, mask, train=False)
            mixed = quantized
        out = self.proj_decoder(jnp.where(mask[..., None], mixed, 0.0))
        return constrain(out, ("batch", "length", "embed")), mask, codes, metrics, quantized

    def encode(self, x: jax.Array, enc_lengths: jax.Array, n_layers: int | None = None, norms=None):
        """Greedy codes [B, T', n] (-1 at padding) and their mask; `norms`: see ResidualVQ.codebook_norms."""
        res, mask = self.features(x, enc_lengths)
        return self.rvq.encode(res, mask, n_layers, norms), mask

    def decode(self, codes: jax.Array) -> jax.Array:
        """Codes [B, T', m] (m <= n, -1 = padding) -> decoder input [B, T', d]."""
        q = self.rvq.decode(codes)
        return jnp.where((codes[..., :1] >= 0), self.proj_decoder(q), 0.0)

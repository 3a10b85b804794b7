"""The neural-source-filter excitation (SineGen + SourceModuleHnNSF of the reference generator).

From f0 at the sample rate (the predicted 50 Hz f0 repeated 480 times, torch's nearest Upsample):

    F[n, h]  = f0[n] * (h + 1) / sr                       h = 0 .. nb_harmonics
    theta    = 2 pi * (cumsum_n F % 1)
    sine     = alpha * sin(theta + phi_h)                  phi_0 = 0, phi_h ~ U(-pi, pi) per utterance
    uv       = f0 > voiced_threshold
    sines    = sine * uv + (uv * sigma + (1 - uv) * alpha / 3) * N(0, 1)
    source   = tanh(Linear(nb_harmonics + 1 -> 1)(sines))

No gradient reaches f0 through the source (the reference builds `sines` under torch.no_grad); the merging
Linear trains. The reference's module also draws a second noise (`randn_like(uv) * alpha / 3`) that the
generator discards; it is not drawn here.

The phase is the delicate part. The cumulative sum runs over every sample (9600 for a 0.4 s clip) and
reaches hundreds of cycles for the upper harmonics, where float32 keeps only ~1e-4 of a cycle; a plain
float32 cumsum drifts by far more (it sums left to right, or pairwise in XLA). Torch's CPU cumsum
accumulates in double and rounds each prefix to float32, so `phase_cumsum` computes the same: a
parallel prefix sum of float-float pairs (hi + lo, Knuth's TwoSum), which is exact to ~2^-44 relative,
rounded to float32. Then `% 1` is exact, and the result equals torch's prefix sums bit for bit. That
needs the same per-sample increments too: XLA:CPU divides through a reciprocal, one float32 ulp off for
~1 in 8 values (enough to drift 1e-4 of a cycle over two seconds), so `f0 * (h + 1) / sr` is divided with
one exact-residual correction step (`divide`), which gives the correctly rounded quotient as torch does.

Randomness comes only from an explicit key (`draw_source_noise`); a `SourceNoise` can also be passed in
directly, so a test can feed the same phases and noise to the PyTorch reference.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bajax.vocoder.layers import Linear


class SourceNoise(NamedTuple):
    """The random draws of one forward pass (torch layout in comments)."""
    phase: jax.Array   # [B, H + 1] initial phase of each harmonic in radians, U(-pi, pi); column 0 is set to 0
    noise: jax.Array   # [B, L, H + 1] standard normal, before scaling by the voiced/unvoiced amplitude
    #                    (torch: phase_vec [B, H + 1, 1], randn_like(sine_waves) [B, H + 1, L])
    # [B, H + 1] cycles each harmonic has already turned before this signal's first sample, when it continues
    # an earlier one (a streamed window, bajax.speech.stream); None: the signal starts here (the reference).
    offset: jax.Array | None = None


def draw_source_noise(key: jax.Array, batch: int, length: int, harmonics: int) -> SourceNoise:
    """Phases and noise for `batch` signals of `length` samples with `harmonics` + 1 sine channels."""
    k_phase, k_noise = jax.random.split(key)
    phase = jax.random.uniform(k_phase, (batch, harmonics + 1), jnp.float32, -np.pi, np.pi)
    noise = jax.random.normal(k_noise, (batch, length, harmonics + 1), jnp.float32)
    return SourceNoise(phase, noise)


def frame_source_noise(key: jax.Array, start, frames: int, hop: int, harmonics: int,
                       offset: jax.Array | None = None) -> SourceNoise:
    """The draws of mel frames [start, start + frames) of ONE signal: the phases from `key`, each frame's
    noise from fold_in(key, frame), so a frame's draws do not depend on which window it is synthesised in
    (a streamed window then gets the noise the whole utterance gives its frames)."""
    k_phase, k_noise = jax.random.split(key)
    phase = jax.random.uniform(k_phase, (1, harmonics + 1), jnp.float32, -np.pi, np.pi)
    index = start + jnp.arange(frames)
    noise = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(k_noise, i), (hop, harmonics + 1),
                                                 jnp.float32))(index)
    return SourceNoise(phase, noise.reshape(1, frames * hop, harmonics + 1), offset)


def _two_sum(a, b):
    """s + e == a + b exactly, s = fl(a + b) (Knuth)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _add_pairs(x, y):
    """(hi, lo) + (hi, lo) in float-float arithmetic, renormalised so that hi = fl(hi + lo)."""
    s, e = _two_sum(x[0], y[0])
    e = e + (x[1] + y[1])
    hi = s + e
    return hi, e - (hi - s)


def _split(a):
    """Veltkamp split of float32: hi has at most 12 significant bits, hi + lo == a."""
    c = 4097.0 * a
    hi = c - (c - a)
    return hi, a - hi


def _two_product(a, b):
    """p + e == a * b exactly, p = fl(a * b) (Dekker, no fused multiply-add needed)."""
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def divide(a: jax.Array, b: float) -> jax.Array:
    """float32 a / b correctly rounded (IEEE division) on backends whose division is not: the quotient
    plus the exact residual a - q b divided by b."""
    b = jnp.float32(b)
    q = a / b
    p, e = _two_product(q, b)
    return q + ((a - p) - e) / b


def phase_cumsum(x: jax.Array, axis: int) -> jax.Array:
    """float32 prefix sums along `axis`, each the correctly rounded float32 of the (near-)exact sum, as
    torch's CPU cumsum (double accumulator) gives them."""
    x = x.astype(jnp.float32)
    hi, _ = jax.lax.associative_scan(_add_pairs, (x, jnp.zeros_like(x)), axis=axis)
    return hi


def sine_source(f0: jax.Array, draws: SourceNoise, *, harmonics: int, sampling_rate: float,
                sine_amp: float, noise_std: float, voiced_threshold: float) -> jax.Array:
    """f0 [B, L] in Hz at the sample rate -> sines [B, L, H + 1] (SineGen's `sine_waves`)."""
    f0 = f0.astype(jnp.float32)
    mult = jnp.arange(1, harmonics + 2, dtype=jnp.float32)
    freq = divide(f0[..., None] * mult, sampling_rate)               # cycles per sample, [B, L, H + 1]
    theta = 2 * np.pi * (phase_cumsum(freq, axis=1) % 1)
    phase = draws.phase.astype(jnp.float32).at[:, 0].set(0.0)
    if draws.offset is not None:    # a continued signal: every harmonic (the fundamental too) is that far on
        phase = phase + 2 * np.pi * draws.offset.astype(jnp.float32)
    sine = sine_amp * jnp.sin(theta + phase[:, None, :])
    uv = (f0 > voiced_threshold).astype(jnp.float32)[..., None]
    noise_amp = uv * noise_std + (1 - uv) * sine_amp / 3
    return sine * uv + noise_amp * draws.noise.astype(jnp.float32)


class SourceModuleHnNSF(nnx.Module):
    """Harmonic-plus-noise source: f0 [B, L] -> excitation [B, L] in (-1, 1)."""

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        self.harmonics = int(cfg.nb_harmonics)
        self.sampling_rate = float(cfg.sampling_rate)
        self.sine_amp, self.noise_std = float(cfg.nsf_alpha), float(cfg.nsf_sigma)
        self.voiced_threshold = float(cfg.nsf_voiced_threshold)
        self.l_linear = Linear(self.harmonics + 1, 1, rngs=rngs)        # merges the harmonics (fp32)

    def __call__(self, f0: jax.Array, draws: SourceNoise) -> jax.Array:
        sines = sine_source(jax.lax.stop_gradient(f0), draws, harmonics=self.harmonics,
                            sampling_rate=self.sampling_rate, sine_amp=self.sine_amp,
                            noise_std=self.noise_std, voiced_threshold=self.voiced_threshold)
        return jnp.tanh(self.l_linear(sines)[..., 0])

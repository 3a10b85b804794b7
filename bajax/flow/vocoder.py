"""Vocoders: 24 kHz log-mel [T, 80] -> waveform [T * 480].

`Vocoder` is the interface speech generation uses: `sample_rate`, `hop` and `__call__(mel) -> wave`.
`GriffinLim` is the weight-free default (SPEC section 4): it inverts the mel of `bajax.audio.mel.flow_mel_24k`
(natural log, magnitude, Slaney filters to 8 kHz, Hann window n_fft 1920, hop 480, not centred) by
  1. exp, then the pseudo-inverse of the mel filterbank, clamped at 0, as the linear magnitude S [T, 961];
  2. fast Griffin-Lim (Perraudin et al. 2013; librosa's momentum form): alternate ISTFT / STFT, keeping
     S and updating only the phase, with momentum 0.99 and a seeded random initial phase.
Output length is exactly frames x hop (the analysis pads (n_fft - hop) / 2 on each side, so frame t is
centred on samples [t * hop, (t + 1) * hop)). Bins above fmax have no filter and stay silent.

A neural vocoder (CosyVoice-2's HiFT: NSF HiFi-GAN + iSTFT, upsample [8, 5, 3], iSTFT n_fft 16 hop 4 = 480
samples per frame) implements the same interface: a class with `sample_rate = 24000`, `hop = 480` and a
`__call__` that runs its generator on the mel, loading weights from a user-supplied file.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np

from bajax.audio.mel import hann_window, mel_filterbank


class Vocoder(Protocol):
    sample_rate: int
    hop: int

    def __call__(self, mel) -> np.ndarray:
        """mel [T, n_mels] (natural-log magnitude mel) -> float32 waveform [T * hop] in [-1, 1]-ish."""


def _overlap_add(frames: jax.Array, hop: int) -> jax.Array:
    """[T, n_fft] -> [(T - 1) * hop + n_fft]; n_fft must be a multiple of hop (slices, no scatter)."""
    t, n = frames.shape
    k = n // hop
    out = jnp.zeros((t + k - 1, hop), frames.dtype)
    for j in range(k):
        out = out.at[j:j + t].add(frames[:, j * hop:(j + 1) * hop])
    return out.reshape(-1)


def _frame(signal: jax.Array, n_frames: int, n_fft: int, hop: int) -> jax.Array:
    """[(T - 1) * hop + n_fft] -> [T, n_fft] (frame t = samples [t * hop, t * hop + n_fft))."""
    blocks = signal.reshape(-1, hop)
    return jnp.concatenate([blocks[j:j + n_frames] for j in range(n_fft // hop)], axis=1)


@functools.partial(jax.jit, static_argnames=("n_fft", "hop", "n_iter"))
def _griffin_lim(mag, angles, window, *, n_fft: int, hop: int, n_iter: int, momentum: float):
    """Magnitude [T, F], initial unit phases [T, F] -> padded signal [(T - 1) * hop + n_fft]."""
    n_frames = mag.shape[0]
    # Window-square envelope for the least-squares ISTFT (Griffin & Lim 1984, eq. 6).
    env = _overlap_add(jnp.broadcast_to(window**2, (n_frames, n_fft)), hop)
    env = jnp.where(env > 1e-8, env, 1.0)

    def istft(spec):
        return _overlap_add(jnp.fft.irfft(spec, n=n_fft, axis=-1) * window, hop) / env

    def stft(signal):
        return jnp.fft.rfft(_frame(signal, n_frames, n_fft, hop) * window, axis=-1)

    def body(_, carry):
        angles, prev = carry
        rebuilt = stft(istft(mag * angles))
        accel = rebuilt - (momentum / (1.0 + momentum)) * prev
        return accel / (jnp.abs(accel) + 1e-16), rebuilt

    angles, _ = jax.lax.fori_loop(0, n_iter, body, (angles, jnp.zeros_like(angles)))
    return istft(mag * angles)


@dataclasses.dataclass(frozen=True)
class GriffinLim:
    sample_rate: int = 24000
    hop: int = 480
    n_fft: int = 1920
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float = 8000.0
    n_iter: int = 32
    momentum: float = 0.99
    seed: int = 0

    def magnitude(self, mel) -> jax.Array:
        """Linear magnitude [T, n_fft // 2 + 1] from a natural-log mel [T, n_mels] (pseudo-inverse, >= 0)."""
        fb = mel_filterbank(self.n_fft // 2 + 1, self.n_mels, self.sample_rate, self.fmin, self.fmax)
        inverse = jnp.asarray(np.linalg.pinv(fb), jnp.float32)                # [n_mels, F]
        mel = jnp.asarray(mel, jnp.float32)
        if mel.ndim != 2 or mel.shape[1] != self.n_mels:
            raise ValueError(f"Griffin-Lim expects a mel [frames, {self.n_mels}], got shape {mel.shape}")
        return jnp.maximum(jnp.matmul(jnp.exp(mel), inverse, precision="highest"), 0.0)

    def invert(self, mag, n_iter: int | None = None) -> np.ndarray:
        """Waveform [T * hop] whose STFT magnitude approximates `mag` [T, F]."""
        if self.n_fft % self.hop:
            raise ValueError(f"Griffin-Lim needs n_fft ({self.n_fft}) to be a multiple of hop ({self.hop})")
        mag = jnp.asarray(mag, jnp.float32)
        phase = jax.random.uniform(jax.random.key(self.seed), mag.shape, jnp.float32) * 2 * np.pi
        window = jnp.asarray(hann_window(self.n_fft), jnp.float32)
        signal = _griffin_lim(mag, jnp.exp(1j * phase), window, n_fft=self.n_fft, hop=self.hop,
                              n_iter=self.n_iter if n_iter is None else n_iter, momentum=self.momentum)
        offset = (self.n_fft - self.hop) // 2                               # the analysis padding
        return np.asarray(signal[offset:offset + mag.shape[0] * self.hop], np.float32)

    def __call__(self, mel, n_iter: int | None = None) -> np.ndarray:
        if np.shape(mel)[0] == 0:
            return np.zeros((0,), np.float32)
        return self.invert(self.magnitude(mel), n_iter)


def spectral_convergence(mag, wave, *, n_fft: int = 1920, hop: int = 480) -> float:
    """||S - |STFT(wave)||| / ||S|| with the flow mel's framing (padded (n_fft - hop) / 2, Hann)."""
    mag = np.asarray(mag, np.float64)
    pad = (n_fft - hop) // 2
    x = np.pad(np.asarray(wave, np.float64), (pad, pad))
    n = mag.shape[0]
    idx = np.arange(n)[:, None] * hop + np.arange(n_fft)[None, :]
    spec = np.abs(np.fft.rfft(x[idx] * hann_window(n_fft), axis=-1))
    return float(np.linalg.norm(mag - spec) / max(np.linalg.norm(mag), 1e-12))

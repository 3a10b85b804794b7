"""torch.stft / torch.istft exactly as the HiFT generator calls them, on time-major arrays.

    stft(x, n_fft, hop)      = torch.stft(x, n_fft, hop, n_fft, window=hann, return_complex=True)
    istft(re, im, n_fft, hop) = torch.istft(re + i im, n_fft, hop, n_fft, window=hann)

i.e. torch's defaults: centred frames (reflect padding of n_fft // 2 on both sides for the STFT; the iSTFT
trims n_fft // 2 samples at both ends), one-sided spectrum, no normalisation, and a least-squares
overlap-add that divides by the summed squared window. The window is scipy's
`get_window('hann', n_fft, fftbins=True)`: the periodic Hann 0.5 - 0.5 cos(2 pi n / n_fft), in float32.

With n_fft 16 the transforms are small matrix products with a cos/sin basis rather than FFTs: exact zeros
where the basis is zero (the imaginary parts of the DC and Nyquist bins are ignored on the way back, as a
C2R FFT does), the same on every backend, and run at HIGHEST precision so TPUs do not drop to bf16 passes.
Lengths: x [B, L] with L a multiple of hop -> L / hop + 1 frames; F frames -> hop * (F - 1) samples.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_HIGHEST = jax.lax.Precision.HIGHEST


def hann_window(n_fft: int) -> np.ndarray:
    """Periodic Hann window [n_fft] in float32 (scipy.signal.get_window('hann', n_fft, fftbins=True))."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


def _basis(n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of 2 pi k n / n_fft, [n_fft, n_fft // 2 + 1] float32, with exact zeros and ones."""
    k = np.arange(n_fft // 2 + 1)
    m = (np.arange(n_fft)[:, None] * k[None, :]) % n_fft            # reduce the angle before cos / sin
    cos, sin = np.cos(2.0 * np.pi * m / n_fft), np.sin(2.0 * np.pi * m / n_fft)
    cos[np.abs(cos) < 1e-12] = 0.0
    sin[np.abs(sin) < 1e-12] = 0.0
    return cos.astype(np.float32), sin.astype(np.float32)


def _check(n_fft: int, hop: int, length: int | None = None) -> None:
    if n_fft % hop:
        raise ValueError(f"STFT n_fft={n_fft} must be a multiple of hop={hop}")
    if length is not None and length % hop:
        raise ValueError(f"STFT input length {length} must be a multiple of hop={hop}")


def _check_nola(n_fft: int, hop: int) -> None:
    """torch.istft refuses windows whose trimmed squared-window overlap-add falls to 1e-11 or below
    (the division by it would blow up); the envelope's edges and interior appear within 2 n_fft / hop
    frames."""
    r = n_fft // hop
    w2 = hann_window(n_fft) ** 2
    env = np.zeros(((2 * r) * hop + n_fft,), np.float32)
    for t in range(2 * r + 1):
        env[t * hop:t * hop + n_fft] += w2
    if env[n_fft // 2:env.size - n_fft // 2].min() <= 1e-11:
        raise ValueError(f"iSTFT with a Hann window of {n_fft} and hop {hop} cannot be inverted "
                         "(the overlapping windows leave gaps); use hop <= n_fft / 2")


def stft(x: jax.Array, n_fft: int, hop: int) -> tuple[jax.Array, jax.Array]:
    """x [B, L] -> (real, imag), each [B, L / hop + 1, n_fft // 2 + 1], in float32."""
    _check(n_fft, hop, x.shape[-1])
    x = jnp.pad(x.astype(jnp.float32), ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")
    r = n_fft // hop
    blocks = x.reshape(x.shape[0], -1, hop)                           # [B, (L + n_fft) / hop, hop]
    n_frames = blocks.shape[1] - r + 1
    # Frame t = samples [t * hop, t * hop + n_fft) = r consecutive blocks side by side.
    frames = jnp.concatenate([blocks[:, j:j + n_frames] for j in range(r)], axis=-1)
    frames = frames * jnp.asarray(hann_window(n_fft))
    cos, sin = _basis(n_fft)
    real = jnp.einsum("bfn,nk->bfk", frames, jnp.asarray(cos), precision=_HIGHEST)
    imag = -jnp.einsum("bfn,nk->bfk", frames, jnp.asarray(sin), precision=_HIGHEST)
    return real, imag


def _overlap_add(frames: jax.Array, hop: int) -> jax.Array:
    """[B, F, n_fft] -> [B, (F - 1) * hop + n_fft]: frame t added at sample t * hop (pads, no scatter)."""
    b, f, n = frames.shape
    r = n // hop
    out = 0.0
    for j in range(r):
        part = frames[:, :, j * hop:(j + 1) * hop]                    # lands in output block t + j
        out = out + jnp.pad(part, ((0, 0), (j, r - 1 - j), (0, 0)))
    return out.reshape(b, -1)


def istft(real: jax.Array, imag: jax.Array, n_fft: int, hop: int) -> jax.Array:
    """(real, imag) [B, F, n_fft // 2 + 1] -> [B, hop * (F - 1)] float32."""
    _check(n_fft, hop)
    _check_nola(n_fft, hop)
    cos, sin = _basis(n_fft)
    # One-sided inverse DFT with torch's 1/n: bins 1 .. n/2-1 count twice (their mirror images).
    weight = np.full((n_fft // 2 + 1,), 2.0, np.float32)
    weight[0] = 1.0
    weight[-1] = 1.0 if n_fft % 2 == 0 else 2.0
    icos = jnp.asarray((cos * weight / n_fft).T)                      # [bins, n_fft]
    isin = jnp.asarray((sin * weight / n_fft).T)
    frames = (jnp.einsum("bfk,kn->bfn", real.astype(jnp.float32), icos, precision=_HIGHEST)
              - jnp.einsum("bfk,kn->bfn", imag.astype(jnp.float32), isin, precision=_HIGHEST))
    window = jnp.asarray(hann_window(n_fft))
    y = _overlap_add(frames * window, hop)
    envelope = _overlap_add(jnp.broadcast_to(window * window, (1,) + frames.shape[1:]), hop)
    half = n_fft // 2
    y, envelope = y[:, half:y.shape[1] - half], envelope[:, half:envelope.shape[1] - half]
    return y / envelope

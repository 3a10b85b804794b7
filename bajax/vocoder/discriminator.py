"""The HiFT vocoder's GAN discriminators: multi-period (MPD) + multi-resolution (MRD), as CosyVoice trains them.

    MultipleDiscriminator(real [B, N], fake [B, N]) -> (d_real, d_fake, fmap_real, fmap_fake)
        lists over the 5 period discriminators, then the 3 resolution discriminators (the reference's order);
        fmap_* [k] is that discriminator's list of feature maps, its final output last.

Layouts are channels-last: an activation the reference holds as torch [B, C, H, W] is [B, H, W, C] here, with
H the time axis (MPD: N / period rows; MRD: STFT frames) and W the period column or the frequency bin. Outputs:
MPD d [B, H * W] (torch's flatten of [B, 1, H, W], same order); DAC MRD d [B, T, F, 1] (torch [B, 1, T, F],
not flattened); spec MRD d [B, T * F]. Every loss is a mean or a median over all elements, so the layout
does not change a loss.

Weight norm is the reference's (torch.nn.utils.weight_norm, dim 0): each conv keeps `weight_g` [out] and
`weight_v` [kh, kw, in, out] as separate parameters and uses w = v * (g / ||v||), the norm over all but the
output dimension; at initialisation g = ||v||. Real and fake waves go through each discriminator as one batch of 2B
(the reference makes two calls): every operation is per example, so the results are the same.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bajax.audio.mel import hann_window
from bajax.vocoder.layers import normed_weight


class WNConv2d(nnx.Module):
    """Weight-normalised 2-D convolution on [B, H, W, C] (torch Conv2d(in, out, kernel, stride, padding)).

    Initialised as torch initialises the reference (kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)) for v and
    the bias, then g = ||v||, so w = v at the start).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: tuple[int, int], stride: tuple[int, int] = (1, 1),
                 padding: tuple[int, int] = (0, 0), *, dtype=jnp.float32, rngs: nnx.Rngs):
        kh, kw = kernel
        self.stride, self.padding, self.dtype = tuple(stride), tuple(padding), dtype
        bound = 1.0 / math.sqrt(kh * kw * in_ch)
        v = jax.random.uniform(rngs.params(), (kh, kw, in_ch, out_ch), jnp.float32, -bound, bound)
        self.weight_v = nnx.Param(v, logical_axes=("kernel", "kernel", "conv_in", "conv_out"))
        self.weight_g = nnx.Param(jnp.sqrt(jnp.sum(v * v, axis=(0, 1, 2))), logical_axes=("conv_out",))
        self.bias = nnx.Param(jax.random.uniform(rngs.params(), (out_ch,), jnp.float32, -bound, bound),
                              logical_axes=("conv_out",))

    def weight(self) -> jax.Array:
        """v * (g / ||v||) in fp32, [kh, kw, in, out]: torch's _weight_norm(v, g, 0) (same order of operations),
        the norm over all but the output dimension, no epsilon."""
        return normed_weight(self.weight_g[...].astype(jnp.float32), self.weight_v[...].astype(jnp.float32), axis=3)

    def __call__(self, x: jax.Array) -> jax.Array:
        ph, pw = self.padding
        y = jax.lax.conv_general_dilated(x.astype(self.dtype), self.weight().astype(self.dtype),
                                         window_strides=self.stride, padding=[(ph, ph), (pw, pw)],
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + self.bias[...].astype(self.dtype)


def _leaky(x: jax.Array, slope: float) -> jax.Array:
    return jax.nn.leaky_relu(x, slope)


def _split(x: jax.Array, b: int) -> tuple[jax.Array, jax.Array]:
    return x[:b], x[b:]


def _pairwise(discs, real: jax.Array, fake: jax.Array):
    """Run each discriminator on real and fake as one batch; the reference's four lists."""
    b = real.shape[0]
    both = jnp.concatenate([real, fake], axis=0)
    d_real, d_fake, fmap_real, fmap_fake = [], [], [], []
    for disc in discs:
        d, fmap = disc(both)
        r, f = _split(d, b)
        d_real.append(r)
        d_fake.append(f)
        fmap_real.append([m[:b] for m in fmap])
        fmap_fake.append([m[b:] for m in fmap])
    return d_real, d_fake, fmap_real, fmap_fake


# -------------------------------------------------------------------------------------------------- STFT


def stft(x: jax.Array, n_fft: int, hop: int, win_length: int) -> jax.Array:
    """torch.stft(x, n_fft, hop, win_length, hann_window(win_length), center=True, pad_mode='reflect',
    normalized=False, onesided=True): complex64 [B, 1 + N // hop, n_fft // 2 + 1] (time-major; torch gives
    [B, F, T]). The window is periodic Hann, zero-padded to n_fft on both sides as torch centres it."""
    x = x.astype(jnp.float32)
    half = n_fft // 2
    if x.shape[-1] <= half:
        raise ValueError(f"STFT with n_fft={n_fft} needs more than {half} samples (reflect padding); "
                         f"got {x.shape[-1]}")
    x = jnp.pad(x, ((0, 0), (half, half)), mode="reflect")
    frames = 1 + (x.shape[-1] - n_fft) // hop
    idx = np.arange(frames)[:, None] * hop + np.arange(n_fft)[None, :]
    left = (n_fft - win_length) // 2
    window = np.zeros(n_fft, np.float32)
    window[left:left + win_length] = hann_window(win_length)
    return jnp.fft.rfft(x[:, idx] * jnp.asarray(window), axis=-1)


def magnitude(spec: jax.Array) -> jax.Array:
    """|spec| with gradient 0 (not NaN) where spec is exactly 0, as torch.abs's (digital silence in a crop)."""
    m2 = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2
    pos = m2 > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, m2, 1.0)), 0.0)


# --------------------------------------------------------------------------------------------------- MPD


class DiscriminatorP(nnx.Module):
    """One period p: the wave (reflect-padded on the right to a multiple of p) folded into [B, N / p, p, 1];
    4 convs (k, 1) stride (s, 1) pad (2, 0), 1 conv (k, 1) stride 1 pad (2, 0), then conv_post (3, 1) pad (1, 0)
    (k 5, s 3, channels 32, 128, 512, 1024, 1024 in the reference);
    leaky ReLU after each conv but the last. Feature maps: all 6 outputs (the last is the logits)."""

    def __init__(self, period: int, channels, kernel: int, stride: int, slope: float, dtype, *, rngs: nnx.Rngs):
        self.period, self.slope = period, slope
        c = (1,) + tuple(channels)
        pad = 2                            # the reference's get_padding(5, 1): fixed, whatever the kernel
        self.convs = nnx.List(
            [WNConv2d(c[i], c[i + 1], (kernel, 1), (stride, 1), (pad, 0), dtype=dtype, rngs=rngs) for i in range(4)]
            + [WNConv2d(c[4], c[5], (kernel, 1), (1, 1), (pad, 0), dtype=dtype, rngs=rngs)])
        self.conv_post = WNConv2d(c[5], 1, (3, 1), (1, 1), (1, 0), dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array):
        b, n = x.shape
        p = self.period
        if n % p:
            x = jnp.pad(x, ((0, 0), (0, p - n % p)), mode="reflect")
        x = x.reshape(b, -1, p)[..., None]
        fmap = []
        for conv in self.convs:
            x = _leaky(conv(x), self.slope)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return x.reshape(b, -1), fmap


class _DiscriminatorSet(nnx.Module):
    """Discriminators that judge the same pair of waves; subclasses build `self.discriminators`."""

    def __call__(self, real: jax.Array, fake: jax.Array):
        return _pairwise(self.discriminators, real, fake)


class MultiPeriodDiscriminator(_DiscriminatorSet):
    def __init__(self, cfg, dtype, *, rngs: nnx.Rngs):
        self.discriminators = nnx.List([
            DiscriminatorP(p, cfg.mpd_channels, cfg.mpd_kernel, cfg.mpd_stride, cfg.lrelu_slope, dtype, rngs=rngs)
            for p in cfg.mpd_periods])


# ------------------------------------------------------------------------------------------ MRD, DAC style


def band_edges(window_length: int, bands) -> list[tuple[int, int]]:
    """The reference's bin ranges: int(fraction * (w // 2 + 1)) for each band edge (float product, then floor)."""
    n_bins = window_length // 2 + 1
    return [(int(lo * n_bins), int(hi * n_bins)) for lo, hi in bands]


class DiscriminatorR(nnx.Module):
    """One FFT size w: wave minus its mean, peak-normalised to 0.8 (x / (max|x| + 1e-9)); centred Hann(w) STFT
    with hop int(w * hop_factor), real and imaginary parts as 2 channels [B, T, F, 2]; 5 frequency bands, each
    through its own 5 convs ((3, 9) s1, three (3, 9) stride (1, 2) in frequency, (3, 3)), leaky ReLU after each;
    bands concatenated along frequency, then conv_post (3, 3). Feature maps: convs 1..4 of every band (band-major,
    20), then the logits [B, T, F', 1]. (The reference's optional bandwidth embedding is unused: num_embeddings
    None.)"""

    def __init__(self, window_length: int, channels: int, hop_factor: float, bands, slope: float, dtype, *,
                 rngs: nnx.Rngs):
        self.window_length, self.hop = window_length, int(window_length * hop_factor)
        self.bands, self.slope = band_edges(window_length, bands), slope
        c = channels

        def stack():
            return nnx.List([WNConv2d(2, c, (3, 9), (1, 1), (1, 4), dtype=dtype, rngs=rngs)]
                            + [WNConv2d(c, c, (3, 9), (1, 2), (1, 4), dtype=dtype, rngs=rngs) for _ in range(3)]
                            + [WNConv2d(c, c, (3, 3), (1, 1), (1, 1), dtype=dtype, rngs=rngs)])

        self.band_convs = nnx.List([stack() for _ in self.bands])
        self.conv_post = WNConv2d(c, 1, (3, 3), (1, 1), (1, 1), dtype=dtype, rngs=rngs)

    def spectrogram(self, x: jax.Array) -> list[jax.Array]:
        x = x.astype(jnp.float32)
        x = x - jnp.mean(x, axis=-1, keepdims=True)
        x = 0.8 * x / (jnp.max(jnp.abs(x), axis=-1, keepdims=True) + 1e-9)
        spec = stft(x, self.window_length, self.hop, self.window_length)
        spec = jnp.stack([jnp.real(spec), jnp.imag(spec)], axis=-1)            # [B, T, F, 2]
        return [spec[:, :, lo:hi] for lo, hi in self.bands]

    def __call__(self, x: jax.Array):
        fmap, outs = [], []
        for band, stack in zip(self.spectrogram(x), self.band_convs, strict=True):
            for i, conv in enumerate(stack):
                band = _leaky(conv(band), self.slope)
                if i > 0:
                    fmap.append(band)
            outs.append(band)
        x = self.conv_post(jnp.concatenate(outs, axis=2))
        fmap.append(x)
        return x, fmap


class MultiResolutionDiscriminator(_DiscriminatorSet):
    def __init__(self, cfg, dtype, *, rngs: nnx.Rngs):
        self.discriminators = nnx.List([
            DiscriminatorR(w, cfg.mrd_channels, cfg.mrd_hop_factor, cfg.mrd_bands, cfg.lrelu_slope, dtype, rngs=rngs)
            for w in cfg.mrd_fft_sizes])


# --------------------------------------------------------------------------------- MRD, CosyVoice spec style


class SpecDiscriminator(nnx.Module):
    """One resolution: |STFT| (fft, hop, Hann(win) centred in the fft; the wave is not normalised) as one
    channel [B, T, F, 1]; the same 5 convs as a DAC band (input 1 channel), leaky ReLU after each, then `out`
    (3, 3). Feature maps: all 6 outputs. Logits flattened [B, T * F']."""

    def __init__(self, fft_size: int, hop: int, win_length: int, channels: int, slope: float, dtype, *,
                 rngs: nnx.Rngs):
        self.fft_size, self.hop, self.win_length, self.slope = fft_size, hop, win_length, slope
        c = channels
        self.discriminators = nnx.List(
            [WNConv2d(1, c, (3, 9), (1, 1), (1, 4), dtype=dtype, rngs=rngs)]
            + [WNConv2d(c, c, (3, 9), (1, 2), (1, 4), dtype=dtype, rngs=rngs) for _ in range(3)]
            + [WNConv2d(c, c, (3, 3), (1, 1), (1, 1), dtype=dtype, rngs=rngs)])
        self.out = WNConv2d(c, 1, (3, 3), (1, 1), (1, 1), dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array):
        y = magnitude(stft(x, self.fft_size, self.hop, self.win_length))[..., None]
        fmap = []
        for conv in self.discriminators:
            y = _leaky(conv(y), self.slope)
            fmap.append(y)
        y = self.out(y)
        fmap.append(y)
        return y.reshape(y.shape[0], -1), fmap


class MultiResSpecDiscriminator(_DiscriminatorSet):
    def __init__(self, cfg, dtype, *, rngs: nnx.Rngs):
        self.discriminators = nnx.List([
            SpecDiscriminator(f, h, w, cfg.spec_channels, cfg.lrelu_slope, dtype, rngs=rngs)
            for f, h, w in zip(cfg.spec_fft_sizes, cfg.spec_hop_sizes, cfg.spec_win_lengths, strict=True)])


# ------------------------------------------------------------------------------------------------- both


class MultipleDiscriminator(nnx.Module):
    """MPD then MRD on the same pair of waves [B, N] (fixed-length crops: no lengths, no masks)."""

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        dtype = jnp.dtype(cfg.dtype)
        self.mpd = MultiPeriodDiscriminator(cfg, dtype, rngs=rngs)
        kinds = {"resolution": MultiResolutionDiscriminator, "spec": MultiResSpecDiscriminator}
        if cfg.mrd not in kinds:
            raise ValueError(f"discriminator mrd={cfg.mrd!r} is not one of {sorted(kinds)}")
        self.mrd = kinds[cfg.mrd](cfg, dtype, rngs=rngs)

    def __call__(self, real: jax.Array, fake: jax.Array):
        if real.shape != fake.shape or real.ndim != 2:
            raise ValueError(f"discriminator wants real and fake waves of one shape [B, N]; got {real.shape} "
                             f"and {fake.shape}")
        out = ([], [], [], [])
        for part in (self.mpd(real, fake), self.mrd(real, fake)):
            for acc, more in zip(out, part, strict=True):
                acc.extend(more)
        return out

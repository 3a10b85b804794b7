"""Analytic forward FLOPs of the HiFT generator and its discriminators (convolutions and linear layers:
2 x taps x in x out per output position; activations, the sine source and the STFTs are left out, < 2%)."""

from __future__ import annotations

import math


def _conv(taps: int, cin: int, cout: int, positions: int) -> float:
    return 2.0 * taps * cin * cout * positions


def generator_flops(m, frames: int) -> float:
    """One row of `frames` mel frames through the generator (config `model`)."""
    base, rates, spec = int(m.base_channels), [int(u) for u in m.upsample_rates], int(m.istft_n_fft) + 2
    flops = _conv(7, m.in_channels, base, frames)                               # conv_pre
    length = frames
    for i, (u, k) in enumerate(zip(rates, m.upsample_kernel_sizes)):
        ch = base // 2 ** (i + 1)
        flops += _conv(int(k), base // 2 ** i, ch, length)                       # transposed: taps per input
        length *= u
        for k2, dils in zip(m.resblock_kernel_sizes, m.resblock_dilation_sizes):
            flops += 2 * len(dils) * _conv(int(k2), ch, ch, length)              # convs1 + convs2
        ks, ds = m.source_resblock_kernel_sizes[i], m.source_resblock_dilation_sizes[i]
        flops += 2 * len(ds) * _conv(int(ks), ch, ch, length)
        stride = math.prod(rates[i + 1:])
        flops += _conv(1 if stride == 1 else 2 * stride, spec, ch, length)       # source_downs
    flops += _conv(7, base // 2 ** len(rates), spec, length)                     # conv_post
    c = int(m.f0_cond_channels)
    flops += _conv(3, m.in_channels, c, frames) + (m.f0_layers - 1) * _conv(3, c, c, frames) + 2.0 * c * frames
    return flops


def _stack2d(cin: int, c: int, frames: int, bins: int) -> tuple[float, int]:
    """A DAC band / CosyVoice spec stack: (3, 9) s1, three (3, 9) stride 2 in frequency, (3, 3)."""
    flops = _conv(27, cin, c, frames * bins)
    for _ in range(3):
        bins = (bins - 1) // 2 + 1
        flops += _conv(27, c, c, frames * bins)
    return flops + _conv(9, c, c, frames * bins), bins


def discriminator_flops(d, samples: int) -> float:
    """One wave of `samples` through every discriminator (config `model.disc`); a GAN pass runs two."""
    flops = 0.0
    ch = (1,) + tuple(int(c) for c in d.mpd_channels)
    for p in d.mpd_periods:
        rows = -(-samples // p)
        for j in range(5):
            if j < 4:
                rows = (rows + 4 - d.mpd_kernel) // d.mpd_stride + 1
            flops += _conv(d.mpd_kernel, ch[j], ch[j + 1], rows * p)
        flops += _conv(3, ch[5], 1, rows * p)
    if d.mrd == "resolution":
        for w in d.mrd_fft_sizes:
            frames, n_bins = samples // int(w * d.mrd_hop_factor) + 1, w // 2 + 1
            out_bins = 0
            for lo, hi in d.mrd_bands:
                f, b = _stack2d(2, d.mrd_channels, frames, int(hi * n_bins) - int(lo * n_bins))
                flops, out_bins = flops + f, out_bins + b
            flops += _conv(9, d.mrd_channels, 1, frames * out_bins)
    else:
        for fft, hop in zip(d.spec_fft_sizes, d.spec_hop_sizes):
            frames = samples // hop + 1
            f, b = _stack2d(1, d.spec_channels, frames, fft // 2 + 1)
            flops += f + _conv(9, d.spec_channels, 1, frames * b)
    return flops

"""HiFTGenerator (HiFT-Net: neural source filter + iSTFTNet; CosyVoice-2's vocoder, Baichuan's
`cosy24k_vocoder`): mel [B, T, 80] -> waveform [B, T * 480] at 24 kHz, and the f0 it predicted [B, T].

    f0      = ConvRNNF0Predictor(mel)                                   [B, T]
    source  = SourceModuleHnNSF(f0 repeated 480 x)                      [B, 480 T]
    s       = STFT(source; n_fft 16, hop 4) as [real | imag]            [B, 120 T + 1, 18]
    x       = conv_pre(mel)                                             weight-normed k7, 80 -> C
    stage i = LeakyReLU(0.1) -> ups[i] (x8, x5, x3; C / 2^(i+1) ch)     [B, 8 T | 40 T | 120 T, .]
              (last stage: reflection pad 1 on the left -> 120 T + 1, the STFT's frame count)
              x += source_resblocks[i](source_downs[i](s))              s strided down by 15, 3, 1
              x  = mean_j resblocks[3 i + j](x)                         kernels 3, 7, 11
    x       = conv_post(LeakyReLU(0.01)(x))                             k7 -> 18
    wave    = clamp(iSTFT(min(exp(x[:9]), 100) * e^(i sin(x[9:]))), +-0.99)

Every ResBlock applies, for each dilation d of (1, 3, 5): x += conv2(snake(conv1_d(snake(x)))).
All convolutions except source_downs are weight-normed (bajax.vocoder.layers). Module and parameter
names follow the reference (conv_pre, ups, source_downs, ...) so bajax/interop/layout_vocoder.py is a
plain listing.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bajax.vocoder import stft
from bajax.vocoder.f0_predictor import ConvRNNF0Predictor
from bajax.vocoder.layers import Conv1d, ConvTranspose1d, Snake
from bajax.vocoder.source import SourceModuleHnNSF, SourceNoise, draw_source_noise


def get_padding(kernel: int, dilation: int = 1) -> int:
    """'same' padding of an odd kernel with dilation."""
    return (kernel * dilation - dilation) // 2


class ResBlock(nnx.Module):
    """HiFi-GAN / BigVGAN residual block with Snake activations."""

    def __init__(self, channels: int, kernel: int, dilations, dtype, *, rngs: nnx.Rngs):
        def conv(d):
            return Conv1d(channels, channels, kernel, dilation=d, padding=get_padding(kernel, d), dtype=dtype,
                          rngs=rngs)

        self.convs1 = nnx.List([conv(int(d)) for d in dilations])
        self.convs2 = nnx.List([conv(1) for _ in dilations])
        self.activations1 = nnx.List([Snake(channels) for _ in dilations])
        self.activations2 = nnx.List([Snake(channels) for _ in dilations])

    def __call__(self, x: jax.Array) -> jax.Array:
        for c1, c2, a1, a2 in zip(self.convs1, self.convs2, self.activations1, self.activations2):
            x = c2(a2(c1(a1(x)))) + x
        return x


def _check(cfg) -> None:
    n = len(cfg.upsample_rates)
    lists = {"upsample_kernel_sizes": n, "source_resblock_kernel_sizes": n,
             "source_resblock_dilation_sizes": n, "resblock_dilation_sizes": len(cfg.resblock_kernel_sizes)}
    for key, want in lists.items():
        if len(cfg[key]) != want:
            raise ValueError(f"model.{key} has {len(cfg[key])} entries; it needs {want} (one per "
                             f"{'upsampling stage' if want == n else 'entry of model.resblock_kernel_sizes'})")
    if cfg.base_channels % 2 ** n:
        raise ValueError(f"model.base_channels={cfg.base_channels} must be divisible by 2^{n} "
                         f"(each of the {n} upsampling stages halves the channels)")


class HiFTGenerator(nnx.Module):
    def __init__(self, cfg, *, rngs: nnx.Rngs):
        _check(cfg)
        dtype = jnp.dtype(cfg.dtype)
        base, rates = int(cfg.base_channels), [int(u) for u in cfg.upsample_rates]
        self.n_fft, self.istft_hop = int(cfg.istft_n_fft), int(cfg.istft_hop)
        self.hop = math.prod(rates) * self.istft_hop                  # samples per mel frame (480)
        self.harmonics = int(cfg.nb_harmonics)
        self.lrelu_slope, self.audio_limit = float(cfg.lrelu_slope), float(cfg.audio_limit)
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        spec = self.n_fft + 2                                          # real and imaginary bins

        self.m_source = SourceModuleHnNSF(cfg, rngs=rngs)
        self.conv_pre = Conv1d(int(cfg.in_channels), base, 7, padding=3, dtype=dtype, rngs=rngs)
        self.ups = nnx.List([
            ConvTranspose1d(base // 2 ** i, base // 2 ** (i + 1), int(k), stride=u, padding=(int(k) - u) // 2,
                            dtype=dtype, rngs=rngs)
            for i, (u, k) in enumerate(zip(rates, cfg.upsample_kernel_sizes))])
        # The source spectrum (at the last stage's rate) is strided down to each stage's rate.
        down = np.cumprod([1] + rates[::-1][:-1])[::-1]                # (15, 3, 1) for (8, 5, 3)
        downs, source_blocks = [], []
        for i, (u, k, d) in enumerate(zip(down, cfg.source_resblock_kernel_sizes,
                                          cfg.source_resblock_dilation_sizes)):
            ch, u = base // 2 ** (i + 1), int(u)
            downs.append(Conv1d(spec, ch, 1, weight_norm=False, dtype=dtype, rngs=rngs) if u == 1 else
                         Conv1d(spec, ch, 2 * u, stride=u, padding=u // 2, weight_norm=False, dtype=dtype,
                                rngs=rngs))
            source_blocks.append(ResBlock(ch, int(k), d, dtype, rngs=rngs))
        self.source_downs, self.source_resblocks = nnx.List(downs), nnx.List(source_blocks)
        self.resblocks = nnx.List([
            ResBlock(base // 2 ** (i + 1), int(k), d, dtype, rngs=rngs)
            for i in range(len(rates))
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)])
        self.conv_post = Conv1d(base // 2 ** len(rates), spec, 7, padding=3, dtype=dtype, rngs=rngs)
        self.f0_predictor = ConvRNNF0Predictor(cfg, dtype, rngs=rngs)

    def predict_f0(self, mel: jax.Array) -> jax.Array:
        """mel [B, T, 80] -> f0 [B, T] in Hz (the f0 predictor alone, for its loss)."""
        return self.f0_predictor(mel)

    def source(self, f0: jax.Array, key: jax.Array | None, inject: SourceNoise | None = None) -> jax.Array:
        """f0 [B, T] -> excitation [B, T * hop]; the random draws come from `key` unless injected."""
        f0_up = jnp.repeat(f0, self.hop, axis=1)                       # torch's nearest Upsample
        if inject is None:
            if key is None:
                raise ValueError("HiFTGenerator needs a jax.random key (or injected SourceNoise)")
            inject = draw_source_noise(key, f0_up.shape[0], f0_up.shape[1], self.harmonics)
        return self.m_source(f0_up, inject)

    def decode(self, mel: jax.Array, source: jax.Array) -> jax.Array:
        """mel [B, T, 80], excitation [B, T * hop] -> waveform [B, T * hop] float32."""
        real, imag = stft.stft(source, self.n_fft, self.istft_hop)
        s = jnp.concatenate([real, imag], axis=-1)                     # [B, 120 T + 1, n_fft + 2]
        x = self.conv_pre(mel)
        last = len(self.ups) - 1
        for i, up in enumerate(self.ups):
            x = up(jax.nn.leaky_relu(x, self.lrelu_slope))
            if i == last:
                x = jnp.pad(x, ((0, 0), (1, 0), (0, 0)), mode="reflect")
            x = x + self.source_resblocks[i](self.source_downs[i](s))
            first = i * self.num_kernels
            xs = self.resblocks[first](x)
            for j in range(first + 1, first + self.num_kernels):
                xs = xs + self.resblocks[j](x)
            x = xs / self.num_kernels
        x = self.conv_post(jax.nn.leaky_relu(x, 0.01)).astype(jnp.float32)
        bins = self.n_fft // 2 + 1
        magnitude = jnp.minimum(jnp.exp(x[..., :bins]), 1e2)
        phase = jnp.sin(x[..., bins:])                                 # the reference's (redundant) sin
        wave = stft.istft(magnitude * jnp.cos(phase), magnitude * jnp.sin(phase), self.n_fft, self.istft_hop)
        return jnp.clip(wave, -self.audio_limit, self.audio_limit)

    def __call__(self, mel: jax.Array, key: jax.Array | None, *,
                 inject: SourceNoise | None = None) -> tuple[jax.Array, jax.Array]:
        """mel [B, T, 80] float32 -> (waveform [B, T * hop] float32, f0 [B, T] float32)."""
        f0 = self.f0_predictor(mel)
        return self.decode(mel, self.source(f0, key, inject)), f0

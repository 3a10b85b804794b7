"""HiFTGenerator as Baichuan's third_party/cosy24k_vocoder/hifigan/{generator,f0_predictor}.py builds it
(CosyVoice-2's HiFT), in the reference module structure, so `load_state_dict(strict=True)` takes the keys
of hift.pt (`conv_pre.weight_g`, `ups.0.weight_v`, `f0_predictor.condnet.0.bias`, ...).

Weight norm is the reference's `torch.nn.utils.weight_norm` (keys `*.weight_g` / `*.weight_v`). The
reference's `init_weights` is kept although it has no effect on weight-normed convs (see
bajax/vocoder/layers.py). The reference takes `scipy.signal.get_window('hann', n_fft, fftbins=True)`;
scipy is not a dependency of the torch extra, so `hann_window` computes the same periodic window in numpy.

Test hook: set `SineGen.inject = (phase [B, H + 1, 1], noise [B, H + 1, L])` to replace the uniform
initial phases and the Gaussian noise that SineGen draws (phase[:, 0] is still forced to 0).
`forward` takes `batch['speech_feat']` time-major [B, T, 80], as the reference does.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions.uniform import Uniform
from torch.nn import Conv1d, ConvTranspose1d
from torch.nn.utils import weight_norm


def hann_window(n_fft):
    """scipy.signal.get_window('hann', n_fft, fftbins=True) (periodic), float64."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)


class Snake(nn.Module):
    def __init__(self, in_features, alpha=1.0):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(in_features) * alpha)
        self.no_div_by_zero = 0.000000001

    def forward(self, x):
        alpha = self.alpha.unsqueeze(0).unsqueeze(-1)
        return x + (1.0 / (alpha + self.no_div_by_zero)) * torch.pow(torch.sin(x * alpha), 2)


def get_padding(kernel_size, dilation=1):
    return int((kernel_size * dilation - dilation) / 2)


def init_weights(m, mean=0.0, std=0.01):
    if m.__class__.__name__.find("Conv") != -1:
        m.weight.data.normal_(mean, std)


class ResBlock(nn.Module):
    def __init__(self, channels=512, kernel_size=3, dilations=(1, 3, 5)):
        super().__init__()
        self.convs1 = nn.ModuleList([
            weight_norm(Conv1d(channels, channels, kernel_size, 1, dilation=d, padding=get_padding(kernel_size, d)))
            for d in dilations])
        self.convs2 = nn.ModuleList([
            weight_norm(Conv1d(channels, channels, kernel_size, 1, dilation=1, padding=get_padding(kernel_size, 1)))
            for _ in dilations])
        self.convs1.apply(init_weights)
        self.convs2.apply(init_weights)
        self.activations1 = nn.ModuleList([Snake(channels) for _ in dilations])
        self.activations2 = nn.ModuleList([Snake(channels) for _ in dilations])

    def forward(self, x):
        for idx in range(len(self.convs1)):
            xt = self.activations1[idx](x)
            xt = self.convs1[idx](xt)
            xt = self.activations2[idx](xt)
            xt = self.convs2[idx](xt)
            x = xt + x
        return x


class SineGen(nn.Module):
    def __init__(self, samp_rate, harmonic_num=0, sine_amp=0.1, noise_std=0.003, voiced_threshold=0):
        super().__init__()
        self.sine_amp = sine_amp
        self.noise_std = noise_std
        self.harmonic_num = harmonic_num
        self.sampling_rate = samp_rate
        self.voiced_threshold = voiced_threshold
        self.inject = None

    def _f02uv(self, f0):
        return (f0 > self.voiced_threshold).type(torch.float32)

    @torch.no_grad()
    def forward(self, f0):
        """f0 [B, 1, L] in Hz -> sine_waves [B, H + 1, L], uv [B, 1, L], noise [B, H + 1, L]."""
        F_mat = torch.zeros((f0.size(0), self.harmonic_num + 1, f0.size(-1))).to(f0.device)
        for i in range(self.harmonic_num + 1):
            F_mat[:, i: i + 1, :] = f0 * (i + 1) / self.sampling_rate
        theta_mat = 2 * np.pi * (torch.cumsum(F_mat, dim=-1) % 1)
        if self.inject is None:
            u_dist = Uniform(low=-np.pi, high=np.pi)
            phase_vec = u_dist.sample(sample_shape=(f0.size(0), self.harmonic_num + 1, 1)).to(F_mat.device)
        else:
            phase_vec = self.inject[0].clone()
        phase_vec[:, 0, :] = 0
        sine_waves = self.sine_amp * torch.sin(theta_mat + phase_vec)
        uv = self._f02uv(f0)
        noise_amp = uv * self.noise_std + (1 - uv) * self.sine_amp / 3
        gauss = torch.randn_like(sine_waves) if self.inject is None else self.inject[1]
        noise = noise_amp * gauss
        sine_waves = sine_waves * uv + noise
        return sine_waves, uv, noise


class SourceModuleHnNSF(nn.Module):
    def __init__(self, sampling_rate, upsample_scale, harmonic_num=0, sine_amp=0.1, add_noise_std=0.003,
                 voiced_threshod=0):
        super().__init__()
        self.sine_amp = sine_amp
        self.noise_std = add_noise_std
        self.l_sin_gen = SineGen(sampling_rate, harmonic_num, sine_amp, add_noise_std, voiced_threshod)
        self.l_linear = nn.Linear(harmonic_num + 1, 1)
        self.l_tanh = nn.Tanh()

    def forward(self, x):
        """x: f0 [B, L, 1] -> (sine_merge [B, L, 1], noise [B, L, 1], uv [B, L, 1])."""
        with torch.no_grad():
            sine_wavs, uv, _ = self.l_sin_gen(x.transpose(1, 2))
            sine_wavs = sine_wavs.transpose(1, 2)
            uv = uv.transpose(1, 2)
        sine_merge = self.l_tanh(self.l_linear(sine_wavs))
        noise = torch.randn_like(uv) * self.sine_amp / 3
        return sine_merge, noise, uv


class ConvRNNF0Predictor(nn.Module):
    def __init__(self, num_class=1, in_channels=80, cond_channels=512, layers=5):
        super().__init__()
        self.num_class = num_class
        mods = []
        for i in range(layers):
            mods += [weight_norm(nn.Conv1d(in_channels if i == 0 else cond_channels, cond_channels, kernel_size=3,
                                           padding=1)), nn.ELU()]
        self.condnet = nn.Sequential(*mods)
        self.classifier = nn.Linear(in_features=cond_channels, out_features=self.num_class)

    def forward(self, x):
        x = self.condnet(x)
        x = x.transpose(1, 2)
        return torch.abs(self.classifier(x).squeeze(-1))


class HiFTGenerator(nn.Module):
    def __init__(self, in_channels=80, base_channels=512, nb_harmonics=8, sampling_rate=22050, nsf_alpha=0.1,
                 nsf_sigma=0.003, nsf_voiced_threshold=10, upsample_rates=(8, 8),
                 upsample_kernel_sizes=(16, 16), istft_params=None,
                 resblock_kernel_sizes=(3, 7, 11), resblock_dilation_sizes=((1, 3, 5),) * 3,
                 source_resblock_kernel_sizes=(7, 11), source_resblock_dilation_sizes=((1, 3, 5),) * 2,
                 lrelu_slope=0.1, audio_limit=0.99, f0_predictor=None):
        super().__init__()
        istft_params = istft_params or {"n_fft": 16, "hop_len": 4}
        upsample_rates = list(upsample_rates)
        self.out_channels = 1
        self.nb_harmonics = nb_harmonics
        self.sampling_rate = sampling_rate
        self.istft_params = istft_params
        self.lrelu_slope = lrelu_slope
        self.audio_limit = audio_limit
        self.num_kernels = len(resblock_kernel_sizes)
        self.num_upsamples = len(upsample_rates)
        self.m_source = SourceModuleHnNSF(
            sampling_rate=sampling_rate, upsample_scale=np.prod(upsample_rates) * istft_params["hop_len"],
            harmonic_num=nb_harmonics, sine_amp=nsf_alpha, add_noise_std=nsf_sigma,
            voiced_threshod=nsf_voiced_threshold)
        self.f0_upsamp = nn.Upsample(scale_factor=np.prod(upsample_rates) * istft_params["hop_len"])
        self.conv_pre = weight_norm(Conv1d(in_channels, base_channels, 7, 1, padding=3))
        self.ups = nn.ModuleList()
        for i, (u, k) in enumerate(zip(upsample_rates, upsample_kernel_sizes)):
            self.ups.append(weight_norm(ConvTranspose1d(base_channels // (2 ** i), base_channels // (2 ** (i + 1)),
                                                        k, u, padding=(k - u) // 2)))
        self.source_downs = nn.ModuleList()
        self.source_resblocks = nn.ModuleList()
        downsample_rates = [1] + upsample_rates[::-1][:-1]
        downsample_cum_rates = np.cumprod(downsample_rates)
        for i, (u, k, d) in enumerate(zip(downsample_cum_rates[::-1], source_resblock_kernel_sizes,
                                          source_resblock_dilation_sizes)):
            if u == 1:
                self.source_downs.append(Conv1d(istft_params["n_fft"] + 2, base_channels // (2 ** (i + 1)), 1, 1))
            else:
                self.source_downs.append(Conv1d(istft_params["n_fft"] + 2, base_channels // (2 ** (i + 1)),
                                                int(u * 2), int(u), padding=int(u // 2)))
            self.source_resblocks.append(ResBlock(base_channels // (2 ** (i + 1)), k, d))
        self.resblocks = nn.ModuleList()
        for i in range(len(self.ups)):
            ch = base_channels // (2 ** (i + 1))
            for k, d in zip(resblock_kernel_sizes, resblock_dilation_sizes):
                self.resblocks.append(ResBlock(ch, k, d))
        self.conv_post = weight_norm(Conv1d(ch, istft_params["n_fft"] + 2, 7, 1, padding=3))
        self.ups.apply(init_weights)
        self.conv_post.apply(init_weights)
        self.reflection_pad = nn.ReflectionPad1d((1, 0))
        self.stft_window = torch.from_numpy(hann_window(istft_params["n_fft"]).astype(np.float32))
        self.f0_predictor = f0_predictor

    def _stft(self, x):
        spec = torch.stft(x, self.istft_params["n_fft"], self.istft_params["hop_len"], self.istft_params["n_fft"],
                          window=self.stft_window.to(x.device), return_complex=True)
        spec = torch.view_as_real(spec)
        return spec[..., 0], spec[..., 1]

    def _istft(self, magnitude, phase):
        magnitude = torch.clip(magnitude, max=1e2)
        real = magnitude * torch.cos(phase)
        img = magnitude * torch.sin(phase)
        return torch.istft(torch.complex(real, img), self.istft_params["n_fft"], self.istft_params["hop_len"],
                           self.istft_params["n_fft"], window=self.stft_window.to(magnitude.device))

    def decode(self, x, s):
        s_stft_real, s_stft_imag = self._stft(s.squeeze(1))
        s_stft = torch.cat([s_stft_real, s_stft_imag], dim=1)
        x = self.conv_pre(x)
        for i in range(self.num_upsamples):
            x = F.leaky_relu(x, self.lrelu_slope)
            x = self.ups[i](x)
            if i == self.num_upsamples - 1:
                x = self.reflection_pad(x)
            si = self.source_downs[i](s_stft)
            si = self.source_resblocks[i](si)
            x = x + si
            xs = None
            for j in range(self.num_kernels):
                if xs is None:
                    xs = self.resblocks[i * self.num_kernels + j](x)
                else:
                    xs += self.resblocks[i * self.num_kernels + j](x)
            x = xs / self.num_kernels
        x = F.leaky_relu(x)
        x = self.conv_post(x)
        magnitude = torch.exp(x[:, :self.istft_params["n_fft"] // 2 + 1, :])
        phase = torch.sin(x[:, self.istft_params["n_fft"] // 2 + 1:, :])
        x = self._istft(magnitude, phase)
        return torch.clamp(x, -self.audio_limit, self.audio_limit)

    def forward(self, batch, device="cpu"):
        speech_feat = batch["speech_feat"].transpose(1, 2).to(device)
        f0 = self.f0_predictor(speech_feat)
        s = self.f0_upsamp(f0[:, None]).transpose(1, 2)
        s, _, _ = self.m_source(s)
        s = s.transpose(1, 2)
        return self.decode(x=speech_feat, s=s), f0


def from_config(m) -> HiFTGenerator:
    """The generator of a bajax vocoder `model` config (Cosy24kVocoder for reference_model_config())."""
    return HiFTGenerator(
        in_channels=m["in_channels"], base_channels=m["base_channels"], nb_harmonics=m["nb_harmonics"],
        sampling_rate=m["sampling_rate"], nsf_alpha=m["nsf_alpha"], nsf_sigma=m["nsf_sigma"],
        nsf_voiced_threshold=m["nsf_voiced_threshold"], upsample_rates=list(m["upsample_rates"]),
        upsample_kernel_sizes=list(m["upsample_kernel_sizes"]),
        istft_params={"n_fft": m["istft_n_fft"], "hop_len": m["istft_hop"]},
        resblock_kernel_sizes=list(m["resblock_kernel_sizes"]),
        resblock_dilation_sizes=[list(d) for d in m["resblock_dilation_sizes"]],
        source_resblock_kernel_sizes=list(m["source_resblock_kernel_sizes"]),
        source_resblock_dilation_sizes=[list(d) for d in m["source_resblock_dilation_sizes"]],
        lrelu_slope=m["lrelu_slope"], audio_limit=m["audio_limit"],
        f0_predictor=ConvRNNF0Predictor(num_class=1, in_channels=m["in_channels"],
                                        cond_channels=m["f0_cond_channels"], layers=m["f0_layers"]))

"""HiFT vocoder GAN discriminators and losses in PyTorch, written from the reference code so that reference
state dicts load with strict=True under CosyVoice's HiFiGan training module (`discriminator.mpd.*`,
`discriminator.mrd.*`):

  MultiPeriodDiscriminator     Matcha-TTS matcha/hifigan/models.py (from jik876/hifi-gan), periods 2,3,5,7,11
  MultiResolutionDiscriminator Baichuan-Omni-1.5 third_party/cosy24k_vocoder/hifigan/discriminator.py
                               (DAC-style, complex STFT split into 5 bands)
  MultiResSpecDiscriminator    CosyVoice cosyvoice/hifigan/discriminator.py (magnitude STFT; the CosyVoice-2
                               yaml's `mrd` since 2025-03)
  MultipleDiscriminator        both files: mpd on y[:, None], then mrd on y
  losses                       cosyvoice/hifigan/hifigan.py; mel transform: Matcha matcha/utils/audio.py

Differences that change nothing numerically: torchaudio's Spectrogram is replaced by `Spectrogram` below (torch.stft
with torchaudio's defaults; torchaudio is not installed here), keeping its `window` buffer so the state-dict key
`spec_fn.window` exists; einops' rearrange is a permute; Matcha's mel filters come from transformers'
`mel_filter_bank` (slaney scale, slaney norm: what librosa.filters.mel returns, transposed), since librosa is
not installed. Weight norm is the legacy `torch.nn.utils.weight_norm` both references use (keys weight_g,
weight_v; g has shape [out, 1, 1, 1]).
"""

import warnings

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

LRELU_SLOPE = 0.1


def weight_norm(module):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)          # deprecated in favour of parametrizations
        return torch.nn.utils.weight_norm(module)


def get_padding(kernel_size, dilation=1):
    return int((kernel_size * dilation - dilation) / 2)


# -------------------------------------------------------------------------------------------------- MPD


class DiscriminatorP(nn.Module):
    def __init__(self, period, kernel_size=5, stride=3, channels=(32, 128, 512, 1024, 1024)):
        super().__init__()
        self.period = period
        c = (1,) + tuple(channels)
        self.convs = nn.ModuleList(
            [weight_norm(nn.Conv2d(c[i], c[i + 1], (kernel_size, 1), (stride, 1), padding=(get_padding(5, 1), 0)))
             for i in range(4)]
            + [weight_norm(nn.Conv2d(c[4], c[5], (kernel_size, 1), 1, padding=(2, 0)))])
        self.conv_post = weight_norm(nn.Conv2d(c[5], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, x):
        fmap = []
        b, c, t = x.shape
        if t % self.period != 0:
            n_pad = self.period - (t % self.period)
            x = F.pad(x, (0, n_pad), "reflect")
            t = t + n_pad
        x = x.view(b, c, t // self.period, self.period)
        for layer in self.convs:
            x = F.leaky_relu(layer(x), LRELU_SLOPE)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return torch.flatten(x, 1, -1), fmap


def _pairwise(discriminators, y, y_hat, **kw):
    y_d_rs, y_d_gs, fmap_rs, fmap_gs = [], [], [], []
    for d in discriminators:
        y_d_r, fmap_r = d(y, **kw)
        y_d_g, fmap_g = d(y_hat, **kw)
        y_d_rs.append(y_d_r)
        fmap_rs.append(fmap_r)
        y_d_gs.append(y_d_g)
        fmap_gs.append(fmap_g)
    return y_d_rs, y_d_gs, fmap_rs, fmap_gs


class MultiPeriodDiscriminator(nn.Module):
    def __init__(self, periods=(2, 3, 5, 7, 11), channels=(32, 128, 512, 1024, 1024)):
        super().__init__()
        self.discriminators = nn.ModuleList([DiscriminatorP(p, channels=channels) for p in periods])

    def forward(self, y, y_hat):
        return _pairwise(self.discriminators, y, y_hat)


# -------------------------------------------------------------------------------------- MRD (DAC style)


class Spectrogram(nn.Module):
    """torchaudio.transforms.Spectrogram(n_fft, win_length, hop_length, power=None) with its defaults
    (periodic Hann window buffer, pad 0, center=True, reflect, not normalised, onesided): complex [B, F, T]."""

    def __init__(self, n_fft, win_length, hop_length, power=None):
        super().__init__()
        assert power is None
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        self.register_buffer("window", torch.hann_window(win_length))

    def forward(self, x):
        return torch.stft(x, self.n_fft, hop_length=self.hop_length, win_length=self.win_length,
                          window=self.window, center=True, pad_mode="reflect", normalized=False, onesided=True,
                          return_complex=True)


class DiscriminatorR(nn.Module):
    def __init__(self, window_length, channels=32, hop_factor=0.25,
                 bands=((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))):
        super().__init__()
        self.window_length = window_length
        self.hop_factor = hop_factor
        self.spec_fn = Spectrogram(n_fft=window_length, hop_length=int(window_length * hop_factor),
                                   win_length=window_length, power=None)
        n_bins = window_length // 2 + 1
        self.bands = [(int(lo * n_bins), int(hi * n_bins)) for lo, hi in bands]

        def convs():
            return nn.ModuleList([
                weight_norm(nn.Conv2d(2, channels, (3, 9), (1, 1), padding=(1, 4))),
                weight_norm(nn.Conv2d(channels, channels, (3, 9), (1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(channels, channels, (3, 9), (1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(channels, channels, (3, 9), (1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(channels, channels, (3, 3), (1, 1), padding=(1, 1))),
            ])

        self.band_convs = nn.ModuleList([convs() for _ in self.bands])
        self.conv_post = weight_norm(nn.Conv2d(channels, 1, (3, 3), (1, 1), padding=(1, 1)))

    def spectrogram(self, x):
        x = x - x.mean(dim=-1, keepdim=True)
        x = 0.8 * x / (x.abs().max(dim=-1, keepdim=True)[0] + 1e-9)
        x = torch.view_as_real(self.spec_fn(x))           # [B, F, T, 2]
        x = x.permute(0, 3, 2, 1)                         # b f t c -> b c t f
        return [x[..., lo:hi] for lo, hi in self.bands]

    def forward(self, x):
        fmap, outs = [], []
        for band, stack in zip(self.spectrogram(x), self.band_convs, strict=True):
            for i, layer in enumerate(stack):
                band = F.leaky_relu(layer(band), 0.1)
                if i > 0:
                    fmap.append(band)
            outs.append(band)
        x = self.conv_post(torch.cat(outs, dim=-1))
        fmap.append(x)
        return x, fmap


class MultiResolutionDiscriminator(nn.Module):
    def __init__(self, fft_sizes=(2048, 1024, 512), channels=32):
        super().__init__()
        self.discriminators = nn.ModuleList([DiscriminatorR(w, channels=channels) for w in fft_sizes])

    def forward(self, y, y_hat):
        return _pairwise(self.discriminators, y, y_hat)


# ------------------------------------------------------------------------------ MRD (CosyVoice spec style)


class SpecDiscriminator(nn.Module):
    def __init__(self, fft_size=1024, shift_size=120, win_length=600, channels=32):
        super().__init__()
        self.fft_size, self.shift_size, self.win_length = fft_size, shift_size, win_length
        self.window = torch.hann_window(win_length)      # a plain attribute, not a buffer: no state-dict key
        c = channels
        self.discriminators = nn.ModuleList([
            weight_norm(nn.Conv2d(1, c, kernel_size=(3, 9), padding=(1, 4))),
            weight_norm(nn.Conv2d(c, c, kernel_size=(3, 9), stride=(1, 2), padding=(1, 4))),
            weight_norm(nn.Conv2d(c, c, kernel_size=(3, 9), stride=(1, 2), padding=(1, 4))),
            weight_norm(nn.Conv2d(c, c, kernel_size=(3, 9), stride=(1, 2), padding=(1, 4))),
            weight_norm(nn.Conv2d(c, c, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))),
        ])
        self.out = weight_norm(nn.Conv2d(c, 1, 3, 1, 1))

    def forward(self, y):
        fmap = []
        y = torch.stft(y, self.fft_size, self.shift_size, self.win_length, self.window, return_complex=True)
        y = torch.abs(y).transpose(2, 1).unsqueeze(1)    # [B, 1, T, F]
        for d in self.discriminators:
            y = F.leaky_relu(d(y), LRELU_SLOPE)
            fmap.append(y)
        y = self.out(y)
        fmap.append(y)
        return torch.flatten(y, 1, -1), fmap


class MultiResSpecDiscriminator(nn.Module):
    def __init__(self, fft_sizes=(1024, 2048, 512), hop_sizes=(120, 240, 50), win_lengths=(600, 1200, 240),
                 channels=32):
        super().__init__()
        self.discriminators = nn.ModuleList([SpecDiscriminator(f, h, w, channels)
                                             for f, h, w in zip(fft_sizes, hop_sizes, win_lengths, strict=True)])

    def forward(self, y, y_hat):
        return _pairwise(self.discriminators, y, y_hat)


class MultipleDiscriminator(nn.Module):
    def __init__(self, mpd, mrd):
        super().__init__()
        self.mpd = mpd
        self.mrd = mrd

    def forward(self, y, y_hat):
        out = ([], [], [], [])
        for part in (self.mpd(y.unsqueeze(dim=1), y_hat.unsqueeze(dim=1)), self.mrd(y, y_hat)):
            for acc, more in zip(out, part, strict=True):
                acc += more
        return out


class HiFiGanDisc(nn.Module):
    """Only the `discriminator` child of CosyVoice's HiFiGan, so the key prefix is `discriminator.`."""

    def __init__(self, discriminator):
        super().__init__()
        self.discriminator = discriminator


# --------------------------------------------------------------------------------------------------- losses


def feature_loss(fmap_r, fmap_g):
    loss = 0
    for dr, dg in zip(fmap_r, fmap_g, strict=True):
        for rl, gl in zip(dr, dg, strict=True):
            loss += torch.mean(torch.abs(rl - gl))
    return loss * 2


def discriminator_loss(disc_real_outputs, disc_generated_outputs):
    loss = 0
    for dr, dg in zip(disc_real_outputs, disc_generated_outputs, strict=True):
        loss += torch.mean((1 - dr) ** 2) + torch.mean(dg ** 2)
    return loss


def generator_loss(disc_outputs):
    loss = 0
    for dg in disc_outputs:
        loss += torch.mean((1 - dg) ** 2)
    return loss


def tpr_loss(disc_real_outputs, disc_generated_outputs, tau):
    loss = 0
    for dr, dg in zip(disc_real_outputs, disc_generated_outputs, strict=True):
        m_dg = torch.median(dr - dg)
        l_rel = torch.mean((((dr - dg) - m_dg) ** 2)[dr < dg + m_dg])
        loss += tau - F.relu(tau - l_rel)
    return loss


def matcha_mel(y, n_fft=1920, num_mels=80, sampling_rate=24000, hop_size=480, win_size=1920, fmin=0, fmax=None):
    """Matcha-TTS mel_spectrogram(center=False) with the CosyVoice-2 `mel_spec_transform1` settings: [B, 80, T]."""
    from transformers.audio_utils import mel_filter_bank

    fb = mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=num_mels, min_frequency=float(fmin),
                         max_frequency=float(fmax if fmax is not None else sampling_rate / 2),
                         sampling_rate=sampling_rate, norm="slaney", mel_scale="slaney")
    mel_basis = torch.from_numpy(np.ascontiguousarray(fb.T)).float()
    window = torch.hann_window(win_size)
    pad = int((n_fft - hop_size) / 2)
    y = F.pad(y.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    spec = torch.view_as_real(torch.stft(y, n_fft, hop_length=hop_size, win_length=win_size, window=window,
                                         center=False, pad_mode="reflect", normalized=False, onesided=True,
                                         return_complex=True))
    spec = torch.sqrt(spec.pow(2).sum(-1) + 1e-9)
    return torch.log(torch.clamp(torch.matmul(mel_basis, spec), min=1e-5))


def mel_loss(real_speech, generated_speech, mel_transforms):
    loss = 0
    for transform in mel_transforms:
        loss += F.l1_loss(transform(generated_speech), transform(real_speech))
    return loss


def generator_objective(disc_out, real, fake, f0_pred, pitch_feat, mel_weight=45, fm_weight=2.0, tpr_weight=1.0,
                        tau=0.04):
    """HiFiGan.forward_generator after the discriminator call."""
    y_d_rs, y_d_gs, fmap_rs, fmap_gs = disc_out
    parts = {"gen_loss": generator_loss(y_d_gs), "fm_loss": feature_loss(fmap_rs, fmap_gs),
             "mel_l1": mel_loss(real, fake, [matcha_mel]), "tpr_loss": tpr_loss(y_d_rs, y_d_gs, tau),
             "f0_loss": F.l1_loss(f0_pred, pitch_feat)}
    total = (parts["gen_loss"] + fm_weight * parts["fm_loss"] + mel_weight * parts["mel_l1"]
             + tpr_weight * parts["tpr_loss"] + parts["f0_loss"])
    return total, parts


def discriminator_objective(disc_out, tpr_weight=1.0, tau=0.04):
    """HiFiGan.forward_discriminator after the discriminator call."""
    y_d_rs, y_d_gs, _, _ = disc_out
    parts = {"disc_loss": discriminator_loss(y_d_rs, y_d_gs), "tpr_loss": tpr_loss(y_d_rs, y_d_gs, tau)}
    return parts["disc_loss"] + tpr_weight * parts["tpr_loss"], parts

"""Settings of the HiFT vocoder's GAN: the discriminators and the loss weights.

The reference values are the defaults (sources: Matcha-TTS `matcha/hifigan/models.py` for the multi-period
discriminator; Baichuan-Omni-1.5 `third_party/cosy24k_vocoder/hifigan/discriminator.py` for the DAC-style
multi-resolution one; CosyVoice `cosyvoice/hifigan/discriminator.py` for the magnitude-spectrogram one;
CosyVoice `cosyvoice/hifigan/hifigan.py` and `examples/libritts/cosyvoice2/conf/cosyvoice2.yaml` for the
weights). `size='tiny'` keeps every structural choice (periods, FFT sizes, strides, bands) and shrinks only
the channel widths, so a CPU run trains in minutes and its parameters still map onto the reference names.

Which multi-resolution discriminator: `mrd='resolution'` is `MultiResolutionDiscriminator` (complex STFT in
5 bands, DAC), the one Baichuan ships and CosyVoice-2's yaml named until 2025-03-07; `mrd='spec'` is
`MultiResSpecDiscriminator` (magnitude STFT), which the CosyVoice-2 yaml names since then ("fix vocoder train").
"""

from __future__ import annotations

import ml_collections

SIZES = ("reference", "tiny")


def default_discriminator_config(size: str = "reference") -> ml_collections.ConfigDict:
    if size not in SIZES:
        raise ValueError(f"discriminator size {size!r} is not one of {SIZES}")
    c = ml_collections.ConfigDict()
    # Multi-period (HiFi-GAN): the wave folded into [N / p, p]; 5 convs (k, 1) / (s, 1), then conv_post (3, 1).
    c.mpd_periods = (2, 3, 5, 7, 11)
    c.mpd_channels = (32, 128, 512, 1024, 1024)      # outputs of convs 0..4 (conv 4 has stride 1)
    c.mpd_kernel = 5
    c.mpd_stride = 3
    c.mrd = "resolution"                             # 'resolution' (DAC, Baichuan) or 'spec' (CosyVoice HEAD)
    # DAC-style: per FFT size w, a Hann(w) STFT, hop int(w * hop_factor), centred; bands of the w/2+1 bins.
    c.mrd_fft_sizes = (2048, 1024, 512)
    c.mrd_hop_factor = 0.25
    c.mrd_bands = ((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))
    c.mrd_channels = 32
    # CosyVoice spec-style: |STFT| with (fft, hop, Hann window) per resolution.
    c.spec_fft_sizes = (1024, 2048, 512)
    c.spec_hop_sizes = (120, 240, 50)
    c.spec_win_lengths = (600, 1200, 240)
    c.spec_channels = 32
    c.lrelu_slope = 0.1
    c.dtype = "float32"                              # conv compute dtype; spectrograms and losses stay fp32
    if size == "tiny":
        c.mpd_channels = (4, 8, 16, 16, 16)
        c.mrd_channels = 4
        c.spec_channels = 4
    return c


def default_gan_loss_config() -> ml_collections.ConfigDict:
    """HiFiGan's defaults, which the CosyVoice-2 yaml does not override."""
    c = ml_collections.ConfigDict()
    c.mel_weight = 45.0       # multi_mel_spectral_recon_loss_weight (one transform: mel_spec_transform1)
    c.fm_weight = 2.0         # feat_match_loss_weight (on top of feature_loss's own x2)
    c.tpr_weight = 1.0        # tpr_loss_weight (0 disables the TPR term in both objectives)
    c.tpr_tau = 0.04          # tpr_loss_tau
    c.f0_weight = 1.0         # the reference adds loss_f0 unweighted
    # bajax's choice, off by default: before this step the generator trains on mel L1 + F0 alone and the
    # discriminators neither run nor update (`Update.start` holds their optimizer state); then the reference's GAN.
    # ParallelWaveGAN's discriminator_train_start_steps; for short runs, where the GAN's early gradients only
    # slow the generator down. 0 = the reference (adversarial from the first step).
    c.adversarial_start = 0
    return c

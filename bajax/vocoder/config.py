"""Default `model` section of a HiFT vocoder config: every generator key, with a tiny shape as its value.

The values of the released generator (third_party/cosy24k_vocoder/cosy24k_vocoder.py, `Cosy24kVocoder`,
weights hift.pt) are in the comments and in `reference_model_config()`, which configs/vocoder/base.py uses.
Upsampling x8 x5 x3 and an iSTFT with hop 4 are kept in the tiny config too: 8 * 5 * 3 * 4 = 480 samples
per mel frame is fixed by the 24 kHz mel (hop 480, 50 Hz), so only channel widths shrink.
"""

from ml_collections import ConfigDict


def default_model_config() -> ConfigDict:
    m = ConfigDict()
    m.dtype = "float32"               # compute dtype of the convolutions (params, source, STFT, iSTFT: fp32)
    m.in_channels = 80                # mel bins
    m.base_channels = 32              # 512 (stage i has base / 2^(i+1) channels)
    m.nb_harmonics = 8                # 8 (sine source: f0 and 8 overtones = 9 channels)
    m.sampling_rate = 24000
    m.nsf_alpha = 0.1                 # sine amplitude; unvoiced noise std = alpha / 3
    m.nsf_sigma = 0.003               # noise std in voiced samples
    m.nsf_voiced_threshold = 10.0     # f0 > 10 Hz is voiced
    m.upsample_rates = (8, 5, 3)
    m.upsample_kernel_sizes = (16, 11, 7)
    m.istft_n_fft = 16
    m.istft_hop = 4
    m.resblock_kernel_sizes = (3, 7, 11)
    m.resblock_dilation_sizes = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    m.source_resblock_kernel_sizes = (7, 7, 11)
    m.source_resblock_dilation_sizes = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    m.lrelu_slope = 0.1               # before each upsampling (the one before conv_post is fixed at 0.01)
    m.audio_limit = 0.99              # output clamp
    m.f0_cond_channels = 32           # 512 (ConvRNNF0Predictor cond_channels)
    m.f0_layers = 5                   # 5 weight-normed k3 convs, each followed by ELU
    return m


def reference_model_config() -> ConfigDict:
    """The exact generator of `Cosy24kVocoder` (what hift.pt holds)."""
    m = default_model_config()
    m.base_channels = 512
    m.f0_cond_channels = 512
    return m

"""Default `model` section of a tokenizer config: every key, with the tiny shape as its value.

The paper-size values (SPEC sections 1-2) are in the comments; `configs/tokenizer/base.py` sets them.
"""

from ml_collections import ConfigDict

from bajax.lm.config import default_model_config as lm_model_config


def default_model_config() -> ConfigDict:
    m = ConfigDict()
    m.dtype = "float32"               # compute dtype (params fp32; RVQ distances, EMA, losses always fp32)
    m.remat = "none"
    m.scan_layers = True

    # Front end (SPEC 1): Whisper-v3 log-mel at 16 kHz.
    m.n_mels = 128
    # Encoder (Whisper-large-v3 shape): d 1280, 32 layers, 20 heads, FFN 5120, 1500 positions.
    m.d_model = 64
    m.encoder_layers = 2
    m.encoder_heads = 4
    m.encoder_ffn = 256
    m.max_source_positions = 1500
    # Bridge: pool 4 -> code dim = d_model * pool (5120 at full size).
    m.pool = 4

    m.rvq = ConfigDict()
    m.rvq.codebook_sizes = (64, 64, 32, 32, 16, 16, 16, 16)   # full: (8192, 4096, 2048, 1024 x5)
    m.rvq.decay = 0.99                # EMA decay a
    m.rvq.eps = 1e-5                  # Laplace smoothing
    m.rvq.beta = 1e-3                 # L2 constraint embed *= (1 - beta) after each EMA step; 0 disables
    m.rvq.restart_after = 100         # restart a code unused for this many consecutive steps; 0 disables
    m.rvq.threshold = 1e-3            # ... or whose EMA count falls below this; 0 disables
    m.rvq.gumbel_tau = 1.0            # Gumbel temperature in training (on Euclidean distance); 0 = greedy
    m.rvq.dropout_p = 0.5             # probability that a sample keeps only layers 1..k, k ~ U{1..n}

    # Progressive instance-level replacement: fraction of samples taking the VQ output.
    m.replace = ConfigDict()
    m.replace.start = 0.1
    m.replace.end = 1.0
    m.replace.begin = 0               # step at which the ramp starts
    m.replace.steps = 1000            # ramp length in steps (0: jump to `end` at `begin`)

    # Audio decoder (SPEC 2): 8 causal layers at d_model, dconv kernel 3, strides 4 then 2; refine net.
    m.decoder_layers = 2
    m.decoder_heads = 4
    m.decoder_ffn = 256
    m.decoder_kernel = 3
    m.decoder_stride = 2              # dconv2: 50 Hz -> 100 Hz (dconv1's stride is `pool`)
    m.decoder_positions = 3000
    m.n_target_mels = 80
    m.refine_channels = (64, 64, 64, 64)   # full: (256, 256, 256, 256)
    m.refine_kernel = 5
    # Frame grids: coarse mel at sample_rate / mel_hop (100 Hz), target at target_sample_rate / target_hop.
    m.sample_rate = 16000
    m.mel_hop = 160
    m.target_sample_rate = 16000
    m.target_hop = 256
    # True: GroupNorm statistics, refine convs and resampling span the padded batch as in the reference;
    # False: per utterance (batch-invariant decoding). Identical for a single unpadded utterance.
    m.decoder_reference_padding = True

    # Losses (paper eq. 1-3): reconstruction on coarse and refined mel, multi-scale, commitment, alignment.
    m.loss = ConfigDict()
    m.loss.coarse_weight = 1.0
    m.loss.refined_weight = 1.0
    m.loss.l1_weight = 1.0
    m.loss.l2_weight = 1.0
    m.loss.multiscale_weight = 1.0    # the time-pooled terms (lambda1's multi-scale part)
    m.loss.scales = (2, 4)            # time pooling factors of the multi-scale mel loss
    m.loss.align_weight = 0.0         # text-alignment loss through a frozen LM (lambda2); 0 = no frozen LM
    #                                   is built (configs/tokenizer/*.py turn it on)
    m.loss.commit = ConfigDict()      # commitment weight lambda3, ramped like model.replace
    m.loss.commit.start = 0.25
    m.loss.commit.end = 0.25
    m.loss.commit.begin = 0
    m.loss.commit.steps = 0

    # The frozen LM of the alignment loss (bajax/tokenizer/align.py): an audio LLM of this shape, randomly
    # initialised, or the LM run at `align_lm_checkpoint` (its config.json then decides the shape).
    m.align_lm = lm_model_config()    # paper: a frozen 1.5B LLM
    m.align_lm_checkpoint = ""        # `bajax train` LM run directory; '' = random frozen LM
    return m

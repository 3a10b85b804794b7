"""Default `model` section of a flow-decoder config: every key, with the tiny shape as its value.

The paper-size values (SPEC section 4, the released `flow_matching_config`) are in the comments;
`configs/flow/base.py` sets them.
"""

from ml_collections import ConfigDict


def default_model_config() -> ConfigDict:
    m = ConfigDict()
    m.dtype = "float32"               # compute dtype (params fp32; CFM targets and losses always fp32)
    m.remat = "none"                  # none | full | dots | dots_no_batch (per transformer/mid block)
    m.scan_layers = True
    m.n_mels = 80                     # 24 kHz target mel bins (SPEC 4)

    # Conditioning (see bajax/flow/conditioning.py). Paper setting: 'tokenizer' = the frozen tokenizer
    # decoder's `hidden_states_before_dconv2` (1280-d, 50 Hz) computed from the batch's codes.
    # 'mel16' = the fixed 16 kHz tokenizer-target log-mel of `wave16` (80-d, 62.5 Hz), for standalone runs.
    m.cond_source = "mel16"           # base: 'tokenizer'
    m.cond_dim = 80                   # base: 1280 (tokenizer d_model); must be 80 for 'mel16'
    m.tokenizer_checkpoint = ""       # tokenizer run directory (required by cond_source='tokenizer')

    # Pre-Net: nearest resample -> MLP cond_dim->in_hidden->hidden (SiLU) -> causal RMSNorm transformer.
    # Several widths below are fixed by the reference code (models/flow.py `nonreference`): export refuses
    # other values unless --allow-nonreference.
    m.prenet_in_hidden = 256          # 2048 (the reference: always 4 x prenet_hidden)
    m.prenet_hidden = 64              # 512
    m.prenet_layers = 2               # 12
    m.prenet_heads = 4                # 8 (head_dim = hidden / heads)
    m.prenet_ffn = 256                # 2048
    m.prenet_norm_eps = 1e-6          # the reference: always 1e-6

    # Estimator: CosyVoice-2 causal U-Net (one down block, mid blocks, one up block with the skip).
    m.channels = 64                   # 256
    m.time_hidden = 256               # 1024 (= 4 x channels in the reference)
    m.time_scale = 1000.0             # sinusoidal time embedding of t * 1000
    m.mid_blocks = 2                  # 12
    m.transformer_blocks = 1          # 4 per ResNet block
    m.heads = 2                       # 8
    m.head_dim = 32                   # 64
    m.ffn = 256                       # 1024 (the reference: always 4 x channels)
    m.conv_kernel = 3                 # the reference: always 3
    m.norm_eps = 1e-5                 # LayerNorm eps of the estimator (the reference: always 1e-5)
    m.chunk = 100                     # block-causal attention chunk (frames; 2 s at 50 Hz; the reference: 100)
    # Mixture of attention masks for the ESTIMATOR in training (the loss only; sampling always uses `chunk`):
    # one checkpoint then serves offline (full-context) and streaming (chunked) synthesis, as CosyVoice 2
    # trains its flow decoder. Per training sample one mask is drawn from the comma-separated list:
    # 'full' (bidirectional over valid frames), 'causal' (chunk 1), 'chunk' (= chunk), 'chunk2' (2 x chunk)
    # or N (N frames), each optionally 'name:weight' (default weight 1; weights are normalised), e.g.
    # "full,causal,chunk,chunk2" = each with probability 1/4. Those steps attend with dense [B, H, T, T]
    # scores. "" = the fixed block-causal `chunk` (the reference's training). Training-only: not exported.
    m.train_masks = ""

    # OT-CFM training.
    m.sigma_min = 1e-6
    m.cfg_dropout = 0.2               # probability that a sample's mu is zeroed (classifier-free guidance)
    m.t_schedule = "uniform"          # 'uniform' (SPEC) or 'cosine' (the released code warps t by 1 - cos)
    m.flow_loss_weight = 1.0
    m.prior_loss_weight = 1.0         # L1 of mu against the target mel

    # Sampling (cosine time grid, Euler).
    m.sample_steps = 10
    m.guidance = 0.7                  # v = (1 + g) v(x, mu) - g v(x, 0)
    m.temperature = 1.0
    return m

"""Paper-size flow decoder (SPEC section 4, ~115M parameters in the paper's count): Pre-Net 12 x 512, causal
U-Net with 256 channels, 12 mid blocks and 4 transformer blocks per ResNet, conditioned on the frozen
tokenizer decoder's `hidden_states_before_dconv2` (1280-d, 50 Hz) computed from the codes in the data.

  bajax prepare --tokenizer runs/tokenizer_base ...           # shards with codes
  bajax train --config configs/flow/base.py --workdir runs/flow_base \
      --config.model.tokenizer_checkpoint=runs/tokenizer_base
"""

from bajax.config import defaults


def get_config():
    c = defaults("flow")
    m = c.model
    m.cond_source = "tokenizer"
    m.cond_dim = 1280
    m.prenet_in_hidden = 2048
    m.prenet_hidden = 512
    m.prenet_layers = 12
    m.prenet_heads = 8
    m.prenet_ffn = 2048
    m.channels = 256
    m.time_hidden = 1024
    m.mid_blocks = 12
    m.transformer_blocks = 4
    m.heads = 8
    m.head_dim = 64
    m.ffn = 1024
    m.dtype = "bfloat16"
    m.remat = "dots_no_batch"
    c.data.audio.require_codes = True
    c.data.audio.mode = "bucket"
    c.data.audio.bucket_seconds = (4.0, 8.0, 16.0)
    c.train.steps = 200_000
    c.train.batch_size = 256
    c.optim.lr = 1e-4
    c.optim.warmup_steps = 2000
    c.optim.weight_decay = 0.01
    c.checkpoint.every = 2000
    c.metrics.log_every = 100
    c.train.eval_speech = 4                 # scored when evaluating (--config.train.eval_every=N)
    return c

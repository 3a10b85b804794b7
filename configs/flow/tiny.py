"""Tiny flow decoder on the embedded real-speech corpus; trains on a laptop CPU in about a minute.

  bajax train --config configs/flow/tiny.py --workdir runs/flow_tiny

Conditioning is the fixed 16 kHz tokenizer-target mel of the audio (model.cond_source='mel16', see
bajax/flow/conditioning.py), so it needs no tokenizer. The paper setting conditions on a frozen tokenizer:
  bajax train --config configs/flow/tiny.py --workdir runs/flow_tiny_tok \
      --config.model.cond_source=tokenizer --config.model.cond_dim=64 \
      --config.model.tokenizer_checkpoint=runs/tokenizer_tiny
"""

from bajax.config import defaults


def get_config():
    c = defaults("flow")
    c.train.steps = 300
    c.train.batch_size = 8
    c.optim.lr = 2e-3
    c.optim.warmup_steps = 20
    c.optim.weight_decay = 0.01
    c.checkpoint.every = 100
    c.metrics.log_every = 10
    c.train.eval_speech = 4              # scored when evaluating (--config.train.eval_every=N): ~3 s each time
    c.data.audio.crop_seconds = 2.0      # 100 mel frames: one attention chunk
    return c

"""Tiny audio LLM on the embedded real-speech corpus; trains on a laptop CPU in a minute.

  bajax train --config configs/lm/tiny.py --workdir runs/lm_tiny
  bajax train --config configs/lm/tiny.py:stage1 --workdir runs/lm_tiny_s1     # paper stage 1 preset
"""

from bajax.config import defaults


def get_config(stage: str = ""):
    c = defaults("lm")
    c.train.steps = 200
    c.train.batch_size = 8
    c.train.stage = stage
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 20
    c.checkpoint.every = 50
    c.metrics.log_every = 10
    c.data.seq_len = 256
    return c

"""The paper's audio LLM: Qwen2.5-7B backbone, 8 audio tables, 3-layer audio head at width 3584.

Real runs start from Qwen2.5-7B weights (`bajax import-hf`) and train in two stages:

  bajax train --config configs/lm/7b.py:stage1 --workdir gs://BUCKET/lm7b_s1 --config.train.init_from=CKPT
  bajax train --config configs/lm/7b.py:stage2 --workdir gs://BUCKET/lm7b_s2 --config.train.init_from=gs://BUCKET/lm7b_s1/checkpoints
"""

from bajax.config import defaults


def get_config(stage: str = "stage1"):
    c = defaults("lm")
    m = c.model
    m.vocab = "qwen"
    m.vocab_size = 152064
    m.hidden = 3584
    m.layers = 28
    m.heads = 28
    m.kv_heads = 4
    m.head_dim = 128
    m.mlp = 18944
    m.rope_theta = 1e6
    m.norm_eps = 1e-6
    m.codebook_sizes = (8192, 4096, 2048, 1024, 1024, 1024, 1024, 1024)
    m.audio_head_layers = 3
    m.audio_head_heads = 28           # 3584 / 128
    m.dtype = "bfloat16"
    m.remat = "full"
    c.mesh.data = -1
    c.mesh.fsdp = 1
    c.train.stage = stage
    c.train.steps = 50000
    c.train.batch_size = 256
    c.optim.lr = 1e-4 if stage == "stage1" else 2e-5
    c.optim.warmup_steps = 1000
    c.data.seq_len = 4096
    return c

"""~100M-parameter audio LLM (Qwen2 shape at width 640): the benchmark size, with 1024-entry codebooks.

On data prepared with a 1024-entry tokenizer (`bajax prepare --tokenizer TOKENIZER_RUN`):
  bajax train --config configs/lm/small.py --workdir runs/lm_small --config.data.source=PREPARED_DIR
On the embedded corpus, whose bootstrap codes have 64 entries per codebook:
  bajax train --config configs/lm/small.py --workdir runs/lm_small \
    --config.model.codebook_sizes="(64, 64, 64, 64, 64, 64, 64, 64)"
Chat fine-tuning (`:sft`: every parameter, `chat` rows only, loss on the assistant turns) from a pre-trained run:
  bajax train --config configs/lm/small.py:sft --workdir runs/lm_small_sft --config.data.source=PREPARED_DIR \\
    --config.train.init_from=runs/lm_small/checkpoints
"""

from bajax.config import defaults


def get_config(stage: str = ""):
    c = defaults("lm")
    m = c.model
    m.hidden = 640
    m.layers = 12
    m.heads = 10
    m.kv_heads = 2
    m.head_dim = 64
    m.mlp = 1728
    m.codebook_sizes = (1024,) * 8
    m.audio_head_heads = 5            # hidden / 128, as the reference
    # 12 layers: an unrolled loop runs 1.2x faster on CPU than lax.scan (bench/RESULTS_lm.md).
    m.scan_layers = False
    # 4 causal query blocks: the small 4x512 step ~4% faster than one block in alternating runs
    # (9.5-11.4 s vs 9.9-11.6 s, bench/RESULTS_lm.md).
    m.attention_causal_blocks = 4
    c.train.steps = 2000
    c.train.batch_size = 8
    c.train.stage = "" if stage == "sft" else stage
    c.optim.lr = 6e-4
    c.optim.warmup_steps = 200
    c.data.seq_len = 1024
    if stage == "sft":
        for task in c.data.mixture:
            c.data.mixture[task] = 1.0 if task == "chat" else 0.0
        c.train.eval_tasks = ("chat",)
        c.train.steps = 500
        c.optim.lr = 1e-4
        c.optim.warmup_steps = 50
    return c

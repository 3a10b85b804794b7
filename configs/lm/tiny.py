"""Tiny audio LLM on the embedded real-speech corpus; trains on a laptop CPU in a minute or two.

  bajax train --config configs/lm/tiny.py --workdir runs/lm_tiny                 # all parameters, audio tasks
  bajax train --config configs/lm/tiny.py:text --workdir runs/lm_text            # text-only pre-training
  bajax train --config configs/lm/tiny.py:stage1 --workdir runs/lm_s1 \\
      --config.train.init_from=runs/lm_text/checkpoints                          # paper stage 1
  bajax train --config configs/lm/tiny.py:stage2 --workdir runs/lm_s2 \\
      --config.train.init_from=runs/lm_s1/checkpoints                            # paper stage 2
  bajax train --config configs/lm/tiny.py:sft --workdir runs/lm_sft \\
      --config.train.init_from=runs/lm_s2/checkpoints                            # chat fine-tuning

`:sft` trains every parameter on the chat example of the embedded corpus (data.source='embedded-chat',
bajax/data/chat_corpus.py: spoken questions with text answers, and read-aloud requests with spoken answers),
loss on the assistant turns only; data.chat_audio_loss picks which spoken answers carry audio loss.

Every run also reports the held-out text-only loss (`eval_text_loss`), the language ability that the
two-stage recipe is meant to preserve.
"""

from bajax.config import defaults

ARGS = ("", "text", "stage1", "stage2", "sft")


def get_config(arg: str = ""):
    if arg not in ARGS:
        raise ValueError(f"configs/lm/tiny.py takes one of {ARGS} after ':', got {arg!r}")
    c = defaults("lm")
    c.train.steps = 200
    c.train.batch_size = 8
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 20
    c.checkpoint.every = 50
    c.metrics.log_every = 10
    c.data.seq_len = 256
    c.train.eval_every = 100
    c.train.eval_batches = 4
    c.train.eval_tasks = ("text",)
    # The audio head at every position: the capacity buckets (bajax/lm/losses.py audio_capacities) pay off at
    # scale and cost a CPU three times the compile time (41 s against 12 s for the train step).
    c.model.audio_head_capacity = ()
    if arg == "text":
        for task in c.data.mixture:
            c.data.mixture[task] = 1.0 if task == "text" else 0.0
    elif arg == "sft":
        for task in c.data.mixture:
            c.data.mixture[task] = 1.0 if task == "chat" else 0.0
        c.data.source = "embedded-chat"
        c.train.eval_tasks = ("chat",)
        c.train.steps = 100
        c.optim.lr = 3e-4          # fine-tuning: a third of pre-training's
        c.optim.warmup_steps = 10
        c.checkpoint.every = 50
    else:
        c.train.stage = arg
    return c

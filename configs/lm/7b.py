"""The paper's audio LLM: Qwen2.5-7B backbone, 8 audio tables, 3-layer audio head at width 3584.

Real runs start from Qwen2.5-7B weights (`bajax import-hf`) and train in two stages:

  bajax train --config configs/lm/7b.py:stage1 --workdir gs://BUCKET/lm7b_s1 --config.train.init_from=CKPT
  bajax train --config configs/lm/7b.py:stage2 --workdir gs://BUCKET/lm7b_s2 --config.train.init_from=gs://BUCKET/lm7b_s1/checkpoints

Chat fine-tuning (`:sft`) on dialogues prepared from a manifest of `chat` rows (bajax/data/chat.py), from a
pre-trained (or imported) run: every parameter trains (or only LoRA adapters, with --config.train.lora.rank),
loss on the assistant turns only:

  bajax prepare --manifest dialogues.jsonl --out gs://BUCKET/chat --tokenizer TOKENIZER_RUN
  bajax train --config configs/lm/7b.py:sft --workdir gs://BUCKET/lm7b_sft --config.data.source=gs://BUCKET/chat \\
      --config.train.init_from=gs://BUCKET/lm7b_s2/checkpoints --config.data.text_tokenizer=TOKENIZER_JSON

Check that the recipe fits a slice before renting it, and launch it on every worker of the pod:

  bajax plan --config configs/lm/7b.py:stage2 --topology v5p-256
  launch/tpu_pod.sh --tpu NAME --zone ZONE --type v5p-256 --config configs/lm/7b.py:stage1 --workdir gs://BUCKET/lm7b_s1
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
    # Pod recipe, checked with `bajax plan --config configs/lm/7b.py --topology v5p-256` (launch/README.md):
    # pure FSDP over the whole slice (each chip holds 1/N of parameters and Adam moments, gathered per layer),
    # batch over data x fsdp, full rematerialisation so only each layer's input is kept for the backward pass.
    m.remat = "full"
    # The text loss 2048 positions at a time: whole rows of 152k-vocabulary fp32 logits would take 10 GB per
    # 16k-token row (bajax/lm/losses.py text_cross_entropy)
    m.text_loss_chunk = 2048
    c.mesh.data = 1
    c.mesh.fsdp = -1                  # fill: 128 chips of v5p-256, 64 GPUs of h100x64, ...
    c.mesh.tensor = 1
    c.train.stage = "" if stage == "sft" else stage
    c.train.steps = 50000
    c.train.batch_size = 256          # packed rows per step: 256 x 4096 = 1.05M tokens
    c.train.grad_accum = 1            # 2 rows per chip on 128 chips; raise it on smaller slices
    # At most 8k tokens per chip per micro-step (bajax.train.step.micro_steps): on v5p-256 4k rows keep one
    # micro-step (2 rows per chip) and 16k rows (--config.data.seq_len=16384) take two of one row each; on
    # h100x64 (4 rows per GPU) 4k takes two micro-steps, 16k four
    c.train.max_tokens_per_device = 8192
    c.data.seq_len = 4096
    # Stage 1 trains only the audio embeddings and head (fresh, higher lr); stage 2 everything but the text
    # embedding and LM head, gently, to keep the text ability of the Qwen2.5 initialisation.
    c.optim.lr = 1e-4 if stage == "stage1" else 2e-5
    c.optim.end_lr_ratio = 0.1
    c.optim.warmup_steps = 1000 if stage == "stage1" else 2000
    c.checkpoint.every = 1000
    c.checkpoint.keep = 3
    c.metrics.log_every = 50
    if stage == "sft":
        for task in c.data.mixture:
            c.data.mixture[task] = 1.0 if task == "chat" else 0.0
        c.train.eval_tasks = ("chat",)
        c.train.steps = 3000
        c.train.batch_size = 64       # 64 x 4096 tokens per step: SFT sets are ~1000x smaller than pre-training
        c.optim.lr = 1e-5
        c.optim.warmup_steps = 100
        c.checkpoint.every = 500
    return c

"""Paper-size Baichuan-Audio-Tokenizer (SPEC sections 1-2): Whisper-large-v3 encoder, 4x bridge to dim 5120,
8-layer RVQ (8192, 4096, 2048, 1024 x5), 8-layer causal decoder, refine net; ~0.9B trainable parameters.

  bajax train --config configs/tokenizer/base.py --workdir gs://BUCKET/runs/tokenizer_base \
      --config.data.source=gs://BUCKET/prepared --config.data.text_tokenizer=/path/qwen2.5/tokenizer.json \
      --config.model.align_lm_checkpoint=gs://BUCKET/runs/qwen2.5_1.5b

The alignment loss's frozen LM is the paper's 1.5B LLM: `model.align_lm` has the Qwen2.5-1.5B shape with the
Qwen vocabulary (so data.text_tokenizer must be Qwen's tokenizer.json); point `align_lm_checkpoint` at an LM
run holding its weights (e.g. an imported Qwen2.5-1.5B). A random 1.5B LM would only cost compute.
"""

from bajax.config import defaults


def get_config():
    c = defaults("tokenizer")
    m = c.model
    m.dtype = "bfloat16"
    m.remat = "full"
    m.d_model, m.encoder_layers, m.encoder_heads, m.encoder_ffn = 1280, 32, 20, 5120
    m.rvq.codebook_sizes = (8192, 4096, 2048, 1024, 1024, 1024, 1024, 1024)
    m.decoder_layers, m.decoder_heads, m.decoder_ffn = 8, 20, 5120
    m.refine_channels = (256, 256, 256, 256)
    m.replace.steps = 20000                 # 10% -> 100% of samples take the VQ output
    m.loss.align_weight = 0.1               # lambda2
    m.loss.commit.start, m.loss.commit.end, m.loss.commit.steps = 0.05, 0.25, 20000

    lm = m.align_lm                         # Qwen2.5-1.5B shape, frozen
    lm.vocab, lm.vocab_size = "qwen", 151936
    lm.hidden, lm.layers, lm.heads, lm.kv_heads, lm.head_dim, lm.mlp = 1536, 28, 12, 2, 128, 8960
    lm.tie_embeddings = True
    lm.dtype = "bfloat16"
    lm.remat = "full"

    c.train.steps = 200000
    c.train.batch_size = 256
    c.train.eval_every = 5000
    c.train.eval_speech = 4                 # PESQ/STOI/mel L1/STFT of 4 held-out utterances (~2 s on the host)
    c.optim.lr = 1e-4
    c.optim.warmup_steps = 2000
    c.checkpoint.every = 2000
    c.data.audio.crop_seconds = 8.0
    c.data.audio.text_len = 128
    return c

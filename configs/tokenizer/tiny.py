"""Tiny Baichuan-Audio-Tokenizer on the embedded real-speech corpus; trains on a laptop CPU in minutes.

  bajax train --config configs/tokenizer/tiny.py --workdir runs/tok_tiny
  bajax encode bajax/data/corpus/audio/q0005-en.flac --checkpoint runs/tok_tiny -o runs/tok_tiny/codes
  bajax decode runs/tok_tiny/codes/q0005-en.npy --checkpoint runs/tok_tiny -o runs/tok_tiny/mel

Every technique of the paper is on (EMA + Laplace smoothing, L2 constraint, dead-code restart, Gumbel
sampling, layerwise dropout, replacement curriculum, commitment, multi-scale mel loss, text alignment), with
schedules shortened to the run length; `eval_mel_mae` on the held-out split is logged at the end.

Frozen LM of the alignment loss: by default a RANDOMLY initialised frozen tiny audio LLM
(`model.align_lm`, the configs/lm/tiny.py shape, byte vocabulary like the transcripts), because a fresh
checkout has no trained LM and this config must run alone. A random frozen LM still gives a real objective
(the trainable projection and the encoder must make a fixed random decoder emit the transcript), but not the
paper's semantic one. With a text LM trained first, point the loss at it:
  bajax train --config configs/lm/tiny.py --workdir runs/lm_tiny
  bajax train --config configs/tokenizer/tiny.py --workdir runs/tok_tiny_lm \
      --config.model.align_lm_checkpoint=runs/lm_tiny
"""

from bajax.config import defaults


def get_config():
    c = defaults("tokenizer")
    c.train.steps = 600
    c.train.batch_size = 8
    c.train.eval_every = 300              # halfway and at the end: eval_mel_mae on the held-out split
    c.train.eval_batches = 0              # the whole held-out split (every 10th corpus document)
    c.train.eval_speech = 4               # + PESQ/STOI/mel L1/STFT of 4 held-out utterances: ~3 s per evaluation
    c.optim.lr = 3e-3
    c.optim.warmup_steps = 20
    c.optim.weight_decay = 0.01
    c.checkpoint.every = 200
    c.metrics.log_every = 10
    c.metrics.tensorboard = False

    c.data.audio.crop_seconds = 3.2       # 40 code frames; most corpus segments fit whole (keep transcript)
    c.data.audio.text_len = 64            # corpus transcripts are <= 49 UTF-8 bytes

    m = c.model                           # the tiny shape is the default model section
    m.rvq.restart_after = 20              # short run: restart codes unused for 20 steps
    m.replace.steps = 100                 # 10% -> 100% VQ output over the first 100 steps
    m.loss.align_weight = 0.1             # lambda2
    m.loss.commit.start = 0.05            # lambda3 ramps up while the codebooks settle
    m.loss.commit.end = 0.25
    m.loss.commit.steps = 100
    return c

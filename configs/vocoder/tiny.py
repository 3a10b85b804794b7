"""Tiny HiFT vocoder (GAN) on the embedded real-speech corpus; learns to speak on a laptop CPU in minutes.

  bajax train --config configs/vocoder/tiny.py --workdir runs/vocoder_tiny
  bajax vocode some.wav --checkpoint runs/vocoder_tiny -o copy.wav          # copy synthesis, to listen

The generator keeps the reference structure (upsampling 8 x 5 x 3, iSTFT 16 / 4, 480 samples per mel frame)
at 1/16 of its channels; the discriminators keep every period, FFT size and stride at small widths. Both
optimizers are the reference's (Adam, constant 2e-4, clip 5); a larger rate gets a tiny run further in its
few hundred steps.
"""

from bajax.config import defaults


def get_config():
    c = defaults("vocoder")
    c.train.steps = 600
    c.train.batch_size = 8
    c.optim.lr = 1e-3
    c.optim_disc.lr = 1e-3
    c.checkpoint.every = 200
    c.metrics.log_every = 20
    c.train.eval_every = 300
    c.train.eval_batches = 2
    c.train.eval_speech = 4              # + copy synthesis of 4 whole held-out utterances: ~3 s per evaluation
    c.data.audio.crop_seconds = 0.24     # 12 mel frames = 5,760 samples per row
    return c

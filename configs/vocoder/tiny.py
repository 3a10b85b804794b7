"""Tiny HiFT vocoder (GAN) on the embedded real-speech corpus; learns to speak on a laptop CPU in minutes.

  bajax train --config configs/vocoder/tiny.py --workdir runs/vocoder_tiny
  bajax vocode some.wav --checkpoint runs/vocoder_tiny -o copy.wav          # copy synthesis, to listen

The generator keeps the reference structure (upsampling 8 x 5 x 3, iSTFT 16 / 4, 480 samples per mel frame)
at 1/4 of its channels (1.25M parameters); the discriminators keep every period, FFT size and stride at small
widths. Both optimizers are the reference's (Adam, constant 2e-4, clip 5); a larger rate gets a tiny run
further in its few hundred steps. Two departures for a run of minutes, measured on held-out copy synthesis
(bench/RESULTS_vocoder.md): the generator is 4x wider than 1/16 (its step is overhead-bound, so width costs
little: mel L1 at step 300 0.96 -> 0.70), and the discriminators join at step 400 (`model.loss.adversarial_start`):
before it the generator learns the mel alone, at ~0.3 s a step instead of ~0.7 s.
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
    c.model.base_channels = 128          # the reference's 512 / 4
    c.model.loss.adversarial_start = 400
    return c

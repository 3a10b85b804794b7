"""The reference HiFT vocoder (Baichuan-Audio's `Cosy24kVocoder`, CosyVoice 2) trained as a GAN with the
reference's discriminators, losses and optimizers (CosyVoice-2 `train_conf_gan`).

  bajax train --config configs/vocoder/base.py --workdir gs://BUCKET/runs/vocoder \
      --config.data.source=gs://BUCKET/prepared
  bajax import-torch --src hift.safetensors --out runs/hift --config configs/vocoder/base.py   # released weights
  bajax train --config configs/vocoder/base.py --workdir runs/hift_ft \
      --config.train.init_from=runs/hift/checkpoints                                     # fine-tune them

Crops of 24,480 samples in the reference (51 mel frames); bajax crops whole 80 ms code frames: 1.04 s = 52.
"""

from bajax.config import defaults
from bajax.vocoder.config import reference_model_config
from bajax.vocoder.disc_config import default_discriminator_config


def get_config():
    c = defaults("vocoder")
    c.model.update(reference_model_config())
    c.model.disc = default_discriminator_config("reference")
    c.train.steps = 500_000
    c.train.batch_size = 64
    c.checkpoint.every = 5000
    c.metrics.log_every = 100
    c.train.eval_every = 5000
    c.train.eval_speech = 4                 # PESQ/STOI/mel L1/STFT of 4 held-out utterances (~2 s on the host)
    c.data.audio.crop_seconds = 1.04
    return c

"""The vocoder kind: HiFT (CosyVoice 2 / Baichuan-Audio's `Cosy24kVocoder`) trained as a GAN.

Every step runs two updates in one jitted step, in the reference's order (CosyVoice `train_one_epoc_gan`):
the discriminators' (`optim_disc`: their LSGAN + TPR loss against the generator's current output), then the
generator's (`optim`: adversarial + 2 x feature matching + 45 x mel L1 + TPR + F0 L1) against the
discriminators just updated. Both start from the reference's settings: Adam (no weight decay) at a constant
2e-4, gradients clipped at norm 5 (CosyVoice-2 yaml `train_conf_gan`). Data: fixed-length crops of the 24 kHz
wave with its flow-decoder mel and F0 (bajax.data.audio_pipeline.VocoderView). Evaluation reports the
generator's losses on held-out crops. The generator exports as hift.pt's keys; the discriminators, which
CosyVoice never released, export beside it under its HiFiGan training module's names (`companions`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from ml_collections import ConfigDict

from bajax.interop.entries import Src
from bajax.interop.layout_vocoder import hift
from bajax.interop.layout_vocoder_disc import discriminator_layout
from bajax.models.audio import code_frames, dataset_of
from bajax.models.registry import register
from bajax.models.spec import Field, ModelKind, ReferenceLayout, SpeechEval, Update
from bajax.vocoder import flops as vocoder_flops
from bajax.vocoder.config import default_model_config as generator_config
from bajax.vocoder.disc_config import default_discriminator_config, default_gan_loss_config
from bajax.vocoder.model import HiFTGAN

SAMPLE_RATE, HOP = 24000, 480

FIELDS = {
    "wave24": Field(np.float32, ("batch", "length")),
    "mel24": Field(np.float32, ("batch", "length", None)),
    "pitch": Field(np.float32, ("batch", "length")),
    "mel_lengths": Field(np.int32, ("batch",), optional=True),
}


def default_model_config() -> ConfigDict:
    m = generator_config()
    m.disc = default_discriminator_config("tiny")      # configs/vocoder/base.py: the reference widths
    m.loss = default_gan_loss_config()
    return m


def reference_optimizer() -> ConfigDict:
    """CosyVoice-2 `train_conf_gan`: Adam lr 2e-4, constant schedule, grad clip 5 (generator and discriminator)."""
    return ConfigDict({"lr": 2e-4, "end_lr_ratio": 1.0, "warmup_steps": 0, "decay_steps": 0, "b1": 0.9, "b2": 0.999,
                       "eps": 1e-8, "weight_decay": 0.0, "clip_norm": 5.0})


def extra_config() -> dict:
    """The generator's `optim` and the discriminators' `optim_disc`, both the reference's."""
    return {"optim": reference_optimizer(), "optim_disc": reference_optimizer()}


def build_model(model_cfg, rngs, frozen=None):
    del frozen
    return HiFTGAN(model_cfg, rngs=rngs)


def _adversarial(weights, totals):
    """Whether the discriminators take part at this step: always in evaluation and from `adversarial_start`
    on in training (before it: the reconstruction warm-up)."""
    if weights.adversarial_start <= 0 or not totals.get("train", True):
        return True
    return totals["step"] >= weights.adversarial_start


def generator_loss(model_cfg, frozen=None):
    weights = model_cfg.loss

    def loss_fn(model, batch, rng, totals):
        return model.generator_loss(batch, rng, weights, adversarial=_adversarial(weights, totals))

    return loss_fn


def discriminator_loss(model_cfg, frozen=None):
    weights = model_cfg.loss

    def loss_fn(model, batch, rng, totals):
        return model.discriminator_loss(batch, rng, weights, adversarial=_adversarial(weights, totals))

    return loss_fn


def speech_eval(model_cfg, frozen=None) -> SpeechEval:
    """Copy synthesis for `train.eval_speech`: the generator on each held-out utterance's true 24 kHz mel (its
    padding is the log floor, silence) against the true 24 kHz wave; the source's noise from a fixed key. Mel
    L1 is that of the flow mel of the two waves."""
    import jax
    import jax.numpy as jnp

    def run(model, batch):
        wave, _ = model.generator(batch["mel24"], jax.random.key(0))
        return {"ref": batch["wave24"], "est": wave.astype(jnp.float32), "lengths": batch["wave24_lengths"]}

    return SpeechEval(sample_rate=SAMPLE_RATE, run=run, needs=("wave16", "wave24", "mel24"))


def loss_totals(batch: dict) -> dict:
    return {}     # every row is a full crop: plain means, no normalisers


def batch_shapes(cfg) -> dict[str, tuple[int, ...]]:
    b, frames = cfg.train.batch_size, 4 * code_frames(cfg.data)
    return {"wave24": (b, HOP * frames), "mel24": (b, frames, 80), "pitch": (b, frames), "mel_lengths": (b,)}


def flops_per_step(cfg) -> float:
    """Analytic: the discriminator turn runs the generator (no gradient) and the discriminators on real and
    fake waves with their backward (x3); the generator turn runs both with the backward."""
    frames = 4 * code_frames(cfg.data)
    g = vocoder_flops.generator_flops(cfg.model, frames)
    d = 2 * vocoder_flops.discriminator_flops(cfg.model.disc, frames * HOP)
    return (g + 3 * d + 3 * g + 3 * d) * cfg.train.batch_size


def work_units(batch: dict) -> tuple[str, float]:
    return "audio_seconds", float(batch["wave24"].size) / SAMPLE_RATE


def reference_config(cfg) -> dict:
    m = cfg.model
    return {"hift_config": {
        "in_channels": m.in_channels, "base_channels": m.base_channels, "nb_harmonics": m.nb_harmonics,
        "sampling_rate": m.sampling_rate, "nsf_alpha": m.nsf_alpha, "nsf_sigma": m.nsf_sigma,
        "nsf_voiced_threshold": m.nsf_voiced_threshold, "upsample_rates": list(m.upsample_rates),
        "upsample_kernel_sizes": list(m.upsample_kernel_sizes),
        "istft_params": {"n_fft": m.istft_n_fft, "hop_len": m.istft_hop},
        "resblock_kernel_sizes": list(m.resblock_kernel_sizes),
        "resblock_dilation_sizes": [list(d) for d in m.resblock_dilation_sizes],
        "source_resblock_kernel_sizes": list(m.source_resblock_kernel_sizes),
        "source_resblock_dilation_sizes": [list(d) for d in m.source_resblock_dilation_sizes],
        "lrelu_slope": m.lrelu_slope, "audio_limit": m.audio_limit,
        "f0_predictor": {"num_class": 1, "in_channels": m.in_channels, "cond_channels": m.f0_cond_channels}}}


def _under(module: str, entries: list) -> list:
    """Entries built from one module's leaves, re-rooted under `module/` (where that module lives here)."""
    return [dataclasses.replace(e, srcs=tuple(Src((module,) + s.path, s.index) for s in e.srcs)) for e in entries]


def _leaves_of(module: str, shapes: dict) -> dict:
    return {path[1:]: shape for path, shape in shapes.items() if path[0] == module}


def entries(shapes) -> list:
    """hift.pt's keys (no prefix) from the generator's leaves."""
    return _under("generator", hift(_leaves_of("generator", shapes)))


def companions(shapes, cfg) -> dict[str, list]:
    """The discriminators under CosyVoice's HiFiGan names (`discriminator.mpd.*`, `discriminator.mrd.*`), for
    OUT/discriminator/model.safetensors: the reference never released its own, so a bajax export is how they
    travel."""
    return {"discriminator": _under("discriminator",
                                    discriminator_layout(_leaves_of("discriminator", shapes), cfg.model.disc))}


def nonreference(cfg) -> list[str]:
    """Cosy24kVocoder hard-codes its F0 predictor's depth (5 convs) and the conv_post slope 0.01 (fixed here)."""
    m = cfg.model
    return [] if m.f0_layers == 5 else [f"model.f0_layers={m.f0_layers}: the reference F0 predictor has 5 convs"]


GENERATOR_MODULES = frozenset({"m_source", "conv_pre", "ups", "source_downs", "source_resblocks", "resblocks",
                               "conv_post", "f0_predictor"})


def owns(name: str) -> bool:
    return name.split(".", 1)[0] in GENERATOR_MODULES


KIND = register(ModelKind(
    name="vocoder",
    default_model_config=default_model_config,
    build_model=build_model,
    loss=generator_loss,
    loss_totals=loss_totals,
    batch_fields=FIELDS,
    batch_shapes=batch_shapes,
    make_dataset=dataset_of("VocoderView"),
    flops_per_step=flops_per_step,
    work_units=work_units,
    layout=ReferenceLayout(entries=entries, reference_config=reference_config, owns=owns, nonreference=nonreference,
                           companions=companions),
    updates=(Update("disc", lambda path: path.startswith("discriminator/"), discriminator_loss, "optim_disc",
                    start=lambda cfg: cfg.model.loss.adversarial_start),
             Update("gen", lambda path: path.startswith("generator/"), generator_loss, "optim")),
    extra_config=extra_config,
    speech_eval=speech_eval,
))

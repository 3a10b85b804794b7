"""The HiFT vocoder's GAN losses (CosyVoice `cosyvoice/hifigan/hifigan.py`), all in fp32.

Generator turn:      gen_loss + 2.0 fm_loss + 45 mel_l1 + 1.0 tpr_loss + f0_loss
Discriminator turn:  disc_loss + 1.0 tpr_loss          (the generated wave carries no gradient)

    gen_loss   LSGAN: sum over discriminators of mean((1 - D(fake))^2)
    disc_loss  sum of mean((1 - D(real))^2) + mean(D(fake)^2)
    fm_loss    2 x sum over discriminators and their feature maps of mean|fmap_real - fmap_fake|
    tpr_loss   truncated pointwise relativistic loss: per discriminator, with m the LOWER median of D(real) -
               D(fake) (torch.median of an even count), L = mean((D(real) - D(fake) - m)^2) over the elements
               where D(real) < D(fake) + m, and the term min(L, tau), tau = 0.04
    mel_l1     mean |mel(fake) - mel(real)| with the yaml's one transform, `hift_loss_mel_24k`
    f0_loss    mean |f0_pred - f0_target| over [B, T] (unvoiced targets are 0 and count too)

No masks: training waves are fixed-length random crops (CosyVoice's `truncate`, 24480 samples = 51 frames;
shorter utterances are zero-padded and the padding is trained on as silence, as in the reference), so every
mean is over the whole batch.

Deviation: where no element satisfies D(real) < D(fake) + m (only possible for 1 or 2 elements, or all equal
differences) torch's mean of nothing is NaN; here the term is 0 instead, so a degenerate batch cannot poison
training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from bajax.audio.mel import hift_loss_mel_24k

f32 = jnp.float32


def _mean(x: jax.Array) -> jax.Array:
    return jnp.mean(x.astype(f32))


def generator_adv_loss(d_fake: Sequence[jax.Array]) -> jax.Array:
    return sum(_mean((1.0 - d.astype(f32)) ** 2) for d in d_fake)


def discriminator_adv_loss(d_real: Sequence[jax.Array], d_fake: Sequence[jax.Array]) -> jax.Array:
    return sum(_mean((1.0 - r.astype(f32)) ** 2) + _mean(g.astype(f32) ** 2)
               for r, g in zip(d_real, d_fake, strict=True))


def feature_matching_loss(fmap_real: Sequence[Sequence[jax.Array]],
                          fmap_fake: Sequence[Sequence[jax.Array]]) -> jax.Array:
    total = sum(_mean(jnp.abs(r.astype(f32) - g.astype(f32)))
                for dr, dg in zip(fmap_real, fmap_fake, strict=True) for r, g in zip(dr, dg, strict=True))
    return 2.0 * total


def lower_median(x: jax.Array) -> jax.Array:
    """torch.median(x) over all elements: sorted[(n - 1) // 2], the lower of the two middles of an even count."""
    flat = jnp.ravel(x)
    return jnp.sort(flat)[(flat.size - 1) // 2]


def tpr_loss(d_real: Sequence[jax.Array], d_fake: Sequence[jax.Array], tau: float = 0.04) -> jax.Array:
    total = jnp.zeros((), f32)
    for r, g in zip(d_real, d_fake, strict=True):
        r, g = r.astype(f32), g.astype(f32)
        diff = r - g
        m = lower_median(diff)
        keep = r < g + m                         # the reference's comparison, not diff < m (rounding differs)
        count = jnp.sum(keep)
        rel = jnp.sum(jnp.where(keep, (diff - m) ** 2, 0.0)) / jnp.maximum(count, 1)
        total = total + (tau - jax.nn.relu(tau - rel))
    return total


def mel_l1_loss(real: jax.Array, fake: jax.Array,
                transforms: Sequence[Callable] = (hift_loss_mel_24k,)) -> jax.Array:
    """Sum over transforms of mean |mel(fake) - mel(real)|; waves [B, N] of one length."""
    total = jnp.zeros((), f32)
    for t in transforms:
        mel_r, _ = t(real.astype(f32))
        mel_g, _ = t(fake.astype(f32))
        total = total + jnp.mean(jnp.abs(mel_g - mel_r))
    return total


def f0_l1_loss(f0_pred: jax.Array, f0_target: jax.Array) -> jax.Array:
    if f0_pred.shape != f0_target.shape:
        raise ValueError(f"f0 prediction {f0_pred.shape} and target {f0_target.shape} must have one shape [B, T]")
    return _mean(jnp.abs(f0_pred.astype(f32) - f0_target.astype(f32)))


def generator_objective(disc, real: jax.Array, fake: jax.Array, f0_pred: jax.Array, f0_target: jax.Array, *,
                        mel_weight: float = 45.0, fm_weight: float = 2.0, tpr_weight: float = 1.0,
                        tpr_tau: float = 0.04, f0_weight: float = 1.0):
    """HiFiGan.forward_generator: `disc` is a MultipleDiscriminator; real/fake waves [B, N]; f0 [B, T].

    Returns (total, {gen_loss, fm_loss, mel_l1, tpr_loss, f0_loss}). Differentiate with respect to the
    generator only (the discriminator's parameters are another optimiser's).
    """
    d_real, d_fake, fmap_real, fmap_fake = disc(real, fake)
    parts = {"gen_loss": generator_adv_loss(d_fake),
             "fm_loss": feature_matching_loss(fmap_real, fmap_fake),
             "mel_l1": mel_l1_loss(real, fake),
             "tpr_loss": tpr_loss(d_real, d_fake, tpr_tau) if tpr_weight != 0 else jnp.zeros((), f32),
             "f0_loss": f0_l1_loss(f0_pred, f0_target)}
    total = (parts["gen_loss"] + fm_weight * parts["fm_loss"] + mel_weight * parts["mel_l1"]
             + tpr_weight * parts["tpr_loss"] + f0_weight * parts["f0_loss"])
    return total, parts


def discriminator_objective(disc, real: jax.Array, fake: jax.Array, *, tpr_weight: float = 1.0,
                            tpr_tau: float = 0.04):
    """HiFiGan.forward_discriminator: the generated wave is a constant here (torch.no_grad in the reference).

    Returns (total, {disc_loss, tpr_loss}).
    """
    d_real, d_fake, _, _ = disc(real, jax.lax.stop_gradient(fake))
    parts = {"disc_loss": discriminator_adv_loss(d_real, d_fake),
             "tpr_loss": tpr_loss(d_real, d_fake, tpr_tau) if tpr_weight != 0 else jnp.zeros((), f32)}
    return parts["disc_loss"] + tpr_weight * parts["tpr_loss"], parts

"""The trained unit of the vocoder kind: the HiFT generator and its discriminators in one module.

One module keeps them in one checkpoint (with one optimizer state each, see `bajax.models.vocoder`), so a
run resumes both exactly and `init_from` can start from an imported generator. Only the generator is needed
to synthesise (`HiFTGAN.generator`, or `bajax.speech` loading a vocoder run).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from bajax.vocoder import losses
from bajax.vocoder.discriminator import MultipleDiscriminator
from bajax.vocoder.generator import HiFTGenerator


def fast_init_rngs(rngs: nnx.Rngs) -> nnx.Rngs:
    """Rngs on the `unsafe_rbg` generator, seeded from `rngs`: the GAN has ~900 small parameter arrays, each
    drawn by its own call, and XLA:CPU compiles a threefry hash (per draw and per fold-in) into a kernel of
    its own; RngBitGenerator is one op. The initial values stay deterministic per seed (on one backend)."""
    bits = jax.random.key_data(rngs.params()).reshape(-1)[:2].astype(jnp.uint32)
    return nnx.Rngs(params=jax.random.wrap_key_data(jnp.concatenate([bits, bits ^ jnp.uint32(0x9E3779B9)]),
                                                    impl="unsafe_rbg"))


class HiFTGAN(nnx.Module):
    def __init__(self, cfg, *, rngs: nnx.Rngs):
        rngs = fast_init_rngs(rngs)
        self.generator = HiFTGenerator(cfg, rngs=rngs)
        self.discriminator = MultipleDiscriminator(cfg.disc, rngs=rngs)

    def discriminator_loss(self, batch: dict, key: jax.Array, weights, *, adversarial=True) -> tuple[jax.Array, dict]:
        """The discriminator's turn: the generator's output is a constant (no_grad in the reference). With
        `adversarial` False (a traced bool: the reconstruction warm-up) the loss is 0 and nothing runs."""
        def objective():
            fake, _ = self.generator(batch["mel24"], key)
            total, parts = losses.discriminator_objective(
                self.discriminator, batch["wave24"], jax.lax.stop_gradient(fake), tpr_weight=weights.tpr_weight,
                tpr_tau=weights.tpr_tau)
            return total, {"disc_loss": parts["disc_loss"], "disc_tpr_loss": parts["tpr_loss"]}

        return _when(adversarial, objective)

    def generator_loss(self, batch: dict, key: jax.Array, weights, *, adversarial=True) -> tuple[jax.Array, dict]:
        """The generator's turn: adversarial + feature matching + mel L1 + TPR + F0 (reference weights). With
        `adversarial` False (a traced bool: the reconstruction warm-up) only mel L1 + F0, and the
        discriminators do not run; the adversarial parts then read 0."""
        fake, f0 = self.generator(batch["mel24"], key)

        def full():
            total, parts = losses.generator_objective(
                self.discriminator, batch["wave24"], fake, f0, batch["pitch"], mel_weight=weights.mel_weight,
                fm_weight=weights.fm_weight, tpr_weight=weights.tpr_weight, tpr_tau=weights.tpr_tau,
                f0_weight=weights.f0_weight)
            return total, {k: v.astype(jnp.float32) for k, v in parts.items()}

        def reconstruction():
            parts = {"gen_loss": 0.0, "fm_loss": 0.0, "mel_l1": losses.mel_l1_loss(batch["wave24"], fake),
                     "tpr_loss": 0.0, "f0_loss": losses.f0_l1_loss(f0, batch["pitch"])}
            parts = {k: jnp.asarray(v, jnp.float32) for k, v in parts.items()}
            return weights.mel_weight * parts["mel_l1"] + weights.f0_weight * parts["f0_loss"], parts

        return _when(adversarial, full, reconstruction)


def _when(on, objective, otherwise=None):
    """objective() where `on` (a Python or traced bool), else otherwise() (default: a zero loss with the same
    metrics); a Python True traces no conditional."""
    if on is True:
        return objective()
    if otherwise is None:
        otherwise = lambda: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(objective))  # noqa: E731
    return jax.lax.cond(on, objective, otherwise)

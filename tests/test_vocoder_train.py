"""HiFT GAN training in the one trainer: two optimizers in one step (discriminators, then generator), 1 vs 8
devices, exact stop/resume of both states and the data iterator, freezing one side, held-out evaluation."""

from pathlib import Path

import jax
import numpy as np
import pytest

from bajax.config import load
from bajax.train.trainer import Trainer, train
from tests.test_train import flat_params, run_steps

TINY = str(Path(__file__).resolve().parents[1] / "configs" / "vocoder" / "tiny.py")
# 2 code frames = 8 mel frames = 3,840 samples per row: the smallest crop every discriminator accepts. The
# schedules' length is pinned (not train.steps), so every test compiles the same step (the compilation cache
# then serves the later tests; the GAN step takes minutes to compile on 2 cores). The learning rates are the
# reference's 2e-4 (the tiny config's 1e-3 is for short CPU runs): Adam's first update is ~lr x sign(g), so
# a parameter whose gradient is ~0 moves by +-lr on the sign of rounding noise, which differs between 1 and 8
# devices (another summation order) and shows in the next step's losses in proportion to lr.
FAST = ["data.audio.crop_seconds=0.16", "train.batch_size=8", "metrics.log_every=1", "metrics.tensorboard=false",
        "checkpoint.every=2", "train.eval_every=0", "checkpoint.async_save=false", "optim.decay_steps=4",
        "optim_disc.decay_steps=4", "train.eval_batches=1", "optim.lr=2e-4", "optim_disc.lr=2e-4",
        "train.eval_speech=0",   # the held-out speech metrics: test_eval_during_training.py
        # Two periods and one resolution: the trainer's mechanics do not depend on how many discriminators
        # there are, and the step compiles in half the time (the full set is tested in test_vocoder_disc.py).
        "model.disc.mpd_periods=(2, 3)", "model.disc.mrd_fft_sizes=(512,)",
        # The mechanics at the narrow generator, with the discriminators from the first step (the reference).
        "model.base_channels=32", "model.loss.adversarial_start=0"]
ONE = jax.devices()[:1]
METRICS = ("loss", "loss_disc", "loss_gen", "disc_loss", "gen_loss", "fm_loss", "mel_l1", "f0_loss", "tpr_loss",
           "grad_norm_disc", "grad_norm_gen")


def tiny(*overrides):
    return load(TINY, FAST + list(overrides))


def _series(result) -> dict[str, np.ndarray]:
    return {k: np.array([m[k] for m in result.metrics]) for k in METRICS}


def test_both_sides_train_in_one_step_and_evaluation_reports_the_generator(tmp_path):
    trainer = Trainer(tiny("train.steps=4"), str(tmp_path), devices=ONE)
    assert set(trainer.abstract_state["opt"]) == {"disc", "gen"}      # one optimizer state per side
    before, after, losses, state = run_steps(trainer, 2)
    changed = {name.split("/")[0] for name in before if not np.array_equal(before[name], after[name])}
    assert changed == {"generator", "discriminator"}
    assert all(np.isfinite(losses))
    with trainer.scope():
        row = trainer.evaluate(state)
    assert {"eval_mel_l1", "eval_gen_loss", "eval_f0_loss", "eval_loss"} <= set(row)
    assert np.isfinite(row["eval_mel_l1"])


def test_reconstruction_warm_up_holds_the_discriminators_and_their_optimizer_until_it_ends(tmp_path):
    """model.loss.adversarial_start=2: steps 0-1 train the generator on mel L1 + F0 alone; the discriminators
    and their Adam state stay untouched, so step 2 is their first update (Adam's count 1, not 3)."""
    from bajax import sharding

    def counts(opt):
        return [int(x) for path, x in jax.tree_util.tree_flatten_with_path(opt)[0]
                if "count" in jax.tree_util.keystr(path)]

    trainer = Trainer(tiny("train.steps=4", "model.loss.adversarial_start=2"), str(tmp_path), devices=ONE)
    with trainer.scope():
        state = trainer.fresh_state()
        fresh = flat_params(state["model"])
        step_fn, data = trainer.compiled_step(), iter(trainer.dataset())
        rows = []
        for _ in range(3):
            state, metrics = step_fn(state, sharding.to_global(next(data), trainer.mesh))
            rows.append({k: float(v) for k, v in metrics.items()})
            if len(rows) == 2:
                held = flat_params(state["model"])
                assert set(counts(state["opt"]["disc"])) == {0} and set(counts(state["opt"]["gen"])) == {2}
        after = flat_params(state["model"])
    for name in fresh:
        if name.startswith("discriminator"):
            assert np.array_equal(held[name], fresh[name]), name
    assert any(not np.array_equal(held[n], fresh[n]) for n in fresh if n.startswith("generator"))
    assert any(not np.array_equal(after[n], fresh[n]) for n in fresh if n.startswith("discriminator"))
    assert set(counts(state["opt"]["disc"])) == {1}
    for row in rows[:2]:   # the warm-up objective: 45 x mel L1 + F0, nothing adversarial
        assert row["gen_loss"] == row["fm_loss"] == row["tpr_loss"] == row["loss_disc"] == 0.0
        np.testing.assert_allclose(row["loss"], 45.0 * row["mel_l1"] + row["f0_loss"], rtol=1e-6)
    assert rows[2]["gen_loss"] > 0 and rows[2]["fm_loss"] > 0 and rows[2]["loss_disc"] > 0


def test_each_optimizer_holds_only_what_it_trains_and_freezing_applies():
    def opt_paths(trainer, side):
        return {"/".join(str(getattr(k, "key", k)) for k in path)
                for path, _ in jax.tree_util.tree_flatten_with_path(trainer.abstract_state["opt"][side])[0]}

    trainer = Trainer(tiny(), "/tmp/unused", devices=ONE)
    assert any("discriminator" in p for p in opt_paths(trainer, "disc"))
    assert not any("generator" in p for p in opt_paths(trainer, "disc"))
    assert not any("discriminator" in p for p in opt_paths(trainer, "gen"))
    frozen = Trainer(tiny(r"train.freeze=('generator/f0_predictor/.*',)"), "/tmp/unused", devices=ONE)
    assert any("f0_predictor" in p for p in opt_paths(trainer, "gen"))
    assert not any("f0_predictor" in p for p in opt_paths(frozen, "gen"))


@pytest.mark.slow
def test_one_device_equals_eight_devices(tmp_path):
    one = train(tiny("train.steps=2", "mesh.data=-1"), str(tmp_path / "a"), quiet=True, devices=ONE)
    eight = train(tiny("train.steps=2", "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"), str(tmp_path / "b"),
                  quiet=True)
    a, b = _series(one), _series(eight)
    for k in METRICS:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-5, err_msg=k)


@pytest.mark.slow
def test_stop_and_resume_gives_the_same_losses(tmp_path):
    cfg = tiny("train.steps=4")
    full = train(cfg, str(tmp_path / "full"), quiet=True, devices=ONE)
    first = train(cfg, str(tmp_path / "split"), quiet=True, stop_after=2, devices=ONE)
    second = train(cfg, str(tmp_path / "split"), quiet=True, devices=ONE)
    assert [m["step"] for m in second.metrics] == [3, 4]
    resumed = {k: [m[k] for m in first.metrics + second.metrics] for k in METRICS}
    for k in METRICS:
        np.testing.assert_array_equal(resumed[k], [m[k] for m in full.metrics], err_msg=k)
    state = Trainer(cfg, str(tmp_path / "full"), devices=ONE).restore_latest()
    again = Trainer(cfg, str(tmp_path / "split"), devices=ONE).restore_latest()
    a, b = flat_params(state["model"]), flat_params(again["model"])
    assert all(np.array_equal(a[k], b[k]) for k in a)

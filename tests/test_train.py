"""The training engine on the tiny audio LLM: sharding by rules, 1 vs 8 devices, gradient accumulation,
two-stage freezing, exact resume, metrics, config errors."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from bajax import cli, sharding
from bajax.config import ConfigError, load
from bajax.train import freeze
from bajax.train.trainer import Trainer, train

TINY = str(Path(__file__).resolve().parents[1] / "configs" / "lm" / "tiny.py")
FAST = ["data.seq_len=128", "metrics.log_every=1", "metrics.tensorboard=false", "optim.warmup_steps=2",
        "checkpoint.every=2"]


def tiny(*overrides, stage=""):
    return load(TINY + (f":{stage}" if stage else ""), FAST + list(overrides))


def flat_params(model_state) -> dict[str, np.ndarray]:
    return {freeze.path_str(p): np.asarray(jax.device_get(v.get_value()))
            for p, v in nnx.to_flat_state(model_state) if isinstance(v, nnx.Param)}


def run_steps(trainer: Trainer, n: int):
    """(params before, params after, per-step losses) of n steps from a fresh state."""
    with trainer.scope():
        state = trainer.fresh_state()
        before = flat_params(state["model"])
        step_fn, data = trainer.compiled_step(), iter(trainer.dataset())
        losses = []
        for _ in range(n):
            state, metrics = step_fn(state, sharding.to_global(next(data), trainer.mesh))
            losses.append(float(metrics["loss"]))
        return before, flat_params(state["model"]), losses, state


def test_parameters_sharded_as_rules_say(tmp_path):
    trainer = Trainer(tiny("mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"), str(tmp_path))
    with trainer.scope():
        state = trainer.fresh_state()
    checked = 0
    for path, var in nnx.to_flat_state(state["model"]):
        value = var.get_value()
        want = sharding.fit_spec(sharding.logical_to_spec(sharding.variable_axes(var), trainer.rules),
                                 value.shape, trainer.mesh)
        assert value.sharding.spec == want, freeze.path_str(path)
        checked += 1
    assert checked > 20
    # Concretely: the stacked query projection [layers, embed, heads, head_dim] is split over fsdp x tensor,
    # so each device holds a quarter of it.
    q = state["model"]["layers"]["layers"]["self_attn"]["q_proj"]["kernel"].get_value()
    assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
    assert q.addressable_shards[0].data.size * 4 == q.size
    # Adam moments follow the parameters' shardings.
    mu = jax.tree.leaves(state["opt"], is_leaf=lambda x: isinstance(x, nnx.Variable))
    assert any(getattr(m, "get_value", None) and m.get_value().sharding.spec == q.sharding.spec for m in mu)


@pytest.mark.slow
def test_one_device_equals_eight_devices(tmp_path):
    one = train(tiny("train.steps=3", "mesh.data=-1"), str(tmp_path / "a"), quiet=True,
                devices=jax.devices()[:1])
    eight = train(tiny("train.steps=3", "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"), str(tmp_path / "b"),
                  quiet=True)
    a = np.array([m["loss"] for m in one.metrics])
    b = np.array([m["loss"] for m in eight.metrics])
    assert len(a) == 3 and np.all(np.isfinite(a))
    np.testing.assert_allclose(b, a, rtol=1e-5)
    assert not np.allclose(a[0], a[-1], rtol=1e-3)  # it trains: losses move


@pytest.mark.slow
def test_grad_accumulation_equals_larger_batch(tmp_path):
    _, p1, l1, _ = run_steps(Trainer(tiny("train.grad_accum=1"), str(tmp_path / "a")), 2)
    _, p4, l4, _ = run_steps(Trainer(tiny("train.grad_accum=4"), str(tmp_path / "b")), 2)
    np.testing.assert_allclose(l4, l1, rtol=1e-5)
    for name in p1:
        # A key bias shifts every score of a query by the same amount, so softmax makes its true gradient
        # exactly 0; Adam then divides pure round-off by its own square root, so those updates are noise.
        if name.endswith("k_proj/bias"):
            continue
        np.testing.assert_allclose(p4[name], p1[name], rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.slow
def test_stage1_trains_only_audio_parts(tmp_path):
    trainer = Trainer(tiny(stage="stage1"), str(tmp_path))
    before, after, _, state = run_steps(trainer, 2)
    audio = [n for n in before if n.startswith(("audio_embed/", "audio_head/"))]
    backbone = [n for n in before if n not in audio]
    assert audio and backbone
    for n in backbone:
        assert np.array_equal(before[n], after[n]), f"stage 1 changed backbone parameter {n}"
    # Every audio matrix moves (vectors such as unused end-of-audio rows may legitimately stay).
    assert all(not np.array_equal(before[n], after[n]) for n in audio if before[n].ndim >= 2)
    # Frozen parameters carry no optimizer state: the moments hold exactly the audio parameters.
    n_opt = sum(x.size for x in jax.tree.leaves(state["opt"]) if x.ndim > 0)
    assert n_opt == 2 * sum(before[n].size for n in audio)


@pytest.mark.slow
def test_stage2_keeps_text_embedding_and_lm_head(tmp_path):
    before, after, _, _ = run_steps(Trainer(tiny(stage="stage2"), str(tmp_path)), 2)
    frozen = [n for n in before if n.startswith(("embed_tokens/", "lm_head/"))]
    assert len(frozen) == 2
    for n in before:
        if n in frozen:
            assert np.array_equal(before[n], after[n]), n
    moved = [n for n in before if n not in frozen and not np.array_equal(before[n], after[n])]
    assert any(n.startswith("layers/") for n in moved) and any(n.startswith("audio_head/") for n in moved)


@pytest.mark.slow
def test_stop_and_resume_gives_the_same_losses(tmp_path):
    cfg = tiny("train.steps=6")
    full = train(cfg, str(tmp_path / "full"), quiet=True)
    first = train(cfg, str(tmp_path / "split"), quiet=True, stop_after=3)
    assert first.step == 3
    second = train(cfg, str(tmp_path / "split"), quiet=True)
    assert [m["step"] for m in second.metrics] == [4, 5, 6]
    resumed = [m["loss"] for m in first.metrics + second.metrics]
    np.testing.assert_array_equal(resumed, [m["loss"] for m in full.metrics])


@pytest.mark.slow
def test_periodic_evaluation_on_held_out_split(tmp_path):
    result = train(tiny("train.steps=4", "train.eval_every=2", "train.eval_batches=2", "metrics.log_every=3"),
                   str(tmp_path), quiet=True)
    evaluated = [m for m in result.metrics if "eval_loss" in m]
    assert [m["step"] for m in evaluated] == [2, 4]
    assert all(np.isfinite(m["eval_loss"]) and m["eval_text_loss"] > 0 for m in evaluated)
    assert evaluated[0]["eval_loss"] != evaluated[1]["eval_loss"]
    # Text-only evaluation: the same run scored on the text task alone has no audio targets at all.
    trainer = Trainer(tiny("train.eval_tasks=('text',)", "train.eval_batches=2"), str(tmp_path))
    with trainer.scope():
        scores = trainer.evaluate(trainer.restore_latest())
    assert scores["eval_audio_codes"] == 0 and scores["eval_text_loss"] > 0


def test_init_from_stage1_checkpoint(tmp_path):
    s1 = tiny("train.steps=2", stage="stage1")
    train(s1, str(tmp_path / "s1"), quiet=True)
    trainer = Trainer(tiny("train.steps=2", f"train.init_from={tmp_path / 's1' / 'checkpoints'}",
                           stage="stage2"), str(tmp_path / "s2"))
    with trainer.scope():
        init = flat_params(trainer.fresh_state()["model"])
    s1_trainer = Trainer(s1, str(tmp_path / "s1"))
    with s1_trainer.scope():
        from bajax.train.checkpoint import Checkpointer

        ck = Checkpointer(str(tmp_path / "s1" / "checkpoints"), every=1, keep=1)
        saved = flat_params(ck.restore(2, s1_trainer.abstract_with_shardings())["model"])
        ck.close()
    assert init.keys() == saved.keys()
    for n in init:
        assert np.array_equal(init[n], saved[n]), n


def test_cli_train_writes_metrics_and_resumes(tmp_path, capsys):
    workdir = str(tmp_path / "run")
    args = ["train", "--config", TINY, "--workdir", workdir, "--config.train.steps=4",
            *[f"--config.{o}" for o in FAST]]
    assert cli.main(args + ["--stop-after", "2"]) == 0
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "resumed from step 2" in out
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for key in ("step", "loss", "lr", "grad_norm", "step_time", "tokens_per_sec", "mfu", "text_loss",
                "audio_loss", "audio_acc_0", "audio_acc_7"):
        assert key in records[-1], key
    assert records[-1]["tokens_per_sec"] > 0 and 0 < records[-1]["mfu"] < 1
    # `bajax evaluate` scores the newest checkpoint on held-out data, here text-only.
    capsys.readouterr()
    text_only = [f"--config.data.mixture.{t}=0" for t in ("asr", "aqa", "s2tt", "intlv", "tts", "itts", "audio")]
    assert cli.main(["evaluate", "--config", TINY, "--workdir", workdir, "--config.data.seq_len=128",
                     "--config.data.mixture.text=1", *text_only]) == 0
    out = capsys.readouterr().out
    scores = json.loads(out[out.index("{"):])
    assert scores["step"] == 4 and scores["eval_text_loss"] > 0 and scores["eval_audio_loss"] == 0


def test_config_errors_name_the_key(capsys, tmp_path):
    with pytest.raises(ConfigError, match=r"stpes.*Did you mean.*steps.*Valid keys"):
        load(TINY, ["train.stpes=5"])
    with pytest.raises(ConfigError, match=r"'trian.steps'|'trian'.*Did you mean 'train'"):
        load(TINY, ["trian.steps=5"])
    with pytest.raises(ConfigError, match=r"train.steps.*int.*'five'"):
        load(TINY, ["train.steps=five"])
    wrong_type = tmp_path / "wrong_type.py"
    wrong_type.write_text("from bajax.config import defaults\n\ndef get_config():\n    c = defaults('lm')\n"
                          "    c.model.dtype = 3\n    return c\n")
    with pytest.raises(ConfigError, match=r"wrong_type.py.*'dtype'.*str"):
        load(str(wrong_type))
    bad = tmp_path / "bad.py"
    bad.write_text("from bajax.config import defaults\n\ndef get_config():\n    c = defaults('lm')\n"
                   "    c.model.hiden = 32\n    return c\n")
    with pytest.raises(ConfigError, match=r"hiden"):
        load(str(bad))
    assert cli.main(["train", "--config", TINY, "--workdir", str(tmp_path / "x"),
                     "--config.optim.lrr=1"]) == 2
    assert "unknown config key 'optim.lrr'. Did you mean 'optim.lr'?" in capsys.readouterr().err

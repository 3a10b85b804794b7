"""The tokenizer task: trains through the common trainer, text alignment through a frozen LM, additivity."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bajax import config as config_lib
from bajax import sharding
from bajax.models import tokenizer as tokenizer_kind
from bajax.tokenizer.align import FrozenWeight, TextAlignment
from bajax.train import freeze
from bajax.train.checkpoint import Checkpointer

ROOT = Path(__file__).resolve().parents[1]


def tiny_cfg(**train):
    cfg = config_lib.load(str(ROOT / "configs" / "tokenizer" / "tiny.py"))
    # 8 test devices; the held-out speech metrics are tested in test_eval_during_training.py
    cfg.train.update(steps=8, batch_size=8, eval_every=8, eval_batches=1, eval_speech=0, **train)
    cfg.optim.warmup_steps = 1
    cfg.checkpoint.every = 0
    cfg.checkpoint.async_save = False
    cfg.metrics.log_every = 1
    cfg.data.audio.crop_seconds = 1.28
    cfg.model.rvq.restart_after = 2        # so a few steps exercise the dead-code restart too
    return cfg


def batch_of(rows=4, seconds=1.28, seed=0):
    r = np.random.default_rng(seed)
    n = int(seconds * 16000)
    lengths = np.array([n, n - 3000, n - 7000, n - 1300][:rows], np.int32)
    wave = r.standard_normal((rows, n)).astype(np.float32) * 0.1
    wave[np.arange(n)[None, :] >= lengths[:, None]] = 0.0
    tokens = r.integers(0, 256, (rows, 16)).astype(np.int32)
    weights = (np.arange(16)[None, :] < np.array([16, 9, 0, 5][:rows])[:, None]).astype(np.float32)
    return {"wave": jnp.asarray(wave), "wave_lengths": jnp.asarray(lengths), "text_tokens": jnp.asarray(tokens),
            "text_weights": jnp.asarray(weights)}


def model_of(cfg, seed=0):
    return tokenizer_kind.build_model(cfg.model, nnx.Rngs(seed))


def jitted_loss(totals, rng=None):
    """`(model, batch) -> (loss, metrics)` compiled (eager tokenizer forwards are slow on CPU); nnx.jit
    writes EMA updates back into the model."""
    return nnx.jit(lambda m, b: tokenizer_kind.loss(None)(m, b, rng, totals))


@pytest.mark.slow
def test_trains_through_the_common_trainer(tmp_path):
    """Loss falls, the EMA codebooks change, the frozen LM does not, eval_mel_mae is reported."""
    from bajax.train.trainer import Trainer

    cfg = tiny_cfg()
    trainer = Trainer(cfg, str(tmp_path))
    result = trainer.run(quiet=True)
    losses = [r["loss"] for r in result.metrics if "loss" in r]
    assert result.step == 8 and np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    last = result.metrics[-1]
    assert 0 < last["eval_mel_mae"] < 10 and "eval_align_loss" in last
    assert {"usage_7", "perplexity_7", "dead_7", "norm_mean_7", "norm_max_7"} <= set(last)
    assert abs(last["eval_depth_mean"] - 8.0) < 1e-6      # evaluation: greedy, all layers

    with trainer.scope():
        ckpt = Checkpointer(str(tmp_path / "checkpoints"), every=0, keep=1)
        final = ckpt.restore(8, trainer.abstract_with_shardings())["model"]
        ckpt.close()
        first = trainer.fresh_state()["model"]
    embed = lambda s: np.asarray(s["bridge"]["rvq"]["vq_list"][0]["codebook"]["embed"][...])
    assert not np.allclose(embed(first), embed(final))                      # EMA updated by the step
    lm = lambda s: jax.tree.leaves(jax.tree.map(np.asarray, s["align"]["lm"]))
    for a, b in zip(lm(first), lm(final), strict=True):
        np.testing.assert_array_equal(a, b)                                # frozen LM untouched
    proj = lambda s: np.asarray(s["align"]["proj"]["kernel"][...])
    assert not np.allclose(proj(first), proj(final))                        # projection trained
    assert trainer.num_trainable()[0] == sum(                               # LM outside the optimizer
        int(np.prod(v.shape)) for _, v in nnx.to_flat_state(nnx.state(model_of(cfg), nnx.Param)))


def test_alignment_gives_the_projection_a_gradient_and_the_frozen_lm_none():
    cfg = tiny_cfg()
    model = model_of(cfg)
    state = nnx.state(model)
    frozen = [p for p, v in nnx.to_flat_state(state) if isinstance(v, FrozenWeight)]
    assert frozen and all(p[:2] == ("align", "lm") for p in frozen)
    is_trainable = freeze.trainable_filter((), ())
    trainable, _ = nnx.split_state(state, is_trainable, ...)
    assert not any(p[:2] == ("align", "lm") for p, _ in nnx.to_flat_state(trainable))

    batch = batch_of()
    totals = {**tokenizer_kind.loss_totals(batch), "step": jnp.int32(0), "train": False}
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def align_loss(params):
        _, metrics = tokenizer_kind.loss(None)(nnx.merge(graphdef, params, rest, copy=True), batch, None, totals)
        return metrics["align_loss"]

    grads = jax.jit(jax.grad(align_loss))(params)
    g = dict(nnx.to_flat_state(grads))
    assert float(jnp.abs(g[("align", "proj", "kernel")][...]).sum()) > 0
    assert float(jnp.abs(g[("encoder", "conv1", "kernel")][...]).sum()) > 0   # through the STE, too
    assert not any(p[:2] == ("align", "lm") for p in g)


def test_loss_and_metrics_are_additive_over_micro_batches():
    cfg = tiny_cfg()
    # Exact only with per-utterance decoder padding: the reference's GroupNorm spans the batch's longest item.
    cfg.model.decoder_reference_padding = False
    model = model_of(cfg)
    batch = batch_of()
    totals = {**tokenizer_kind.loss_totals(batch), "step": jnp.int32(5), "train": False}
    f = jitted_loss(totals)
    loss, full = f(model, batch)
    halves = [f(model, jax.tree.map(lambda x, s=s: x[s], batch)) for s in (slice(0, 2), slice(2, 4))]
    np.testing.assert_allclose(sum(float(h[0]) for h in halves), float(loss), rtol=1e-5)
    for key in ("mel_mae", "align_loss", "commit_loss"):
        np.testing.assert_allclose(sum(float(h[1][key]) for h in halves), float(full[key]), rtol=1e-5)
    # Non-additive metrics are scaled by the micro-batch share: their sum is the mean of the halves.
    np.testing.assert_allclose(sum(float(h[1]["commit_weight"]) for h in halves), float(full["commit_weight"]))
    assert float(totals["text_tokens"]) == 30.0 and totals["rows"] == 4


def test_eval_mode_leaves_the_codebooks_alone():
    model = model_of(tiny_cfg())
    before = np.asarray(model.bridge.rvq.vq_list[0].codebook.embed[...])
    batch = batch_of()
    totals = {**tokenizer_kind.loss_totals(batch), "step": jnp.int32(0), "train": False}
    jitted_loss(totals)(model, batch)
    np.testing.assert_array_equal(before, np.asarray(model.bridge.rvq.vq_list[0].codebook.embed[...]))
    jitted_loss({**totals, "train": True}, jax.random.key(0))(model, batch)
    assert not np.array_equal(before, np.asarray(model.bridge.rvq.vq_list[0].codebook.embed[...]))


def test_frozen_lm_loads_from_an_lm_run(tmp_path):
    from bajax.lm.model import AudioLLM

    lcfg = config_lib.defaults("lm")
    lm = AudioLLM(lcfg.model, rngs=nnx.Rngs(7))
    (tmp_path / "config.json").write_text(lcfg.to_json_best_effort(indent=2))
    ckpt = Checkpointer(str(tmp_path / "checkpoints"), every=1, keep=1, async_save=False)
    ckpt.save(3, {"step": jnp.int32(3), "model": nnx.state(lm), "opt": {}}, force=True)
    ckpt.close()
    # The tokenizer kind reads the LM run's config and restores its weights onto the mesh it is given.
    tcfg = config_lib.defaults("tokenizer")
    tcfg.model.loss.align_weight, tcfg.model.align_lm_checkpoint = 0.5, str(tmp_path)
    frozen = tokenizer_kind.load_frozen(tcfg.model, sharding.make_mesh({"data": 1}, jax.devices()[:1]))
    assert frozen["align_lm"].step == 3
    align = TextAlignment(256, tokenizer_kind.align_lm_config(tcfg.model),
                          nnx.state(frozen["align_lm"].model, nnx.Param), rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(np.asarray(align.lm.embed_tokens.embedding[...]),
                                  np.asarray(lm.embed_tokens.embedding[...]))
    assert isinstance(align.lm.embed_tokens.embedding, FrozenWeight)


def test_rvq_layers_sweep_lists_1_4_6_8():
    from bajax.sweep import load_sweep

    sweep = load_sweep(str(ROOT / "configs" / "sweeps" / "rvq_layers.py"))
    assert sweep.config == "configs/tokenizer/tiny.py" and "eval_mel_mae" in sweep.metrics
    sizes = [config_lib.load(str(ROOT / sweep.config), list(o)).model.rvq.codebook_sizes for _, o in sweep.members]
    assert [len(s) for s in sizes] == [1, 4, 6, 8]
    assert sizes[-1] == config_lib.load(str(ROOT / sweep.config)).model.rvq.codebook_sizes

"""Mask-mixture training of the flow estimator (`model.train_masks`): the dense per-sample-mask attention,
the default path unchanged bit for bit, the per-sample draw, and a short trainer run with the flag on."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bajax.flow import cfm
from bajax.flow.attention import FULL_CHUNK, chunked_attention, masked_attention
from bajax.flow.config import default_model_config
from bajax.flow.model import FlowDecoder, train_mask_choices
from bajax.flow.prenet import length_mask

ROOT = Path(__file__).resolve().parents[1]
M = 4                                     # model.chunk of the tiny models here
T = 16                                    # mel frames


def _qkv(seed=0, b=3, t=11, h=2, d=8):
    r = np.random.default_rng(seed)
    return tuple(jnp.asarray(r.normal(size=(b, t, h, d)), jnp.float32) for _ in range(3))


def _full_reference(q, k, v, valid):
    """Unmasked softmax attention over each row's valid keys, in numpy float64."""
    q, k, v, valid = *(np.asarray(a, np.float64) for a in (q, k, v)), np.asarray(valid)
    s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    s = np.where(valid[:, None, None, :], s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", p, v)


# ----------------------------------------------------------------------------------------------- attention


def test_masked_attention_matches_the_chunked_core_causal_and_full():
    q, k, v = _qkv()
    valid = length_mask(jnp.array([11, 7, 3]), 11)
    for chunk in (4, 5):
        got = masked_attention(q, k, v, valid, jnp.full((3,), chunk, jnp.int32))
        np.testing.assert_allclose(got, chunked_attention(q, k, v, valid, chunk), rtol=0, atol=1e-6)
    got = masked_attention(q, k, v, valid, jnp.ones((3,), jnp.int32))
    np.testing.assert_allclose(got, chunked_attention(q, k, v, valid, 4, causal=True), rtol=0, atol=1e-6)
    for full in (FULL_CHUNK, 11):          # any chunk >= T is full attention
        got = masked_attention(q, k, v, valid, jnp.full((3,), full, jnp.int32))
        np.testing.assert_allclose(got, _full_reference(q, k, v, valid), rtol=0, atol=1e-6)


def test_masked_attention_uses_each_rows_own_chunk():
    q, k, v = _qkv(1)
    valid = length_mask(jnp.array([11, 9, 6]), 11)
    got = masked_attention(q, k, v, valid, jnp.array([M, 1, FULL_CHUNK], jnp.int32))
    want = [chunked_attention(q, k, v, valid, M)[0], chunked_attention(q, k, v, valid, M, causal=True)[1],
            _full_reference(q, k, v, valid)[2]]
    for b in range(3):
        np.testing.assert_allclose(got[b], want[b], rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------------- models


def _cfg(**kw):
    c = default_model_config()
    c.update(dict(chunk=M, prenet_layers=1, mid_blocks=1, channels=32, time_hidden=128, ffn=128, head_dim=16,
                  prenet_hidden=32, prenet_in_hidden=128, prenet_ffn=128))
    c.update(kw)
    return c


def _batch(seed=0):
    r = np.random.default_rng(seed)
    b = 4
    return (jnp.asarray(r.normal(size=(b, 20, 80)), jnp.float32), jnp.array([20, 15, 9, 20]),
            jnp.asarray(r.normal(size=(b, T, 80)) - 4.0, jnp.float32), jnp.array([16, 12, 7, 16]))


def _loss(model, rng):
    cond, cond_len, mel, mel_len = _batch()
    return nnx.jit(lambda m, r: m.loss_sums(cond, cond_len, mel, mel_len, r))(model, rng)


def _old_loss_sums(model, cond, cond_lengths, mel, mel_lengths, rng):
    """FlowDecoder.loss_sums as it was before `train_masks` (the estimator called with four arguments)."""
    length = mel.shape[1]
    valid = length_mask(mel_lengths, length)
    mu = model.prior(cond, cond_lengths, mel_lengths, length)
    target = mel.astype(jnp.float32)
    prior = jnp.sum(jnp.where(valid[..., None], jnp.abs(mu - target), 0.0))
    flow = cfm.cfm_loss_sum(lambda x, m, t, v: model.estimator(x, m, t, v), target, mu, valid, rng,
                            sigma_min=model.sigma_min, cfg_dropout=model.cfg_dropout,
                            t_schedule=model.t_schedule)
    return {"cfm": flow, "prior": prior}


@pytest.fixture(scope="module")
def models():
    """The same parameters (the flag adds none) with the flag empty, on, and on with 'chunk' only."""
    off = FlowDecoder(_cfg(), rngs=nnx.Rngs(0))
    out = {"off": off}
    for name, spec in (("on", "full,causal,chunk,chunk2"), ("chunk", "chunk")):
        # What FlowDecoder(_cfg(train_masks=spec)) sets, on a copy of the same parameters (one init is enough).
        out[name] = nnx.clone(off)
        out[name].train_masks = nnx.eval_shape(lambda s=spec: FlowDecoder(_cfg(train_masks=s),
                                                                          rngs=nnx.Rngs(0))).train_masks
    return out


def test_flag_empty_is_todays_loss_bit_for_bit(models):
    cond, cond_len, mel, mel_len = _batch()
    rng = jax.random.key(7)
    old = nnx.jit(lambda m, r: _old_loss_sums(m, cond, cond_len, mel, mel_len, r))(models["off"], rng)
    new = _loss(models["off"], rng)
    assert models["off"].train_chunks(rng, 4) is None
    for key in ("cfm", "prior"):
        np.testing.assert_array_equal(np.asarray(new[key]), np.asarray(old[key]))
    # A config without the key (a run configured before it existed) is the default too.
    no_key = _cfg()
    del no_key["train_masks"]
    assert nnx.eval_shape(lambda: FlowDecoder(no_key, rngs=nnx.Rngs(0))).train_masks is None


def test_flag_changes_the_training_loss_only(models):
    rng = jax.random.key(7)
    off, on = _loss(models["off"], rng), _loss(models["on"], rng)
    assert float(on["prior"]) == float(off["prior"])                  # the Pre-Net is untouched
    assert abs(float(on["cfm"]) - float(off["cfm"])) > 1e-6 * abs(float(off["cfm"]))
    # 'chunk' alone is the fixed block-causal mask through the dense path: the same loss up to rounding.
    np.testing.assert_allclose(float(_loss(models["chunk"], rng)["cfm"]), float(off["cfm"]), rtol=1e-5)
    # Sampling never uses the mixture: the flag-on model samples exactly like the default one.
    cond, cond_len, _, mel_len = _batch()
    sample = lambda m: nnx.jit(lambda m: m.sample(cond, cond_len, mel_len, T, jax.random.key(1), steps=2))(m)  # noqa: E731
    np.testing.assert_array_equal(np.asarray(sample(models["on"])), np.asarray(sample(models["off"])))


def test_chunk_draw_is_per_sample_uniform_and_reproducible(models):
    model = models["on"]
    draws = [np.asarray(model.train_chunks(jax.random.key(i), 8)) for i in range(4)]
    assert set(np.concatenate(draws).tolist()) == {FULL_CHUNK, 1, M, 2 * M}
    assert any(len(set(d.tolist())) > 1 for d in draws)                 # drawn per sample, not per batch
    np.testing.assert_array_equal(np.asarray(model.train_chunks(jax.random.key(0), 8)), draws[0])
    many = np.asarray(model.train_chunks(jax.random.key(123), 8000))
    for size in (FULL_CHUNK, 1, M, 2 * M):
        assert abs(np.mean(many == size) - 0.25) < 0.03


def test_train_masks_parsing():
    assert train_mask_choices("", 100) is None and train_mask_choices("  ", 100) is None
    sizes, probs = train_mask_choices("full,causal,chunk,chunk2", 100)
    assert sizes == (FULL_CHUNK, 1, 100, 200) and probs == (0.25,) * 4
    sizes, probs = train_mask_choices("full:3, 50", 100)
    assert sizes == (FULL_CHUNK, 50) and probs == (0.75, 0.25)
    with pytest.raises(ValueError, match="unknown mask 'chunk3'"):
        train_mask_choices("full,chunk3", 100)
    with pytest.raises(ValueError, match="must be > 0"):
        train_mask_choices("full:0", 100)
    with pytest.raises(ValueError, match="unknown mask"):
        FlowDecoder(_cfg(train_masks="bidirectional"), rngs=nnx.Rngs(0))


# ------------------------------------------------------------------------------------------------ trainer


def test_trainer_runs_with_the_mask_mixture(tmp_path):
    from bajax.config import load
    from bajax.models import flow as flow_kind
    from bajax.train.trainer import train

    cfg = load(str(ROOT / "configs" / "flow" / "tiny.py"), [
        "train.steps=3", "train.batch_size=2", "train.eval_every=0", "train.eval_speech=0",
        "checkpoint.async_save=false", "metrics.tensorboard=false", "metrics.log_every=1",
        "data.audio.crop_seconds=0.8", "model.chunk=10", "model.train_masks=full,causal,chunk,chunk2"])
    assert cfg.model.train_masks == "full,causal,chunk,chunk2"
    # Training-only: export's reference config and its structural checks do not see the flag.
    plain = cfg.copy_and_resolve_references()
    plain.model.train_masks = ""
    assert flow_kind.nonreference(cfg) == flow_kind.nonreference(plain)
    assert flow_kind.reference_config(cfg) == flow_kind.reference_config(plain)
    result = train(cfg, str(tmp_path), quiet=True, devices=jax.devices()[:1])
    assert result.step == 3
    losses = [row["loss"] for row in result.metrics if "loss" in row]
    assert losses and all(np.isfinite(losses)), result.metrics

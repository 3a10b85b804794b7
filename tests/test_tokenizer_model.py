"""The whole tokenizer: lengths, encode/decode round trip, additive losses, and overfitting one utterance."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from bajax.tokenizer.config import default_model_config
from bajax.tokenizer.model import Tokenizer, loss_totals

CORPUS = Path(__file__).resolve().parents[1] / "bajax" / "data" / "corpus" / "audio"


def utterance(code_frames: int) -> np.ndarray:
    """A real speech excerpt (the packaged corpus) of exactly `code_frames` x 80 ms at 16 kHz."""
    sf = pytest.importorskip("soundfile")
    soxr = pytest.importorskip("soxr")
    files = sorted(CORPUS.glob("*-en.flac")) if CORPUS.is_dir() else []
    if not files:
        pytest.skip("the packaged corpus is not available")
    wav, sr = sf.read(files[0], dtype="float32", always_2d=True)
    wav = soxr.resample(wav.mean(1), sr, 16000).astype(np.float32)
    n = code_frames * 1280
    assert len(wav) >= n + 8000
    return wav[4000: 4000 + n]


def tiny(**loss):
    m = default_model_config()
    m.replace.start = 1.0                 # every sample takes the VQ output from the first step
    for k, v in loss.items():
        m.loss[k] = v
    return m, Tokenizer(m, rngs=nnx.Rngs(0))


def test_lengths_and_round_trip():
    m, tok = tiny()
    wav = np.random.default_rng(0).standard_normal((2, 10 * 1280)).astype(np.float32) * 0.1
    lengths = jnp.array([10 * 1280, 6 * 1280 + 300])
    codes, code_lengths = tok.encode(jnp.asarray(wav), lengths)
    assert codes.shape == (2, 10, 8) and code_lengths.tolist() == [10, 6]
    assert (np.asarray(codes)[1, 6:] == -1).all() and (np.asarray(codes)[1, :6] >= 0).all()
    out = tok.decode(codes, code_lengths, target_frames=50)
    assert out["hidden_states_before_dconv2"].shape == (2, 39, m.d_model)
    assert out["lengths_before_dconv2"].tolist() == [39, 23]
    assert out["mel_lengths"].tolist() == [48, 28]            # the reference's int(L100 * 0.625)
    totals = loss_totals(lengths, m)
    assert float(totals["frames"]) == 50 + 30 and float(totals["code_frames"]) == 16


def _train_step(graphdef, tx, m):
    @jax.jit
    def step(params, others, opt_state, wave, lengths, key, i):
        def loss_fn(params):
            # copy=True: the EMA variables are mutated inside this (grad) trace, so they must be created in it.
            model = nnx.merge(graphdef, params, others, copy=True)
            sums, _ = model.loss_sums(wave, lengths, train=True, rng=key, step=i)
            loss, parts = model.combine(sums, loss_totals(lengths, m), i)
            return loss, (parts, nnx.split(model, nnx.Param, ...)[2])   # incl. the updated CodebookEMA

        (loss, (parts, new_others)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_others, opt_state, loss, parts

    return step


def test_tiny_tokenizer_overfits_one_utterance():
    """Paper-style training on one 1.28 s utterance: the eval (greedy, all-VQ) mel MAE falls by half."""
    m, tok = tiny()
    m.rvq.restart_after = 5
    tok = Tokenizer(m, rngs=nnx.Rngs(0))
    wave = jnp.asarray(utterance(16))[None]
    lengths = jnp.array([wave.shape[1]])
    graphdef, params, others = nnx.split(tok, nnx.Param, ...)
    tx = optax.adam(2e-3)
    opt_state = tx.init(params)
    step = _train_step(graphdef, tx, m)

    @jax.jit
    def eval_mae(params, others):
        model = nnx.merge(graphdef, params, others)
        sums, _ = model.loss_sums(wave, lengths, train=False)
        return model.combine(sums, loss_totals(lengths, m), 0)[1]["refined_mae"]

    before = float(eval_mae(params, others))
    for i in range(150):
        params, others, opt_state, loss, parts = step(params, others, opt_state, wave, lengths,
                                                      jax.random.key(i), i)
        assert np.isfinite(float(loss))
    after = float(eval_mae(params, others))
    print(f"refined mel MAE {before:.3f} -> {after:.3f}")
    assert after <= 0.5 * before, (before, after)

"""Flow decoder training: additive loss, a tiny model overfits one real utterance, the task trains."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from bajax import sharding
from bajax.audio.mel import flow_mel_24k
from bajax.flow import conditioning
from bajax.flow.config import default_model_config
from bajax.models import flow as flow_kind

CORPUS = Path(__file__).resolve().parents[1] / "bajax" / "data" / "corpus" / "audio"


@pytest.fixture(scope="module")
def utterance():
    """2 s of real speech as a flow batch of one: mel24 [1, 100, 80] and wave16 [1, 32000]."""
    sf = pytest.importorskip("soundfile")
    soxr = pytest.importorskip("soxr")
    wav, sr = sf.read(sorted(CORPUS.glob("*.flac"))[0], dtype="float32", always_2d=True)
    wav = wav.mean(axis=1)
    w24 = soxr.resample(wav, sr, 24000)[24000 // 2: 24000 * 5 // 2].astype(np.float32)
    w16 = soxr.resample(wav, sr, 16000)[16000 // 2: 16000 * 5 // 2].astype(np.float32)
    return {"mel24": jnp.asarray(flow_mel_24k(w24))[None], "mel_lengths": jnp.array([100]),
            "wave16": jnp.asarray(w16)[None], "wave_lengths": jnp.array([32000])}


def model_config(**kw):
    c = default_model_config()
    c.update(kw)
    return c


def _model(**kw):
    return flow_kind.build_model(model_config(**kw), nnx.Rngs(0))


def _loss(frozen=None, **kw):
    """The flow kind's loss for the model config `_model(**kw)` builds."""
    return flow_kind.loss(model_config(**kw), frozen)


def test_loss_is_additive_over_micro_batches():
    r = np.random.default_rng(0)
    batch = {"mel24": jnp.asarray(r.normal(size=(4, 20, 80)), jnp.float32),
             "mel_lengths": jnp.array([20, 13, 5, 17]),
             "wave16": jnp.asarray(r.normal(size=(4, 6400)) * 0.1, jnp.float32),
             "wave_lengths": jnp.array([6400, 4160, 1600, 5440])}
    model = _model(cfg_dropout=0.0)
    totals = flow_kind.loss_totals(batch)
    assert float(totals["frames"]) == 55.0
    loss_fn = _loss(cfg_dropout=0.0)
    _, full = loss_fn(model, batch, jax.random.key(0), totals)
    halves = [loss_fn(model, jax.tree.map(lambda x, s=s: x[s], batch), jax.random.key(0), totals)[1]
              for s in (slice(0, 2), slice(2, 4))]
    # The prior does not depend on the rng: its micro-batch parts add up to the full-batch value.
    np.testing.assert_allclose(sum(float(h["prior_mae"]) for h in halves), float(full["prior_mae"]), rtol=1e-5)


def test_tokenizer_source_without_checkpoint_is_a_clear_error():
    c = default_model_config()
    c.cond_source, c.cond_dim = "tokenizer", 64
    with pytest.raises(ValueError, match="tokenizer checkpoint required: train one with configs/tokenizer/tiny.py"):
        flow_kind.build_model(c, nnx.Rngs(0))
    c.cond_source, c.cond_dim = "mel16", 64
    with pytest.raises(ValueError, match="cond_dim"):
        flow_kind.build_model(c, nnx.Rngs(0))


@pytest.mark.slow
def test_tiny_flow_decoder_overfits_one_utterance(utterance):
    """Mel MAE of the 10-step guided sample against the target falls by at least half."""
    model = _model()
    cond, cond_len = conditioning.mel16(utterance)
    target, mel_len = utterance["mel24"], utterance["mel_lengths"]
    sample = nnx.jit(lambda m: m.sample(cond, cond_len, mel_len, 100, jax.random.key(123)))

    def mae(m):
        return float(jnp.mean(jnp.abs(sample(m) - target)))

    before = mae(model)
    reps = 4  # the same utterance 4 times per step: 4 draws of (t, noise, dropout)
    batch = jax.tree.map(lambda x: jnp.repeat(x, reps, axis=0), utterance)
    totals = flow_kind.loss_totals(batch)
    opt = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
    loss_fn = _loss()

    @nnx.jit
    def step(m, opt, rng):
        (loss, _), grads = nnx.value_and_grad(lambda m: loss_fn(m, batch, rng, totals),
                                              has_aux=True)(m)
        opt.update(m, grads)
        return loss

    for i in range(150):
        step(model, opt, jax.random.key(i))
    after = mae(model)
    print(f"overfit: MAE {before:.3f} -> {after:.3f}")
    assert after <= 0.5 * before, (before, after)


@pytest.mark.slow
def test_paper_setting_conditions_on_the_frozen_tokenizer_decoder(tmp_path):
    """cond_source='tokenizer': codes -> frozen decoder hidden states (4L - 1 frames) -> Pre-Net -> loss."""
    from bajax import config as config_lib
    from bajax.tokenizer.model import Tokenizer
    from bajax.train.checkpoint import Checkpointer

    tcfg = config_lib.defaults("tokenizer")
    tok = Tokenizer(tcfg.model, rngs=nnx.Rngs(3))
    (tmp_path / "config.json").write_text(tcfg.to_json_best_effort(indent=2))
    ckpt = Checkpointer(str(tmp_path / "checkpoints"), every=1, keep=1, async_save=False)
    ckpt.save(1, {"step": jnp.int32(1), "model": nnx.state(tok), "opt": {}}, force=True)
    ckpt.close()

    settings = dict(cond_source="tokenizer", cond_dim=tcfg.model.d_model, tokenizer_checkpoint=str(tmp_path))
    model = _model(**settings)
    # The frozen tokenizer decoder, restored by the run loader onto the mesh it is given.
    mesh = sharding.make_mesh({"data": 1}, jax.devices()[:1])
    frozen = flow_kind.load_frozen(model_config(**settings), mesh)
    sizes = tcfg.model.rvq.codebook_sizes
    r = np.random.default_rng(0)
    codes = np.stack([r.integers(0, s, size=(2, 5)) for s in sizes], axis=-1).astype(np.int32)
    batch = {"codes": jnp.asarray(codes), "code_lengths": jnp.array([5, 3]),
             "mel24": jnp.asarray(r.normal(size=(2, 20, 80)) - 4.0, jnp.float32), "mel_lengths": jnp.array([20, 12])}
    cond, cond_lengths = conditioning.conditioner("tokenizer", frozen["tokenizer_decoder"])(batch)
    assert cond.shape[-1] == tcfg.model.d_model and cond_lengths.tolist() == [19, 11]   # 4L - 1 at 50 Hz
    totals = flow_kind.loss_totals(batch)
    loss_fn = _loss(frozen, **settings)
    (loss, metrics), grads = nnx.value_and_grad(
        lambda m: loss_fn(m, batch, jax.random.key(0), totals), has_aux=True)(model)
    assert np.isfinite(float(loss)) and float(metrics["prior_mae"]) > 0
    assert float(jnp.abs(grads["prenet"]["in_proj"]["kernel"][...]).sum()) > 0
    with pytest.raises(ValueError, match="needs codes"):
        conditioning.conditioner("tokenizer", frozen["tokenizer_decoder"])({"mel24": batch["mel24"]})


def test_the_frozen_decoder_is_an_argument_of_the_compiled_programs_not_a_constant(tmp_path):
    """A flow run on the paper setting passes the frozen tokenizer decoder's weights INTO its train, eval and
    speech-eval programs (bajax/train/frozen_args.py). Closed over, they became constants of every program,
    which XLA copies while compiling (0.6 GB each for the base decoder)."""
    import re

    from bajax.config import load
    from bajax.tokenizer.model import Tokenizer
    from bajax.train import frozen_args
    from bajax.train.checkpoint import Checkpointer
    from bajax.train.speech_eval import SpeechEvaluator
    from bajax.train.trainer import Trainer

    root = Path(__file__).resolve().parents[1]
    tcfg = load(str(root / "configs" / "tokenizer" / "tiny.py"), [])
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "config.json").write_text(tcfg.to_json_best_effort(indent=2))
    ckpt = Checkpointer(str(tmp_path / "tok" / "checkpoints"), every=1, keep=1, async_save=False)
    ckpt.save(1, {"step": jnp.int32(1), "model": nnx.state(Tokenizer(tcfg.model, rngs=nnx.Rngs(3))), "opt": {}},
              force=True)
    ckpt.close()
    cfg = load(str(root / "configs" / "flow" / "tiny.py"),
               ["model.cond_source=tokenizer", f"model.cond_dim={tcfg.model.d_model}",
                f"model.tokenizer_checkpoint={tmp_path / 'tok'}", "train.batch_size=2", "train.eval_speech=2",
                "data.audio.require_codes=False"])
    trainer = Trainer(cfg, str(tmp_path / "flow"))
    weights = jax.tree.leaves(frozen_args.states(trainer.frozen))
    assert weights and sum(w.size for w in weights) > 10_000
    biggest = max(w.nbytes for w in weights)

    def longest_literal(lowered) -> int:   # a constant array prints as dense<"0x..."> (2 hex digits a byte)
        return max((len(m) // 2 for m in re.findall(r'dense<"0x([0-9A-Fa-f]+)">', lowered.as_text())), default=0)

    with trainer.scope():
        state = trainer.abstract_with_shardings()
        batch = {k: jax.ShapeDtypeStruct(b.shape, b.dtype) for k, b in trainer.kind.abstract_batch(cfg).items()}
        for compiled in (trainer.compiled_step(), trainer.compiled_eval()):
            assert longest_literal(compiled.lower(state, batch)) < biggest
        speech = SpeechEvaluator(trainer)
        assert longest_literal(speech._fn.lower(state, speech.batch)) < biggest
    # The same lowering with the weights closed over (as before) holds them as literals: the check can fail.
    decoder = trainer.frozen["tokenizer_decoder"]
    closed = jax.jit(lambda codes, lengths: decoder(codes, lengths)).lower(
        jnp.zeros((1, 4, 8), jnp.int32), jnp.array([4]))
    assert longest_literal(closed) >= biggest

"""Loading a tokenizer run directory: the encode function for data preparation, the frozen decoder for flow."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bajax import config as config_lib
from bajax import runs
from bajax.models.tokenizer import load_encode_fn
from bajax.tokenizer.encode import frozen_decoder
from bajax.tokenizer.model import Tokenizer
from bajax.train.checkpoint import Checkpointer


def test_run_directory_round_trip(tmp_path):
    cfg = config_lib.defaults("tokenizer")
    with cfg.unlocked():
        cfg.model.rvq.codebook_sizes = (32, 16, 16, 8, 8, 8, 8, 8)
    tok = Tokenizer(cfg.model, rngs=nnx.Rngs(3))
    # Move the EMA state away from its initial value, as training would, so the test sees it restored.
    wave = jnp.asarray(np.random.default_rng(0).standard_normal((2, 5 * 1280)).astype(np.float32) * 0.1)
    tok.loss_sums(wave, jnp.array([5 * 1280, 3 * 1280]), train=True, rng=jax.random.key(0), step=0)
    (tmp_path / "config.json").write_text(cfg.to_json_best_effort(indent=2))
    ckpt = Checkpointer(str(tmp_path / "checkpoints"), every=1, keep=1, async_save=False)
    ckpt.save(7, {"step": jnp.int32(7), "model": nnx.state(tok), "opt": {}}, force=True)
    ckpt.close()

    loaded = runs.load(str(tmp_path), "tokenizer").model
    pure = lambda m: nnx.to_pure_dict(nnx.state(m))  # noqa: E731
    jax.tree.map(np.testing.assert_array_equal, pure(loaded), pure(tok))

    speech = np.random.default_rng(1).standard_normal(4 * 1280 + 100).astype(np.float32) * 0.1
    codes = load_encode_fn(str(tmp_path))(speech)
    want, n = tok.encode(jnp.asarray(speech)[None], jnp.array([len(speech)]))
    assert codes.shape == (4, 8) and codes.dtype == np.int32 and int(n[0]) == 4
    np.testing.assert_array_equal(codes, np.asarray(want[0]))

    decode = frozen_decoder(loaded)
    hidden, lengths = jax.jit(decode)(jnp.asarray(codes)[None], jnp.array([4]))
    ref_hidden, ref_lengths = tok.decoder.hidden(tok.bridge.decode(jnp.asarray(codes)[None]), jnp.array([4]))
    assert lengths.tolist() == ref_lengths.tolist() == [15]
    np.testing.assert_allclose(np.asarray(hidden), np.asarray(ref_hidden), atol=1e-5)

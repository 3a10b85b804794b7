"""The text loss in pieces (`model.text_loss_chunk`, bajax/lm/losses.py text_cross_entropy) and fp32 logits
from the text head's matmul: the same loss, metrics and gradients as the whole-row head."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bajax.config import load
from bajax.lm.losses import lm_loss, text_cross_entropy
from bajax.lm.model import AudioLLM
from tests.test_lm_model import make_batch, tiny_cfg


@pytest.mark.parametrize("tie", [False, True])
def test_chunked_text_loss_equals_the_whole_row(tie):
    """Pieces of 5 over rows of 12 (the last piece padded): loss and metrics to fp32 rounding, every
    gradient leaf to 1e-5 of its scale."""
    model = AudioLLM(tiny_cfg(tie_embeddings=tie), rngs=nnx.Rngs(3))
    batch = make_batch(tiny_cfg(), b=2, t=12, seed=5)

    def run(chunk):
        (loss, metrics), grads = nnx.value_and_grad(
            lambda m: lm_loss(m, batch, text_chunk=chunk, audio_capacity=()), has_aux=True)(model)
        return loss, metrics, grads

    loss0, m0, g0 = run(0)
    loss5, m5, g5 = run(5)
    np.testing.assert_allclose(float(loss5), float(loss0), rtol=1e-6)
    for k in ("text_loss", "text_acc", "text_tokens"):
        np.testing.assert_allclose(float(m5[k]), float(m0[k]), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g5), jax.tree.leaves(g0), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5 * float(np.abs(b).max()))


def test_pieces_never_hold_the_whole_rows_logits():
    """XLA's own accounting of the compiled gradient: whole rows need the [B, T, vocab] fp32 logits twice
    over (logits and their gradient; 80 MB here), pieces of 8 positions less than the logits once (19 MB:
    the rest is the embedding tables' gradients)."""
    cfg = tiny_cfg(vocab_size=16384)
    model = AudioLLM(cfg, rngs=nnx.Rngs(0))
    batch = make_batch(cfg, b=2, t=256, seed=1)
    graphdef, state = nnx.split(model)

    def grad_text(state, chunk):
        def f(s):
            ce, _ = text_cross_entropy(nnx.merge(graphdef, s), nnx.merge(graphdef, s).hidden(batch),
                                       batch["text_targets"], chunk)
            return jnp.sum(ce)
        return jax.grad(f)(state)

    def temp_bytes(chunk):
        compiled = jax.jit(grad_text, static_argnums=1).lower(state, chunk).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    whole_logits = 2 * 256 * 16384 * 4
    assert temp_bytes(0) > 2 * whole_logits
    assert temp_bytes(8) < whole_logits


def test_bf16_text_logits_are_fp32_from_the_matmul():
    cfg = tiny_cfg(dtype="bfloat16")
    model = AudioLLM(cfg, rngs=nnx.Rngs(0))
    h = jax.random.normal(jax.random.key(0), (2, 5, cfg.hidden), jnp.float32)
    got = model.text_logits(h, fp32=True)
    assert got.dtype == jnp.float32 and model.text_logits(h).dtype == jnp.bfloat16
    want = jnp.einsum("btd,dv->btv", h.astype(jnp.bfloat16).astype(jnp.float32),
                      model.lm_head.kernel[...].astype(jnp.bfloat16).astype(jnp.float32))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    # The bf16-rounded logits are further from it than fp32 rounding.
    assert float(jnp.max(jnp.abs(model.text_logits(h).astype(jnp.float32) - want))) > 1e-4


def test_large_vocabulary_configs_chunk_the_text_loss():
    assert load("configs/lm/7b.py", []).model.text_loss_chunk == 2048
    assert load("configs/lm/tiny.py", []).model.text_loss_chunk == 0

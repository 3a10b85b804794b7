"""Every attention implementation of bajax.kernels.attention that runs on CPU equals `xla`: packed rows (several
segments and padding per row), causal, GQA; forward and gradients, fp32 and bf16. Plus the `auto` choice and
the LM wired to the switch (full forward, KV-cached decoding, 1 device = 8 devices)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bajax.kernels import attention as attn
from bajax.lm import generate
from bajax.lm.model import AudioLLM
from tests.test_lm_model import make_batch, tiny_cfg

# blockwise at two block sizes (T=200 is no multiple of 64: padded blocks) and splash in Pallas interpret mode
# (the TPU kernel's forward and its dq / dkv backward kernels run on CPU interpreted).
CPU_IMPLS = [("blockwise", {"block": 64}), ("blockwise", {"block": 256}), ("splash", {"interpret": True})]
# bf16 inputs: each implementation is compared with fp32 xla on the same (bf16-rounded) inputs, and must be
# no further from it than BF16_TOL (xla in bf16 itself is ~4e-3 away in the output, ~1e-2 in gradients).
BF16_TOL = 3e-2


def _inputs(b=2, t=200, h=4, kv=2, d=16, dtype=jnp.float32, seed=0):
    ks = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(ks[0], (b, t, h, d)).astype(dtype)
    k = jax.random.normal(ks[1], (b, t, kv, d)).astype(dtype)
    v = jax.random.normal(ks[2], (b, t, kv, d)).astype(dtype)
    w = jax.random.normal(ks[3], (b, t, h, d))
    rng = np.random.default_rng(seed)
    seg = np.zeros((b, t), np.int32)
    for r in range(b):  # 4 segments of random lengths, then (row 0) 9 padding slots of segment 0
        cuts = np.sort(rng.choice(np.arange(1, t - 10), 3, replace=False))
        seg[r] = 1 + np.searchsorted(cuts, np.arange(t), side="right")
    seg[0, -9:] = 0
    return q, k, v, w, jnp.asarray(seg)


def _run(impl, kw, q, k, v, w, seg):
    def loss(q, k, v):
        out = attn.attention(q, k, v, seg, implementation=impl, **kw)
        return jnp.sum(out.astype(jnp.float32) * w), out
    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    return [np.asarray(x, np.float32) for x in (out, *grads)]


@pytest.mark.parametrize("impl,kw", CPU_IMPLS, ids=["blockwise64", "blockwise256", "splash_interpret"])
def test_equals_xla_fp32(impl, kw):
    args = _inputs()
    ref = _run("xla", {}, *args)
    got = _run(impl, kw, *args)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, ref, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("impl,kw", CPU_IMPLS, ids=["blockwise64", "blockwise256", "splash_interpret"])
def test_equals_xla_bf16(impl, kw):
    q, k, v, w, seg = _inputs(dtype=jnp.bfloat16, seed=1)
    ref = _run("xla", {}, q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32), w, seg)
    got = _run(impl, kw, q, k, v, w, seg)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, ref, strict=True):
        scale = max(1.0, float(np.abs(b).max()))
        assert np.abs(a - b).max() <= BF16_TOL * scale, name


def test_blockwise_skips_nothing_it_needs_single_segment_and_one_block():
    """T smaller than the block (one block) and a row without packing."""
    q, k, v, w, _ = _inputs(b=1, t=40, seed=2)
    seg = jnp.ones((1, 40), jnp.int32)
    ref = _run("xla", {}, q, k, v, w, seg)
    got = _run("blockwise", {"block": 512}, q, k, v, w, seg)
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_resolve_auto_and_names():
    assert attn.resolve("auto", 1024, platform="tpu") == "splash"
    assert attn.resolve("auto", 1024, platform="gpu") == "cudnn"
    assert attn.resolve("auto", 1024, platform="cpu") == "xla"
    assert attn.resolve("auto", attn.CPU_BLOCKWISE_FROM, platform="cpu") == "blockwise"
    assert attn.resolve("blockwise", 8, platform="tpu") == "blockwise"
    with pytest.raises(ValueError, match="model.attention must be one of"):
        attn.resolve("flash")
    with pytest.raises(ValueError, match="model.attention"):
        AudioLLM(tiny_cfg(attention="flash"), rngs=nnx.Rngs(0))


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs a GPU")
def test_cudnn_equals_xla_on_gpu():
    q, k, v, w, seg = _inputs(t=256, d=64, dtype=jnp.bfloat16, seed=3)
    ref = _run("xla", {}, q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32), w, seg)
    got = _run("cudnn", {}, q, k, v, w, seg)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, ref, strict=True):
        assert np.abs(a - b).max() <= BF16_TOL * max(1.0, float(np.abs(b).max())), name


@pytest.mark.parametrize("impl", ["blockwise", "splash"])
def test_lm_hidden_equals_xla_and_kv_cache_still_decodes(impl, monkeypatch):
    """The LM through the switch: packed rows (two segments + padding) give xla's hidden states and parameter
    gradients; cached decoding (which keeps the xla path with its cache mask) reproduces the full forward."""
    if impl == "splash":  # on CPU only in Pallas interpret mode
        splash = attn.splash_attention
        monkeypatch.setattr(attn, "splash_attention", lambda *a, **k: splash(*a, **dict(k, interpret=True)))
    batch = make_batch(tiny_cfg(), b=2, t=12, seed=4)
    seg = batch["segment_ids"].at[0, 6:].set(2).at[1, :2].set(0)
    pos = batch["positions"].at[0, 6:].set(jnp.arange(6)).at[1].set(jnp.maximum(jnp.arange(12) - 2, 0))
    batch = dict(batch, segment_ids=seg, positions=pos)

    w = jax.random.normal(jax.random.key(6), (2, 12, 32))

    def total(m):  # a random projection (sum(h ** 2) of RMS-normed h is nearly constant: gradients ~ 0)
        return jnp.sum(m.hidden(batch) * w)

    ref = AudioLLM(tiny_cfg(attention="xla"), rngs=nnx.Rngs(5))
    model = AudioLLM(tiny_cfg(attention=impl), rngs=nnx.Rngs(5))
    v_ref, g_ref = nnx.value_and_grad(total)(ref)
    v_got, g_got = nnx.value_and_grad(total)(model)
    np.testing.assert_allclose(float(v_got), float(v_ref), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g_got), jax.tree.leaves(g_ref), strict=True):  # 1e-5 of each leaf's scale
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5 * float(np.abs(b).max()))

    h_full = model.hidden(batch)
    h_pre, _ = generate.prefill(model, batch["tokens"], batch["audio_codes"], pos, seg, model.init_cache(2, 12))
    real = np.asarray(seg) > 0
    np.testing.assert_allclose(np.asarray(h_pre)[real], np.asarray(h_full)[real], atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_blockwise_one_device_equals_eight_devices(tmp_path):
    from bajax.train.trainer import train
    from tests.test_train import tiny

    one = train(tiny("train.steps=3", "mesh.data=-1", "model.attention=blockwise"), str(tmp_path / "a"),
                quiet=True, devices=jax.devices()[:1])
    eight = train(tiny("train.steps=3", "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2", "model.attention=blockwise"),
                  str(tmp_path / "b"), quiet=True)
    a = np.array([m["loss"] for m in one.metrics])
    b = np.array([m["loss"] for m in eight.metrics])
    assert len(a) == 3 and np.all(np.isfinite(a))
    np.testing.assert_allclose(b, a, rtol=1e-5)

"""bajax.kernels: the switch picks by platform (not device count), and every CPU-tuned kernel computes the
plain kernel's values and gradients (float64, so the two summation orders agree to rounding)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax._src.mesh import AbstractDevice

from bajax import kernels
from bajax.layers.linear import Embedding

AUTO = (jax.sharding.AxisType.Auto,)


def _abstract_mesh(platform: str, size: int):
    return jax.sharding.AbstractMesh((size,), ("data",), AUTO,
                                     abstract_device=AbstractDevice(f"{platform} test", None, platform))


def test_selector_picks_by_platform_not_device_count(monkeypatch):
    monkeypatch.delenv(kernels.ENV, raising=False)
    assert jax.default_backend() == "cpu" and jax.device_count() == 8
    assert kernels.cpu_tuned()  # no mesh: the default backend
    for n in (1, 8):  # a CPU mesh of one or of all devices: the platform decides, not the size
        with jax.set_mesh(jax.make_mesh((n,), ("data",), devices=jax.devices()[:n], axis_types=AUTO)):
            assert kernels.platform() == "cpu" and kernels.cpu_tuned()
    for platform in ("tpu", "gpu"):
        for n in (1, 4):
            with jax.sharding.use_abstract_mesh(_abstract_mesh(platform, n)):
                assert kernels.platform() == platform and not kernels.cpu_tuned()
    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    assert not kernels.cpu_tuned()


def test_selector_overrides(monkeypatch):
    monkeypatch.setenv(kernels.ENV, "plain")
    assert not kernels.cpu_tuned()
    with kernels.use("cpu"), jax.sharding.use_abstract_mesh(_abstract_mesh("tpu", 4)):
        assert kernels.cpu_tuned()  # use() wins over the environment and the platform
    with kernels.use("auto"):
        assert kernels.cpu_tuned()
    monkeypatch.setenv(kernels.ENV, "cpu")
    with jax.sharding.use_abstract_mesh(_abstract_mesh("tpu", 4)):
        assert kernels.cpu_tuned()
    monkeypatch.setenv(kernels.ENV, "fast")
    with pytest.raises(ValueError, match="BAJAX_KERNELS='fast'"):
        kernels.cpu_tuned()
    with pytest.raises(ValueError, match="kernel family"), kernels.use("tuned"):
        pass


def _both(fn, *args):
    """{family: (value, grads)} of sum(w * fn(*args)) under each kernel family, w fixed random weights."""
    out = {}
    for family in ("plain", "cpu"):
        with kernels.use(family):
            def loss(*a):
                y = fn(*a)
                leaves = jax.tree.leaves(y)
                ws = [jnp.sin(jnp.arange(x.size, dtype=x.dtype).reshape(x.shape) * 0.37 + i)
                      for i, x in enumerate(leaves)]
                return sum(jnp.sum(w * x) for w, x in zip(ws, leaves))

            out[family] = jax.value_and_grad(loss, argnums=tuple(range(len(args))))(*args)
    return out


def _assert_agree(out, rtol=1e-12, atol=1e-13):
    (v_plain, g_plain), (v_cpu, g_cpu) = out["plain"], out["cpu"]
    np.testing.assert_allclose(v_cpu, v_plain, rtol=rtol, atol=atol)
    for got, want in zip(jax.tree.leaves(g_cpu), jax.tree.leaves(g_plain), strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def _normal(seed, *shape, dtype=jnp.float64):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), dtype)


def _dot_operand_ndims(fn, *args) -> list[int]:
    jaxpr = jax.make_jaxpr(fn)(*args)
    return [e.invars[0].aval.ndim for e in jaxpr.eqns if e.primitive.name == "dot_general"]


def test_linear_plain_and_cpu_agree():
    with jax.enable_x64(True):
        x, w = _normal(0, 3, 7, 2, 3), _normal(1, 2, 3, 4, 5)
        one = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1], axis_types=AUTO)
        with jax.set_mesh(one):
            _assert_agree(_both(lambda x, w: kernels.linear(x, w, 2), x, w))
            with kernels.use("cpu"):  # unpartitioned: the flat 2-D matmul
                assert _dot_operand_ndims(lambda x, w: kernels.linear(x, w, 2), x, w) == [2]
        # partitioned (8 devices, no mesh): the CPU family keeps the general contraction (see cpu.flat_linear)
        with kernels.use("cpu"):
            assert _dot_operand_ndims(lambda x, w: kernels.linear(x, w, 2), x, w) == [4]
        _assert_agree(_both(lambda x, w: kernels.linear(x, w, 2), x, w))


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_gelu_plain_and_cpu_agree(dtype):
    with jax.enable_x64(True):
        x = jnp.linspace(-9, 9, 2001, dtype=dtype)
        tol = dict(rtol=1e-12, atol=1e-13) if dtype == jnp.float64 else dict(rtol=1e-6, atol=1e-6)
        _assert_agree(_both(kernels.gelu, x), **tol)


@pytest.mark.parametrize("stack_rows", [0, 4096])
def test_depth_map_plain_and_cpu_agree(monkeypatch, stack_rows):
    """Per-depth weights over the slices: one call on the stack (plain, short CPU slices) or one per slice."""
    monkeypatch.setattr(kernels.cpu, "STACK_ROWS", stack_rows)
    with jax.enable_x64(True):
        xs, w = [_normal(k, 6, 4) for k in range(5)], _normal(9, 5, 4, 3)

        def fn(x, k):
            batched = "knh,khf->knf" if x.ndim == 3 else "nh,hf->nf"
            return jnp.tanh(jnp.einsum(batched, x, w[k]))

        _assert_agree(_both(lambda xs, w: kernels.depth_map(fn, xs), xs, w))


@pytest.mark.parametrize("positions", [8, 3])
@pytest.mark.slow
def test_depth_attention_plain_and_cpu_agree(positions):
    with jax.enable_x64(True):
        q, k, v = ([_normal(10 * s + i, 6, 3, 16) for i in range(positions)] for s in range(3))
        _assert_agree(_both(lambda q, k, v: kernels.depth_attention(q, k, v, 16 ** -0.5), q, k, v))


def test_depth_attention_bf16_keeps_fp32_scores():
    q = [jnp.ones((2, 3, 4), jnp.bfloat16)] * 3
    for family in ("plain", "cpu"):
        with kernels.use(family):
            out = kernels.depth_attention(q, q, q, 0.5)
        assert [o.dtype for o in out] == [jnp.bfloat16] * 3
        np.testing.assert_array_equal(np.asarray(out[2], np.float32), 1.0)


@pytest.mark.parametrize("rows", [16, 2048])  # 2048: the CPU form's chunked (lax.map) path
def test_row_sq_norms_plain_and_cpu_agree(rows):
    with jax.enable_x64(True):
        _assert_agree(_both(kernels.row_sq_norms, _normal(3, rows, 8)))


@pytest.mark.slow
def test_audio_head_plain_and_cpu_agree():
    """The whole audio head under each family: same logits and parameter gradients."""
    from bajax.lm.audio_head import AudioHead

    sizes = (16, 12, 8, 8, 8, 8, 8, 8)
    with jax.enable_x64(True):
        rngs = nnx.Rngs(1)
        head = AudioHead(16, 2, 1, sizes, eps=1e-6, ffn_bias=True, dtype=jnp.float64, rngs=rngs)
        tables = nnx.List([Embedding(c + 1, 16, axes=("codebook", "embed"), dtype=jnp.float64, rngs=rngs)
                           for c in sizes])
        graphdef, params = nnx.split((head, tables))
        params = jax.tree.map(lambda p: p.astype(jnp.float64) + 0.05 * jnp.sin(jnp.arange(p.size).reshape(p.shape)),
                              params)
        rng = np.random.default_rng(0)
        h = _normal(4, 10, 16)
        codes = jnp.asarray(np.stack([rng.integers(0, c + 1, 10) for c in sizes], -1))

        def logits(params, h):
            head, tables = nnx.merge(graphdef, params)
            return head(h, codes, tables)

        _assert_agree(_both(logits, params, h), rtol=1e-10, atol=1e-12)

"""Building blocks against straightforward references: RoPE, GQA attention, masks, norms, layer stacks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bajax.layers import (
    REMAT_POLICIES,
    Attention,
    LayerNorm,
    Linear,
    RMSNorm,
    Stack,
    SwiGLU,
    apply_rope,
    attention_mask,
    dot_product_attention,
)


def _rng(seed=0):
    return np.random.default_rng(seed)


def rope_reference(x, positions, theta):
    """Rotate-half RoPE with explicit per-position loops: pair (i, i + D/2) rotates by pos * theta^(-2i/D)."""
    out = np.array(x, np.float64)
    b, t, h, d = x.shape
    for bi in range(b):
        for ti in range(t):
            for i in range(d // 2):
                ang = positions[bi, ti] * theta ** (-2.0 * i / d)
                a, c = x[bi, ti, :, i], x[bi, ti, :, i + d // 2]
                out[bi, ti, :, i] = a * np.cos(ang) - c * np.sin(ang)
                out[bi, ti, :, i + d // 2] = c * np.cos(ang) + a * np.sin(ang)
    return out


def test_rope_matches_reference_and_restarts_per_segment():
    x = _rng().normal(size=(2, 6, 3, 8)).astype(np.float32)
    pos = np.array([[0, 1, 2, 0, 1, 2], [5, 6, 7, 8, 9, 10]], np.int32)
    got = np.asarray(apply_rope(jnp.asarray(x), jnp.asarray(pos), 1e4))
    np.testing.assert_allclose(got, rope_reference(x, pos, 1e4), atol=1e-5)
    # a segment restarting at 0 is rotated exactly like the start of the row
    same = np.concatenate([x[:, :3], x[:, :3]], axis=1)
    got_same = np.asarray(apply_rope(jnp.asarray(same), jnp.asarray(pos), 1e4))
    np.testing.assert_allclose(got_same[0, 3:], got_same[0, :3], atol=1e-6)


def attention_reference(x, params, positions, mask, heads, kv_heads, theta):
    """Plain numpy GQA: repeat K/V per query group, float -inf mask, per-head softmax."""
    q = np.einsum("btd,dhk->bthk", x, params["q"]) + params["qb"]
    k = np.einsum("btd,dhk->bthk", x, params["k"]) + params["kb"]
    v = np.einsum("btd,dhk->bthk", x, params["v"]) + params["vb"]
    q, k = rope_reference(q, positions, theta), rope_reference(k, positions, theta)
    rep = heads // kv_heads
    k, v = np.repeat(k, rep, axis=2), np.repeat(v, rep, axis=2)
    s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    s = np.where(mask[:, None], s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    o = np.einsum("bhqk,bkhd->bqhd", p, v)
    return np.einsum("bqhd,hde->bqe", o, params["o"])


def test_gqa_attention_matches_reference():
    heads, kv_heads, d, e = 4, 2, 8, 16
    attn = Attention(e, heads, kv_heads, d, qkv_bias=True, rope_theta=1e4, rngs=nnx.Rngs(0))
    rng = _rng(1)
    for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
        proj.bias[...] = jnp.asarray(rng.normal(size=proj.bias[...].shape), jnp.float32)
    x = rng.normal(size=(2, 5, e)).astype(np.float32)
    pos = np.tile(np.arange(5), (2, 1)).astype(np.int32)
    seg = np.array([[1, 1, 1, 2, 2], [1, 1, 1, 1, 0]], np.int32)
    mask = np.asarray(attention_mask(jnp.asarray(seg), jnp.asarray(seg)))
    got = np.asarray(attn(jnp.asarray(x), jnp.asarray(mask), jnp.asarray(pos)))
    params = {n: np.asarray(getattr(attn, f"{n}_proj").kernel[...]) for n in "qkvo"}
    params.update({f"{n}b": np.asarray(getattr(attn, f"{n}_proj").bias[...]) for n in "qkv"})
    want = attention_reference(x.astype(np.float64), params, pos, mask, heads, kv_heads, 1e4)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)


@pytest.mark.slow
def test_causal_query_blocks_equal_one_block():
    # Packed causal attention: query blocks that skip later keys give the same values and gradients.
    r = _rng(7)
    q = jnp.asarray(r.normal(size=(2, 16, 4, 8)), jnp.float32)
    k, v = (jnp.asarray(r.normal(size=(2, 16, 2, 8)), jnp.float32) for _ in range(2))
    seg = jnp.asarray([[1] * 6 + [2] * 7 + [0] * 3, [1] * 16])
    mask = attention_mask(seg, seg)
    loss = lambda blocks: lambda q, k, v: jnp.sum(jnp.sin(dot_product_attention(q, k, v, mask, blocks)))
    want = jax.value_and_grad(loss(1), argnums=(0, 1, 2))(q, k, v)
    for blocks in (2, 4, 3):  # 3 does not divide 16: one block
        got = jax.value_and_grad(loss(blocks), argnums=(0, 1, 2))(q, k, v)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
        for g, w in zip(got[1], want[1]):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_masks_causal_block_bidirectional():
    seg = jnp.array([[1, 1, 1, 1, 2, 2, 0]])
    causal = np.asarray(attention_mask(seg, seg))[0]
    assert causal[3, 0] and not causal[0, 3] and not causal[4, 3] and causal[5, 4] and causal[6, 6]
    assert not causal[4, 6] and not causal[6, 4]  # padding and real tokens never meet
    bidi = np.asarray(attention_mask(seg, seg, pattern="bidirectional"))[0]
    assert bidi[0, 3] and not bidi[0, 4]
    pos = jnp.array([[0, 1, 2, 3, 0, 1, 0]])
    block = np.asarray(attention_mask(seg, seg, pos, pos, pattern="block_causal", chunk=2))[0]
    assert block[0, 1] and block[2, 3] and block[3, 0] and not block[1, 2] and block[4, 5]
    with pytest.raises(ValueError):
        attention_mask(seg, seg, pattern="block_causal")


def test_segment_isolation():
    """Outputs of segment 2 do not change when tokens of segment 1 or of padding change."""
    attn = Attention(16, 4, 2, 8, qkv_bias=True, rope_theta=1e4, rngs=nnx.Rngs(0))
    seg = jnp.array([[1, 1, 1, 2, 2, 2, 0, 0]])
    pos = jnp.array([[0, 1, 2, 0, 1, 2, 0, 1]])
    mask = attention_mask(seg, seg)
    x = jnp.asarray(_rng(2).normal(size=(1, 8, 16)), jnp.float32)
    y = attn(x, mask, pos)
    x2 = x.at[:, :3].set(7.0).at[:, 6:].set(-3.0)  # rewrite segment 1 and the padding
    y2 = attn(x2, mask, pos)
    np.testing.assert_array_equal(np.asarray(y[:, 3:6]), np.asarray(y2[:, 3:6]))
    assert not np.allclose(y[:, :3], y2[:, :3])
    # and a packed segment equals the same tokens alone in their own row
    alone = attn(x[:, 3:6], attention_mask(seg[:, 3:6], seg[:, 3:6]), pos[:, 3:6])
    np.testing.assert_allclose(np.asarray(alone), np.asarray(y[:, 3:6]), atol=1e-6)


def test_dot_product_attention_grouping_equals_repeated_kv():
    rng = _rng(3)
    q = jnp.asarray(rng.normal(size=(2, 4, 6, 8)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(2, 5, 2, 8)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(2, 5, 2, 8)), jnp.float32)
    mask = jnp.asarray(rng.random((2, 4, 5)) > 0.3).at[:, :, 0].set(True)
    got = dot_product_attention(q, k, v, mask)
    want = jax.nn.dot_product_attention(q, jnp.repeat(k, 3, axis=2), jnp.repeat(v, 3, axis=2),
                                        mask=mask[:, None])
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def test_norms_match_numpy():
    x = _rng(4).normal(size=(3, 10)).astype(np.float32) * 3 + 1
    rms = RMSNorm(10, eps=1e-6)
    rms.weight[...] = jnp.arange(10, dtype=jnp.float32)
    want = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-6) * np.arange(10)
    np.testing.assert_allclose(np.asarray(rms(jnp.asarray(x))), want, rtol=1e-5, atol=1e-5)
    ln = LayerNorm(10, eps=1e-5)
    ln.bias[...] = jnp.ones(10)
    want = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) + 1
    np.testing.assert_allclose(np.asarray(ln(jnp.asarray(x))), want, rtol=1e-5, atol=1e-5)
    assert LayerNorm(10, use_bias=False).bias is None


def test_linear_multi_dim_and_axes():
    lin = Linear((2, 3), 4, axes=("heads", "head_dim", "embed"), use_bias=True, rngs=nnx.Rngs(0))
    x = jnp.asarray(_rng(5).normal(size=(5, 2, 3)), jnp.float32)
    want = x.reshape(5, 6) @ lin.kernel[...].reshape(6, 4) + lin.bias[...]
    np.testing.assert_allclose(np.asarray(lin(x)), np.asarray(want), atol=1e-5)
    assert lin.kernel.get_metadata()["logical_axes"] == ("heads", "head_dim", "embed")
    assert lin.bias.get_metadata()["logical_axes"] == ("embed",)


def test_linear_flat_one_device_path_equals_the_general_contraction():
    # Under a one-device mesh Linear runs as one 2-D matmul; elsewhere (here: 8 devices, no mesh) as a
    # dot_general over the kernel's input dims. Values and gradients must agree.
    lin = Linear((2, 3), (4, 5), axes=("heads", "head_dim", "mlp", None), rngs=nnx.Rngs(1))
    x = jnp.asarray(_rng(6).normal(size=(3, 7, 2, 3)), jnp.float32)
    loss = lambda m, x: jnp.sum(jnp.sin(m(x)))
    general = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(lin, x)
    one = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1], axis_types=(jax.sharding.AxisType.Auto,))
    with jax.set_mesh(one):
        flat = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(lin, x)
    assert jax.device_count() > 1  # the general path ran above
    np.testing.assert_allclose(flat[0], general[0], rtol=1e-6)
    np.testing.assert_allclose(flat[1][0].kernel[...], general[1][0].kernel[...], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(flat[1][1], general[1][1], rtol=1e-5, atol=1e-6)


def test_stack_scan_loop_and_remat_agree():
    stack = Stack(lambda r: SwiGLU(8, 16, rngs=r), 3, rngs=nnx.Rngs(0))
    kernel = stack.layers.gate_proj.kernel
    assert kernel[...].shape == (3, 8, 16)
    assert kernel.get_metadata()["logical_axes"] == ("layers", "embed", "mlp")
    assert not np.allclose(kernel[...][0], kernel[...][1])  # layers initialised independently
    x = jnp.asarray(_rng(6).normal(size=(2, 4, 8)), jnp.float32)

    def loss(m, x):
        y, _ = m.scan(lambda layer, c, _: (c + layer(c), None), x)
        return jnp.sum(y ** 2)

    results = []
    for scan_layers in (True, False):
        for policy in REMAT_POLICIES:
            stack.scan_layers, stack.remat_policy = scan_layers, policy
            value, grads = nnx.value_and_grad(loss)(stack, x)
            results.append((value, grads.layers.up_proj.kernel[...]))
    for value, grad in results[1:]:
        np.testing.assert_allclose(value, results[0][0], rtol=1e-5)
        np.testing.assert_allclose(grad, results[0][1], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError):
        Stack(lambda r: SwiGLU(8, 16, rngs=r), 2, rngs=nnx.Rngs(0), remat_policy="bogus")


def test_gelu_exact_matches_torch_gelu_and_its_gradient():
    torch = pytest.importorskip("torch")
    from bajax.layers.mlp import gelu_exact

    x = np.linspace(-12, 12, 20001).astype(np.float32)
    grad = jax.grad(lambda v: jnp.sum(gelu_exact(v)))(jnp.asarray(x))
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.gelu(xt)
    yt.sum().backward()
    np.testing.assert_allclose(np.asarray(gelu_exact(jnp.asarray(x))), yt.detach().numpy(), atol=2e-6)
    np.testing.assert_allclose(np.asarray(grad), xt.grad.numpy(), atol=1e-6)

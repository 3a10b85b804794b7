"""Residual VQ: every training technique of SPEC section 2, each checked on a tiny codebook."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from bajax import sharding
from bajax.tokenizer.ema import CodebookEMA, laplace_smoothed
from bajax.tokenizer.rvq import ResidualVQ, sample_depth

D = 16


def make(sizes=(32, 16, 8), **kw) -> ResidualVQ:
    kw = {"restart_after": 0, "threshold": 0.0, "gumbel_tau": 0.0, "dropout_p": 0.0, "beta": 0.0} | kw
    return ResidualVQ(D, sizes, rngs=nnx.Rngs(0), **kw)


def data(b=4, t=10, seed=1, scale=3.0):
    return scale * jax.random.normal(jax.random.key(seed), (b, t, D))


@functools.cache
def _step_fn(graphdef):
    @jax.jit
    def step(state, x, mask, key):
        m = nnx.merge(graphdef, state)
        out, codes, metrics = m(x, mask, train=True, rng=key, step=3)
        return out, codes, metrics, nnx.state(m)

    return step


def train_call(rvq, x, mask, seed=0):
    """One training call as the trainer runs it: a pure jitted function of the split state."""
    graphdef, state = nnx.split(rvq)
    out, codes, metrics, new_state = _step_fn(graphdef)(state, x, mask, jax.random.key(seed))
    nnx.update(rvq, new_state)
    return out, codes, metrics


def ema_arrays(rvq):
    return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(rvq, CodebookEMA)))


def test_requantising_decoded_codes_gives_the_same_codes():
    rvq = make(sizes=(64, 32, 16, 8))
    # Codebooks of decreasing scale, as a trained RVQ has: each layer refines what the previous missed.
    for i, layer in enumerate(rvq.vq_list):
        e = layer.codebook.embed
        e[...] = e[...] / jnp.sqrt(jnp.mean(e[...] ** 2)) * 4.0 ** (-i)
    x = data(scale=1.0)
    mask = jnp.arange(10)[None, :] < jnp.array([10, 7, 3, 10])[:, None]
    codes = rvq.encode(x, mask)
    assert codes.shape == (4, 10, 4) and codes.dtype == jnp.int32
    assert (codes[~mask] == -1).all() and (codes[mask] >= 0).all()
    again = rvq.encode(rvq.decode(codes), mask)
    np.testing.assert_array_equal(np.asarray(again), np.asarray(codes))
    # The eval call agrees with encode() and does not change the state.
    before = ema_arrays(rvq)
    out, codes_call, _ = rvq(x, mask, train=False)
    np.testing.assert_array_equal(np.asarray(codes_call), np.asarray(codes))
    np.testing.assert_allclose(np.asarray(out), np.where(mask[..., None], rvq.decode(codes), 0), atol=1e-6)
    jax.tree.map(np.testing.assert_array_equal, ema_arrays(rvq), before)


@pytest.mark.parametrize("train", [False, True])
def test_straight_through_gradient_is_identity(train):
    rvq = make(gumbel_tau=1.0 if train else 0.0, dropout_p=0.5 if train else 0.0)
    graphdef, state = nnx.split(rvq)
    x = data()
    mask = jnp.arange(10)[None, :] < jnp.array([10, 6, 10, 2])[:, None]

    def out_fn(x):
        out, _, _ = nnx.merge(graphdef, state, copy=True)(x, mask, train=train, rng=jax.random.key(0))
        return out

    cot = jax.random.normal(jax.random.key(5), x.shape)
    _, vjp = jax.vjp(out_fn, x)
    (grad,) = vjp(cot)
    np.testing.assert_allclose(np.asarray(grad), np.where(mask[..., None], cot, 0.0), atol=1e-6)


def test_commitment_loss_gives_input_a_gradient():
    rvq = make()
    graphdef, state = nnx.split(rvq)
    x = data()
    mask = jnp.arange(10)[None, :] < jnp.array([10, 6, 10, 2])[:, None]

    def commit(x):
        m = nnx.merge(graphdef, state, copy=True)
        return m(x, mask, train=True, rng=jax.random.key(0))[2]["commit_loss"]

    g = np.asarray(jax.grad(commit)(x))
    assert np.isfinite(g).all()
    assert np.abs(g[np.asarray(mask)]).min() > 0, "every real frame is pulled towards its codes"
    assert not g[~np.asarray(mask)].any(), "padding gets no gradient"


def test_decay_one_beta_zero_leaves_codebook_unchanged():
    rvq = make(decay=1.0, beta=0.0)
    before = ema_arrays(rvq)
    for seed in range(3):
        train_call(rvq, data(seed=seed), jnp.ones((4, 10), bool), seed=seed)
    after = ema_arrays(rvq)
    for i in range(3):
        for k in ("embed", "embed_avg", "cluster_size"):
            np.testing.assert_allclose(after["vq_list"][i]["codebook"][k],
                                       before["vq_list"][i]["codebook"][k], rtol=1e-6, atol=1e-7)


def test_beta_bounds_codebook_norms():
    """Every frame is one vector of norm 10: its code converges to it with beta 0, stays bounded with beta."""
    v = jax.random.normal(jax.random.key(3), (D,))
    x = jnp.broadcast_to(10.0 * v / jnp.linalg.norm(v), (4, 10, D))
    mask = jnp.ones((4, 10), bool)
    a, b = 0.8, 0.05
    peaks = {}
    for beta in (0.0, b):
        rvq = make(sizes=(8,), decay=a, beta=beta)
        for step in range(40):
            _, _, metrics = train_call(rvq, x, mask, seed=step)
        peaks[beta] = float(metrics["norm_max_0"])
        norms = np.linalg.norm(np.asarray(rvq.vq_list[0].codebook.embed[...]), axis=-1)
        np.testing.assert_allclose(norms.max(), peaks[beta], rtol=1e-5)   # the metric reports it
    assert peaks[0.0] > 9.99
    # Stationary norm of an always-assigned code: (1 - a)(1 - b) / (1 - a (1 - b)) times the data norm.
    bound = 10.0 * (1 - a) * (1 - b) / (1 - a * (1 - b))
    assert peaks[b] <= bound * (1 + 1e-3) and peaks[b] > 0.99 * bound


def test_dead_code_restarted_from_batch_after_the_ema():
    rvq = make(sizes=(8,), decay=0.9, restart_after=1)
    cb = rvq.vq_list[0].codebook
    cb.embed[...] = cb.embed[...].at[5].set(1e3)                       # code 5 can never be nearest
    cb.embed_avg[...] = cb.embed_avg[...].at[5].set(1e3)
    x = data()
    lengths = jnp.array([10, 4, 7, 1])
    mask = jnp.arange(10)[None, :] < lengths[:, None]
    x = jnp.where(mask[..., None], x, 777.0)                            # padding would be recognisable
    _, codes, metrics = train_call(rvq, x, mask)
    assert not (np.asarray(codes) == 5).any()
    assert float(metrics["dead_0"]) >= 1
    new = np.asarray(cb.embed[...])[5]
    valid_rows = np.asarray(x)[np.asarray(mask)]
    assert np.abs(valid_rows - new).max(axis=-1).min() == 0.0, "restarted code is a real batch vector"
    assert float(cb.cluster_size[...][5]) == 1.0 and int(cb.unused_steps[...][5]) == 0
    np.testing.assert_allclose(np.asarray(cb.embed_avg[...])[5], new * 1.0)
    # Consistent reset: the next EMA step without an assignment keeps the vector (up to Laplace smoothing).
    smoothed = laplace_smoothed(cb.cluster_size[...], 1e-5)[5]
    assert abs(float(smoothed) - 1.0) < 1e-3


def test_layer_dropout_samples_every_depth_and_keeps_layer_one():
    k = np.asarray(sample_depth(jax.random.key(0), 4000, 8, 1.0))
    assert set(k.tolist()) == set(range(1, 9))
    assert np.abs(np.bincount(k, minlength=9)[1:] / 4000 - 1 / 8).max() < 0.03
    k = np.asarray(sample_depth(jax.random.key(1), 4000, 8, 0.5))
    assert k.min() >= 1 and abs((k < 8).mean() - 0.5 * 7 / 8) < 0.03
    # In the module: each sample's output is the sum of its first k layers' codes, k >= 1.
    rvq = make(sizes=(16,) * 8, dropout_p=1.0, decay=1.0)
    x = data(b=16, t=3)
    out, codes, _ = train_call(rvq, x, jnp.ones((16, 3), bool))
    depths = []
    for bi in range(16):
        match = [kk for kk in range(1, 9)
                 if np.allclose(out[bi], rvq.decode(codes[bi, :, :kk]), atol=1e-5)]
        assert match, f"sample {bi} is not a prefix sum of its codes"
        depths.append(match[0])
    assert min(depths) >= 1 and len(set(depths)) > 2


def test_ema_update_on_8_devices_equals_1_device():
    assert jax.device_count() == 8, "conftest forces 8 CPU devices"
    kw = {"sizes": (32, 16), "decay": 0.9, "beta": 1e-3, "restart_after": 1, "threshold": 0.5,
          "gumbel_tau": 1.0, "dropout_p": 0.5}
    x = data(b=16, t=12)
    mask = jnp.arange(12)[None, :] < (jnp.arange(16) % 12 + 1)[:, None]
    single = make(**kw)
    out1, codes1, met1 = train_call(single, x, mask)

    multi = make(**kw)
    mesh = sharding.make_mesh({"data": -1})
    with jax.set_mesh(mesh):
        xs = jax.device_put(x, NamedSharding(mesh, P("data")))
        ms = jax.device_put(mask, NamedSharding(mesh, P("data")))
        assert len(xs.sharding.device_set) == 8
        out8, codes8, met8 = train_call(multi, xs, ms)
    np.testing.assert_array_equal(np.asarray(codes8), np.asarray(codes1))
    np.testing.assert_allclose(np.asarray(out8), np.asarray(out1), atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 ema_arrays(multi), ema_arrays(single))
    for key in met1:
        np.testing.assert_allclose(float(met8[key]), float(met1[key]), rtol=1e-5, atol=1e-6, err_msg=key)


def test_padding_changes_neither_codes_nor_ema_nor_usage():
    kw = {"decay": 0.9, "beta": 1e-3, "restart_after": 1, "threshold": 0.5, "dropout_p": 0.5}
    x = data(b=3, t=8)
    lengths = jnp.array([8, 5, 2])
    mask = jnp.arange(8)[None, :] < lengths[:, None]
    x = jnp.where(mask[..., None], x, 0.0)
    # The same utterances with 5 more padding frames and garbage everywhere past each length.
    garbage = 50.0 * jax.random.normal(jax.random.key(9), (3, 13, D))
    mask_p = jnp.arange(13)[None, :] < lengths[:, None]
    x_p = jnp.where(mask_p[..., None], jnp.pad(x, ((0, 0), (0, 5), (0, 0))), garbage)

    a, b = make(**kw), make(**kw)
    np.testing.assert_array_equal(np.asarray(a.encode(x_p, mask_p))[:, :8], np.asarray(a.encode(x, mask)))
    _, codes_a, met_a = train_call(a, x, mask)
    _, codes_b, met_b = train_call(b, x_p, mask_p)
    np.testing.assert_array_equal(np.asarray(codes_b)[:, :8], np.asarray(codes_a))
    close = lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-6)
    jax.tree.map(close, ema_arrays(a), ema_arrays(b))
    for key in met_a:
        if key.startswith(("usage", "perplexity", "dead", "norm", "commit")):
            np.testing.assert_allclose(float(met_a[key]), float(met_b[key]), rtol=1e-5, err_msg=key)
    # Usage counts real frames only: 15 real frames can use at most 15 of the 32 codes.
    assert float(met_b["usage_0"]) <= 15 / 32

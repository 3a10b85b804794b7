"""Flow decoder: padding-invariant CFM loss, the time grid, guidance and reproducibility, causality."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bajax import sharding
from bajax.flow import cfm
from bajax.flow.attention import chunked_attention
from bajax.flow.config import default_model_config
from bajax.flow.model import FlowDecoder
from bajax.flow.prenet import length_mask, nearest_resample
from bajax.layers import attention_mask, dot_product_attention


def _cfg(**kw):
    c = default_model_config()
    c.update(kw)
    return c


@pytest.fixture(scope="module")
def model():
    return FlowDecoder(_cfg(chunk=4), rngs=nnx.Rngs(0))


def _inputs(b=2, t=16, tc=20, seed=0):
    r = np.random.default_rng(seed)
    cond = jnp.asarray(r.normal(size=(b, tc, 80)), jnp.float32)
    mel = jnp.asarray(r.normal(size=(b, t, 80)) - 4.0, jnp.float32)
    return cond, mel


def test_time_grid_endpoints_and_monotone():
    for n in (1, 2, 10, 64):
        g = cfm.time_grid(n)
        assert g.shape == (n + 1,) and g.dtype == np.float32
        assert g[0] == 0.0 and g[-1] == 1.0
        assert np.all(np.diff(g) > 0)
    # Cosine spacing: the first step is the smallest.
    g = cfm.time_grid(10)
    np.testing.assert_allclose(g, 1 - np.cos(np.linspace(0, 1, 11) * np.pi / 2), atol=1e-7)
    assert np.diff(g)[0] < np.diff(g)[-1]


@pytest.mark.slow
def test_cfm_loss_ignores_padded_frames(model):
    cond, mel = _inputs()
    cond_len, mel_len = jnp.array([20, 11]), jnp.array([16, 9])
    loss = nnx.jit(lambda m, *a: m.loss_sums(*a))
    rng = jax.random.key(3)
    base = loss(model, cond, cond_len, mel, mel_len, rng)
    # Garbage (large values) in every padded target frame and padded conditioning frame changes nothing.
    pad_mel = ~length_mask(mel_len, 16)[..., None]
    pad_cond = ~length_mask(cond_len, 20)[..., None]
    mel2 = jnp.where(pad_mel, 1e3, mel)
    cond2 = jnp.where(pad_cond, -1e3, cond)
    other = loss(model, cond2, cond_len, mel2, mel_len, rng)
    for k in ("cfm", "prior"):
        assert float(base[k]) > 0
        np.testing.assert_array_equal(np.asarray(base[k]), np.asarray(other[k]))
    # ...while a change in a valid frame does change it.
    mel3 = mel.at[1, 8].add(1.0)
    assert float(loss(model, cond, cond_len, mel3, mel_len, rng)["cfm"]) != float(base["cfm"])


def test_estimator_output_is_masked(model):
    _, mel = _inputs()
    valid = length_mask(jnp.array([16, 9]), 16)
    v = model.estimator(mel, mel, jnp.array([0.2, 0.7]), valid)
    assert v.dtype == jnp.float32
    assert np.all(np.asarray(v)[1, 9:] == 0.0)


@pytest.mark.slow
def test_guidance_zero_is_the_conditional_path_and_noise_is_reproducible(model):
    cond, _ = _inputs(b=1)
    cl, ml, t = jnp.array([20]), jnp.array([16]), 16
    sample = nnx.jit(lambda m, *a, g: m.sample(*a, steps=6, guidance=g), static_argnums=(4,),
                     static_argnames=("g",))
    rng = jax.random.key(7)
    out0 = sample(model, cond, cl, ml, t, rng, g=0.0)

    # Reference: plain Euler on the conditional field alone (batch of B, no unconditional rows).
    mu = model.prior(cond, cl, ml, t)
    valid = length_mask(ml, t)
    x = model.temperature * jax.random.normal(rng, mu.shape, jnp.float32)
    grid = cfm.time_grid(6)
    field = nnx.jit(lambda m, *a: m.estimator(*a))         # compiled once: op by op took minutes
    for k in range(6):
        x = x + (grid[k + 1] - grid[k]) * field(model, x, mu, jnp.full((1,), grid[k]), valid)
    np.testing.assert_allclose(np.asarray(out0), np.asarray(x), rtol=1e-5, atol=1e-5)

    guided = sample(model, cond, cl, ml, t, rng, g=0.7)
    again = sample(model, cond, cl, ml, t, rng, g=0.7)
    np.testing.assert_array_equal(np.asarray(guided), np.asarray(again))       # bit-identical
    assert not np.allclose(np.asarray(guided), np.asarray(out0))                # guidance does something
    other = sample(model, cond, cl, ml, t, jax.random.key(8), g=0.7)
    assert not np.allclose(np.asarray(guided), np.asarray(other))               # the noise is the key's


def test_estimator_is_block_causal(model):
    """chunk = 4: frames of chunks 0-1 (t < 8) do not depend on anything at t >= 8; frames inside a chunk
    see each other (frame 8 changes when frame 10 does)."""
    _, mel = _inputs(b=1)
    mu = mel[:, ::-1] * 0.5
    valid = jnp.ones((1, 16), bool)
    t = jnp.array([0.4])
    f = jax.jit(lambda x, mu: model.estimator(x, mu, t, valid))
    base = np.asarray(f(mel, mu))
    changed = np.asarray(f(mel.at[:, 10:].add(3.0), mu.at[:, 10:].add(-2.0)))
    np.testing.assert_array_equal(base[:, :8], changed[:, :8])
    assert np.abs(base[:, 8:] - changed[:, 8:]).max(axis=-1).min() > 0     # every later frame moved


@pytest.mark.slow
def test_prenet_is_causal(model):
    cond, _ = _inputs(b=1, tc=16)
    lengths = jnp.array([16])
    f = jax.jit(lambda c: model.prior(c, lengths, lengths, 16))
    base = np.asarray(f(cond))
    changed = np.asarray(f(cond.at[:, 9:].add(5.0)))
    np.testing.assert_array_equal(base[:, :9], changed[:, :9])
    assert np.abs(base[:, 9:] - changed[:, 9:]).max(axis=-1).min() > 0


@pytest.mark.parametrize("causal", [False, True])
def test_chunked_attention_matches_masked_full_attention(causal):
    r = np.random.default_rng(0)
    q, k, v = (jnp.asarray(r.normal(size=(2, 11, 3, 8)), jnp.float32) for _ in range(3))
    lengths = jnp.array([11, 7])
    valid = length_mask(lengths, 11)
    got = chunked_attention(q, k, v, valid, 4, causal=causal)
    # Reference: the shared full-matrix attention with the shared mask builder (valid query rows only).
    seg = valid.astype(jnp.int32)
    mask = attention_mask(seg, seg, pattern="causal" if causal else "block_causal", chunk=4)
    want = dot_product_attention(q, k, v, mask)
    for b, n in enumerate((11, 7)):
        np.testing.assert_allclose(np.asarray(got)[b, :n], np.asarray(want)[b, :n], rtol=1e-5, atol=1e-5)


def test_nearest_resample_matches_torch_nearest():
    torch = pytest.importorskip("torch")
    r = np.random.default_rng(0)
    x = r.normal(size=(1, 10, 3)).astype(np.float32)
    for n_in, n_out in ((10, 8), (7, 9), (10, 10)):
        got = nearest_resample(jnp.asarray(x), jnp.array([n_in]), jnp.array([n_out]), 12)
        ref = torch.nn.functional.interpolate(torch.from_numpy(x[:, :n_in]).transpose(1, 2), size=n_out,
                                              mode="nearest").transpose(1, 2).numpy()
        np.testing.assert_array_equal(np.asarray(got)[:, :n_out], ref)
        assert np.all(np.asarray(got)[:, n_out:] == 0)


def test_every_param_has_known_logical_axes(model):
    rules = dict(sharding.DEFAULT_RULES)
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        axes = var.get_metadata().get("logical_axes")
        assert axes is not None and len(axes) == var.get_value().ndim, path
        assert all(a is None or a in rules for a in axes), (path, axes)
    # Whisper convention in the Pre-Net: no k bias; q and v have one.
    attn = nnx.state(model.prenet.layers)["layers"]["self_attn"]
    assert "bias" not in attn["k_proj"] and "bias" in attn["q_proj"] and "bias" in attn["v_proj"]


@pytest.mark.slow
def test_analytic_flops_match_xla_cost_analysis():
    """bajax/flow/flops.py counts matmuls and convolutions only; XLA adds the elementwise ops on top."""
    from bajax.flow import flops

    c = _cfg(channels=128, ffn=512, heads=4, head_dim=32, time_hidden=512, chunk=50, scan_layers=False,
             prenet_hidden=128, prenet_ffn=512)
    graphdef, state = nnx.split(FlowDecoder(c, rngs=nnx.Rngs(0)))
    t = 200
    x, valid, lengths = jnp.zeros((1, t, 80)), jnp.ones((1, t), bool), jnp.array([t])

    def xla_flops(fn):
        return jax.jit(fn).lower(state, x).compile().cost_analysis()["flops"]

    est = xla_flops(lambda s, x: nnx.merge(graphdef, s).estimator(x, x, jnp.array([0.5]), valid))
    pre = xla_flops(lambda s, x: nnx.merge(graphdef, s).prior(x, lengths, lengths, t))
    assert 1.0 <= est / flops.estimator_flops(c, t) <= 1.12
    assert 1.0 <= pre / flops.prenet_flops(c, t) <= 1.12

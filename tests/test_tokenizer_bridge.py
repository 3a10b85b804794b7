"""Tokenizer blocks: 1-D convs and sinusoids against torch, the 4x bridge, the replacement schedule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bajax.layers.conv import Conv1d, ConvTranspose1d
from bajax.layers.sinusoidal import whisper_sinusoids
from bajax.tokenizer.bridge import Bridge, code_lengths, ramp
from bajax.tokenizer.config import default_model_config


@pytest.mark.torch
@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 1), (3, 2, 1), (4, 4, 0), (5, 1, 2)])
def test_conv1d_matches_torch(kernel, stride, padding):
    torch = pytest.importorskip("torch")
    conv = Conv1d(6, 10, kernel, stride=stride, padding=padding, rngs=nnx.Rngs(0))
    conv.bias[...] = jax.random.normal(jax.random.key(1), (10,))
    ref = torch.nn.Conv1d(6, 10, kernel, stride=stride, padding=padding)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(np.asarray(conv.kernel[...]).transpose(2, 1, 0).copy()))
        ref.bias.copy_(torch.from_numpy(np.array(conv.bias[...])))
    x = np.random.default_rng(0).standard_normal((2, 17, 6)).astype(np.float32)
    want = ref(torch.from_numpy(x).transpose(1, 2)).transpose(1, 2).detach().numpy()
    np.testing.assert_allclose(np.asarray(conv(jnp.asarray(x))), want, atol=1e-5)


@pytest.mark.torch
@pytest.mark.parametrize("kernel,stride", [(3, 4), (3, 2), (4, 2)])
def test_conv_transpose1d_matches_torch(kernel, stride):
    torch = pytest.importorskip("torch")
    conv = ConvTranspose1d(6, 5, kernel, stride=stride, rngs=nnx.Rngs(0))
    conv.bias[...] = jax.random.normal(jax.random.key(1), (5,))
    ref = torch.nn.ConvTranspose1d(6, 5, kernel, stride)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(np.asarray(conv.kernel[...]).transpose(1, 2, 0).copy()))
        ref.bias.copy_(torch.from_numpy(np.array(conv.bias[...])))
    x = np.random.default_rng(0).standard_normal((2, 7, 6)).astype(np.float32)
    want = ref(torch.from_numpy(x).transpose(1, 2)).transpose(1, 2).detach().numpy()
    got = np.asarray(conv(jnp.asarray(x)))
    assert got.shape == (2, (7 - 1) * stride + kernel, 5)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.torch
def test_sinusoids_match_reference_formula():
    """The reference's formula, evaluated by torch in float64 (its float32 buffer drifts ~1e-4 at 1500)."""
    torch = pytest.importorskip("torch")
    length, channels = 1500, 64
    inc = np.log(10000) / (channels // 2 - 1)
    inv = torch.exp(-inc * torch.arange(channels // 2, dtype=torch.float64))
    scaled = torch.arange(length, dtype=torch.float64)[:, None] * inv[None, :]
    want = torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1).numpy()
    got = whisper_sinusoids(length, channels)
    assert got.dtype == np.float32 and got.shape == (length, channels)
    np.testing.assert_allclose(got, want, atol=1e-7)


def small_bridge(**rvq_overrides):
    cfg = default_model_config()
    for k, v in rvq_overrides.items():
        cfg.rvq[k] = v
    return Bridge(8, 4, cfg.rvq, replace=cfg.replace, rngs=nnx.Rngs(0)), cfg


def test_bridge_matches_its_definition():
    bridge, _ = small_bridge()
    x = jax.random.normal(jax.random.key(0), (2, 10, 8))               # 10 frames: padded to 12
    res, mask = bridge.features(x, jnp.array([10, 5]))
    assert res.shape == (2, 3, 32) and mask.tolist() == [[True, True, False], [True, False, False]]
    xp = np.pad(np.asarray(x), ((0, 0), (0, 2), (0, 0))).reshape(2, 3, 32)   # 4 frames side by side
    wg = np.asarray(bridge.gate_proj.kernel[...]).reshape(32, 32)
    wu = np.asarray(bridge.up_proj.kernel[...]).reshape(32, 32)
    h = xp @ wg
    h = h / (1 + np.exp(-h)) * (xp @ wu)
    c = h @ np.asarray(bridge.down_proj.kernel[...]) + xp
    want = (c - c.mean(-1, keepdims=True)) / np.sqrt(c.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(np.asarray(res), want, atol=1e-4)


@pytest.mark.slow
def test_bridge_padding_invariance_and_decode():
    bridge, _ = small_bridge()
    lengths = jnp.array([16, 9])
    x = jax.random.normal(jax.random.key(0), (2, 16, 8))
    x = jnp.where((jnp.arange(16)[None, :] < lengths[:, None])[..., None], x, 0.0)
    garbage = jax.random.normal(jax.random.key(1), (2, 24, 8)) * 9
    valid = (jnp.arange(24)[None, :] < lengths[:, None])[..., None]
    xg = jnp.where(valid, jnp.pad(x, ((0, 0), (0, 8), (0, 0))), garbage)
    codes, mask = bridge.encode(x, lengths)
    codes_g, mask_g = bridge.encode(xg, lengths)
    assert mask.sum(1).tolist() == code_lengths(lengths).tolist() == [4, 2]
    np.testing.assert_array_equal(np.asarray(codes_g)[:, :4], np.asarray(codes))
    out, _, codes_call, _ = bridge(x, lengths, train=False)
    np.testing.assert_array_equal(np.asarray(codes_call), np.asarray(codes))
    np.testing.assert_allclose(np.asarray(out), np.asarray(bridge.decode(codes)), atol=1e-5)
    assert not np.asarray(out)[~np.asarray(mask)].any()


@pytest.mark.slow
def test_replacement_schedule_and_training_call():
    np.testing.assert_allclose([float(ramp(s, 0.1, 1.0, 10, 100)) for s in (0, 10, 60, 110, 500)],
                               [0.1, 0.1, 0.55, 1.0, 1.0], rtol=1e-6)
    assert float(ramp(5, 0.1, 1.0, 5, 0)) == 1.0 and float(ramp(4, 0.1, 1.0, 5, 0)) == pytest.approx(0.1)
    bridge, cfg = small_bridge(dropout_p=0.0, gumbel_tau=0.0)
    x = jax.random.normal(jax.random.key(0), (64, 8, 8))
    lengths = jnp.full((64,), 8)
    res, _ = bridge.features(x, lengths)
    vq_only = bridge.proj_decoder(bridge.rvq.decode(bridge.rvq.encode(res)))
    raw = bridge.proj_decoder(res)
    graphdef, state = nnx.split(bridge)
    for step, frac in ((0, 0.1), (500, 0.55), (1000, 1.0)):
        m = nnx.merge(graphdef, state, copy=True)
        out, _, _, metrics = m(x, lengths, train=True, rng=jax.random.key(3), step=step)
        assert float(metrics["replace_fraction"]) == pytest.approx(frac)
        took_vq = np.array([np.allclose(out[i], vq_only[i], atol=1e-5) for i in range(64)])
        took_raw = np.array([np.allclose(out[i], raw[i], atol=1e-5) for i in range(64)])
        assert (took_vq ^ took_raw).all(), "each sample takes exactly one of the two inputs"
        assert took_vq.mean() == pytest.approx(float(metrics["replaced"]))
        assert abs(took_vq.mean() - frac) < 0.2

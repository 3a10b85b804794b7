"""HiFT vocoder generator (bajax/vocoder) against the reference structure in PyTorch (tests/torch_ref/hift.py,
built like third_party/cosy24k_vocoder), with weights moved torch -> bajax through
bajax/interop/layout_vocoder.py: waveform and f0 within 1e-4 in fp32 with the same injected phases and noise,
on the tiny and on the reference (Cosy24kVocoder) shapes; the STFT pair and the sine source on their own;
the layout's keys are exactly the reference state dict's; a key fixes the waveform."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bajax.interop.layout_vocoder import hift
from bajax.vocoder import stft
from bajax.vocoder.config import default_model_config, reference_model_config
from bajax.vocoder.generator import HiFTGenerator
from bajax.vocoder.source import SourceNoise, divide, draw_source_noise, phase_cumsum, sine_source

HOP = 480
# The reference uses torch.nn.utils.weight_norm (hook-based, deprecated in favour of parametrizations).
pytestmark = pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")


def _leaves(model) -> dict:
    return {tuple(str(k) for k in path): var for path, var in nnx.to_flat_state(nnx.state(model))}


def _perturbed_ref(cfg, mel: np.ndarray, centre: float = 70.0, spread: float = 50.0):
    """The torch generator with every tensor moved off its init (Snake alphas and weight_g scaled by
    1 +- 0.1, biases shifted), and an f0 classifier that reads the condnet's first principal component over
    `mel`, so that f0 follows a contour of `centre` +- `spread` Hz: mostly voiced, some frames under the
    10 Hz threshold. (One channel would do, but the principal component has the widest range, so it
    needs the smallest weights, which amplify float32 rounding of the condnet the least.)"""
    import torch

    from tests.torch_ref.hift import from_config

    torch.manual_seed(0)
    ref = from_config(cfg.to_dict()).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in ref.state_dict().items():
            if name.endswith(("alpha", "weight_g")):
                t.mul_(1 + 0.1 * torch.randn(t.shape, generator=g))
            elif name.endswith("bias"):
                t.add_(0.05 * torch.randn(t.shape, generator=g))
        h = ref.f0_predictor.condnet(torch.from_numpy(mel).transpose(1, 2)).transpose(1, 2)
        h = h.reshape(-1, h.shape[-1]).double()
        direction = torch.linalg.svd(h - h.mean(0), full_matrices=False)[2][0]
        z = h @ direction
        w = spread / z.std()
        ref.f0_predictor.classifier.weight.copy_((w * direction)[None].float())
        ref.f0_predictor.classifier.bias.fill_(float(centre - w * z.mean()))
    return ref


def _load(model, state_dict) -> list:
    """Torch tensors -> bajax leaves through the layout (the import direction), checking names and shapes."""
    leaves = _leaves(model)
    shapes = {p: tuple(v.get_value().shape) for p, v in leaves.items()}
    entries = hift(shapes)
    assert [e.name for e in entries] == list(state_dict), "layout keys differ from the reference state dict"
    for e in entries:
        t = state_dict[e.name].numpy()
        assert e.torch_shape(shapes) == t.shape, e.name
        for src, a in zip(e.srcs, e.rule.from_torch(t, e.src_shapes(shapes)), strict=True):
            leaves[src.path].set_value(jnp.asarray(a))
    unmapped = set(shapes) - {s.path for e in entries for s in e.srcs}
    assert not unmapped, f"bajax leaves with no reference name: {sorted(unmapped)[:5]}"
    return entries


def _mel(batch: int, frames: int) -> np.ndarray:
    """Noise plus a per-frame ramp (opposite signs per utterance), so the f0 contour moves."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(-3, 3, frames)[None, :, None] * np.array([1.0, -1.0])[:batch, None, None]
    return (rng.standard_normal((batch, frames, 80)) + ramp).astype(np.float32)


def _compare(cfg, batch: int, frames: int):
    import torch

    mel = _mel(batch, frames)
    ref = _perturbed_ref(cfg, mel)
    model = HiFTGenerator(cfg, rngs=nnx.Rngs(0))
    _load(model, ref.state_dict())
    draws = draw_source_noise(jax.random.key(3), batch, frames * HOP, cfg.nb_harmonics)
    wave, f0 = nnx.jit(lambda m, x, d: m(x, None, inject=d))(model, jnp.asarray(mel), draws)
    ref.m_source.l_sin_gen.inject = (torch.from_numpy(np.array(draws.phase))[:, :, None],
                                     torch.from_numpy(np.array(draws.noise)).transpose(1, 2).contiguous())
    with torch.no_grad():
        want_wave, want_f0 = (t.numpy() for t in ref({"speech_feat": torch.from_numpy(mel)}))
    # The contour must cross the voiced threshold, and no frame may sit so close to it that rounding flips it.
    assert 0 < (want_f0 > cfg.nsf_voiced_threshold).mean() < 1 or batch == 1
    assert np.abs(want_f0 - cfg.nsf_voiced_threshold).min() > 1e-2
    assert wave.shape == want_wave.shape == (batch, frames * HOP) and f0.shape == (batch, frames)
    f0_err, wave_err = np.abs(np.asarray(f0) - want_f0).max(), np.abs(np.asarray(wave) - want_wave).max()
    assert f0_err <= 1e-4, f0_err
    assert wave_err <= 1e-4, wave_err
    assert np.abs(want_wave).max() > 1e-2          # not a trivially silent output
    return f0_err, wave_err


@pytest.mark.torch
def test_generator_matches_torch_tiny():
    _compare(default_model_config(), batch=2, frames=12)


@pytest.mark.torch
@pytest.mark.slow
def test_generator_matches_torch_reference_shapes():
    _compare(reference_model_config(), batch=1, frames=20)


@pytest.mark.torch
def test_layout_is_the_reference_state_dict_both_ways():
    """Keys (names and order) and shapes of the reference's HiFTGenerator at its released size; export of
    the loaded leaves gives back every tensor bitwise."""
    import torch

    from tests.torch_ref.hift import from_config

    cfg = reference_model_config()
    torch.manual_seed(0)
    sd = from_config(cfg.to_dict()).state_dict()
    assert len(sd) == 328 and "ups.0.weight_g" in sd and "f0_predictor.condnet.8.weight_v" in sd
    assert tuple(sd["ups.0.weight_g"].shape) == (512, 1, 1)            # weight norm over ConvT's input dim
    model = nnx.eval_shape(lambda: HiFTGenerator(cfg, rngs=nnx.Rngs(0)))
    shapes = {p: tuple(v.get_value().shape) for p, v in _leaves(model).items()}
    entries = hift(shapes)
    assert [e.name for e in entries] == list(sd)
    assert all(e.torch_shape(shapes) == tuple(sd[e.name].shape) for e in entries)
    tiny = HiFTGenerator(default_model_config(), rngs=nnx.Rngs(0))
    torch.manual_seed(1)
    tsd = from_config(default_model_config().to_dict()).state_dict()
    leaves = _leaves(tiny)
    for e in _load(tiny, tsd):
        back = e.rule.to_torch([np.asarray(leaves[s.path].get_value()) for s in e.srcs])
        assert back.dtype == np.float32 and back.tobytes() == tsd[e.name].numpy().tobytes(), e.name


@pytest.mark.torch
def test_stft_and_istft_match_torch():
    import torch

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3 * HOP)).astype(np.float32)
    window = torch.from_numpy(stft.hann_window(16))
    want = torch.stft(torch.from_numpy(x), 16, 4, 16, window=window, return_complex=True)
    real, imag = stft.stft(jnp.asarray(x), 16, 4)
    assert real.shape == (2, 3 * HOP // 4 + 1, 9)
    np.testing.assert_allclose(np.asarray(real), want.real.transpose(1, 2).numpy(), atol=2e-6)
    np.testing.assert_allclose(np.asarray(imag), want.imag.transpose(1, 2).numpy(), atol=2e-6)
    re, im = (rng.standard_normal((2, 361, 9)).astype(np.float32) for _ in range(2))
    spec = torch.complex(torch.from_numpy(re), torch.from_numpy(im)).transpose(1, 2)
    want = torch.istft(spec, 16, 4, 16, window=window).numpy()
    got = np.asarray(stft.istft(jnp.asarray(re), jnp.asarray(im), 16, 4))
    assert got.shape == want.shape == (2, 4 * 360)
    np.testing.assert_allclose(got, want, atol=2e-6)


def test_hann_window_is_scipys():
    signal = pytest.importorskip("scipy.signal")
    want = signal.get_window("hann", 16, fftbins=True).astype(np.float32)
    assert stft.hann_window(16).tobytes() == want.tobytes()


@pytest.mark.torch
def test_sine_source_matches_torch_over_two_seconds():
    """The phase accumulates over 48000 samples up to ~800 cycles: with correctly rounded increments and a
    float-float prefix sum, the phases are torch's (double-accumulated) float32 prefix sums bit for bit, so
    the sines agree to float32 rounding of sin."""
    import torch

    from tests.torch_ref.hift import SineGen

    rng = np.random.default_rng(0)
    f0 = np.repeat(np.abs(rng.normal(150, 120, (2, 100))), HOP, axis=1).astype(np.float32)
    f0[:, :HOP] = 0.0                                                   # an unvoiced frame
    freq = f0[:, None, :] * np.arange(1, 10, dtype=np.float32)[:, None] / np.float32(24000)
    got = np.asarray(jax.jit(lambda f: divide(f[:, None, :] * jnp.arange(1, 10.0)[:, None], 24000))(f0))
    assert got.tobytes() == freq.tobytes()                             # IEEE division, as torch's
    got = np.asarray(phase_cumsum(jnp.asarray(freq), axis=-1))
    assert got.tobytes() == torch.cumsum(torch.from_numpy(freq), -1).numpy().tobytes()
    draws = SourceNoise(jnp.asarray(rng.uniform(-np.pi, np.pi, (2, 9)).astype(np.float32)),
                        jnp.asarray(rng.standard_normal((2, f0.shape[1], 9)).astype(np.float32)))
    gen = SineGen(24000, 8, 0.1, 0.003, 10)
    gen.inject = (torch.from_numpy(np.array(draws.phase))[:, :, None],
                  torch.from_numpy(np.array(draws.noise)).transpose(1, 2).contiguous())
    want = gen(torch.from_numpy(f0)[:, None])[0].transpose(1, 2).numpy()
    got = jax.jit(lambda f, d: sine_source(f, d, harmonics=8, sampling_rate=24000, sine_amp=0.1, noise_std=0.003,
                                           voiced_threshold=10.0))(jnp.asarray(f0), draws)
    assert np.abs(np.asarray(got) - want).max() <= 1e-6


def test_key_fixes_the_waveform_and_lengths_are_exact():
    cfg = default_model_config()
    model = HiFTGenerator(cfg, rngs=nnx.Rngs(0))
    mel = jnp.asarray(_mel(2, 7))
    run = nnx.jit(lambda m, x, k: m(x, k))
    a, f0 = run(model, mel, jax.random.key(0))
    b, _ = run(model, mel, jax.random.key(0))
    c, _ = run(model, mel, jax.random.key(1))
    assert a.shape == (2, 7 * HOP) and a.dtype == jnp.float32 and f0.shape == (2, 7)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-4
    assert np.abs(np.asarray(a)).max() <= cfg.audio_limit


def test_waveform_gradient_trains_everything_but_the_f0_predictor():
    """As in the reference (its sine generator runs under no_grad), no waveform gradient reaches the f0
    predictor; the harmonic merge and the filter do get one."""
    model = HiFTGenerator(default_model_config(), rngs=nnx.Rngs(0))
    mel = jnp.asarray(_mel(1, 3))

    def loss(m):
        wave, _ = m(mel, jax.random.key(0))
        return jnp.sum(wave ** 2)

    grads = nnx.jit(nnx.grad(loss))(model)
    norms = {"/".join(map(str, p)): float(jnp.abs(v.get_value()).max()) for p, v in nnx.to_flat_state(grads)}
    assert all(n == 0.0 for p, n in norms.items() if p.startswith("f0_predictor/"))
    assert norms["m_source/l_linear/kernel"] > 0 and norms["conv_pre/weight_v"] > 0
    assert norms["ups/0/weight_g"] > 0 and norms["source_downs/0/kernel"] > 0

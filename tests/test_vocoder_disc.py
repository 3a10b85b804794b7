"""HiFT vocoder GAN: discriminators, losses and F0 targets against the PyTorch reference (tests/torch_ref/hift_disc.py).

Parity is fp32 with weights moved torch -> bajax through bajax/interop/layout_vocoder_disc.py (strict, by name):
every discriminator output and feature map within 1e-5 of the largest magnitude of that tensor (and 1e-5
relative), every loss within 1e-5 relative.
"""

import numpy as np
import pytest

from bajax.vocoder import pitch
from bajax.vocoder.disc_config import default_discriminator_config, default_gan_loss_config

N = 4801          # 10 mel frames; not a multiple of any period, so every MPD reflect-pads; > 1024 for the 2048 STFT
B = 2
RTOL = 1e-5


def _waves(seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(N) / 24000
    real = 0.4 * np.sin(2 * np.pi * 180 * t)[None] + 0.05 * rng.standard_normal((B, N))
    real[1, 1000:2000] = 0.0                       # digital silence inside a crop: exact-zero STFT bins
    fake = real + 0.1 * rng.standard_normal((B, N))
    return real.astype(np.float32), fake.astype(np.float32)


def _ref_disc(cfg, parametrizations=False):
    from tests.torch_ref import hift_disc as R

    mpd = R.MultiPeriodDiscriminator(cfg.mpd_periods, cfg.mpd_channels)
    if cfg.mrd == "resolution":
        mrd = R.MultiResolutionDiscriminator(cfg.mrd_fft_sizes, cfg.mrd_channels)
    else:
        mrd = R.MultiResSpecDiscriminator(cfg.spec_fft_sizes, cfg.spec_hop_sizes, cfg.spec_win_lengths,
                                          cfg.spec_channels)
    ref = R.HiFiGanDisc(R.MultipleDiscriminator(mpd, mrd))
    import torch

    with torch.no_grad():                                  # g != ||v||, so the normalisation axis matters
        for name, t in ref.named_parameters():
            if name.endswith("weight_g"):
                t.mul_(torch.rand(t.shape) + 0.5)
    if parametrizations:                                   # CosyVoice HEAD's weight_norm (same values)
        for m in ref.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.utils.remove_weight_norm(m)
                torch.nn.utils.parametrizations.weight_norm(m)
    return ref.eval()


@pytest.fixture(scope="module", params=["resolution", "spec"])
def pair(request):
    """(cfg, bajax discriminator with the torch weights, torch HiFiGan-like module, outputs of both)."""
    import jax
    import torch
    from flax import nnx

    from bajax.interop.layout_vocoder_disc import import_state
    from bajax.vocoder.discriminator import MultipleDiscriminator

    cfg = default_discriminator_config("tiny")
    cfg.mrd = request.param
    torch.manual_seed(0)
    ref = _ref_disc(cfg)
    disc = MultipleDiscriminator(cfg, rngs=nnx.Rngs(1))
    import_state(disc, cfg, ref.state_dict())
    real, fake = _waves()
    got = jax.jit(lambda a, b: disc(a, b))(real, fake)
    with torch.no_grad():
        want = ref.discriminator(torch.from_numpy(real), torch.from_numpy(fake))
    return cfg, disc, ref, (real, fake), got, want


def _to_bajax_layout(t):
    """torch [B, C, H, W] -> [B, H, W, C]; flat outputs stay."""
    a = t.detach().numpy()
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


def _close(got, want, what):
    got, want = np.asarray(got), _to_bajax_layout(want)
    assert got.shape == want.shape, f"{what}: {got.shape} != {want.shape}"
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * np.abs(want).max(), err_msg=what)
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.torch
def test_discriminator_outputs_and_feature_maps_match_torch(pair):
    cfg, _, _, _, got, want = pair
    n_disc = len(cfg.mpd_periods) + 3
    fmaps = 6 if cfg.mrd == "spec" else 4 * len(cfg.mrd_bands) + 1
    for lst in (*got, *want):
        assert len(lst) == n_disc
    assert [len(f) for f in got[2]] == [6] * 5 + [fmaps] * 3
    worst = 0.0
    for k in range(n_disc):
        worst = max(worst, _close(got[0][k], want[0][k], f"d_real[{k}]"), _close(got[1][k], want[1][k], f"d_fake[{k}]"))
        for j in range(len(want[2][k])):
            worst = max(worst, _close(got[2][k][j], want[2][k][j], f"fmap_real[{k}][{j}]"),
                        _close(got[3][k][j], want[3][k][j], f"fmap_fake[{k}][{j}]"))
    print(f"{cfg.mrd}: worst |diff| / max|want| = {worst:.2e}")


@pytest.mark.torch
def test_state_round_trip_and_parametrizations_keys(pair):
    from flax import nnx

    from bajax.interop.layout_vocoder_disc import export_state, import_state
    from bajax.vocoder.discriminator import MultipleDiscriminator

    cfg, disc, ref, _, _, _ = pair
    sd = {k: v.numpy() for k, v in ref.state_dict().items()}
    back = export_state(disc, cfg)
    assert set(back) == set(sd)
    for k, v in sd.items():
        if k.endswith("spec_fn.window"):                 # a constant buffer, rebuilt in float64 then cast
            np.testing.assert_allclose(back[k], v, atol=1e-6)
        else:
            assert back[k].shape == v.shape and np.array_equal(back[k], v), k
    # CosyVoice HEAD's parametrizations weight norm: other names, same tensors, same network.
    par = _ref_disc(cfg, parametrizations=True)
    par.load_state_dict({k.replace("weight_g", "parametrizations.weight.original0")
                          .replace("weight_v", "parametrizations.weight.original1"): v
                         for k, v in ref.state_dict().items()}, strict=True)
    other = MultipleDiscriminator(cfg, rngs=nnx.Rngs(5))
    import_state(other, cfg, par.state_dict(), style="parametrizations")
    a, b = nnx.state(disc, nnx.Param), nnx.state(other, nnx.Param)
    for (pa, va), (pb, vb) in zip(nnx.to_flat_state(a), nnx.to_flat_state(b), strict=True):
        assert pa == pb and np.array_equal(np.asarray(va.get_value()), np.asarray(vb.get_value())), pa
    with pytest.raises(KeyError, match="without a bajax counterpart"):
        import_state(other, cfg, {**ref.state_dict(), "discriminator.mpd.extra": np.zeros(1)})


@pytest.mark.torch
def test_losses_and_objectives_match_torch(pair):
    import jax
    import torch

    from bajax.vocoder import losses as L
    from tests.torch_ref import hift_disc as R

    cfg, _, _, (real, fake), got, want = pair
    rng = np.random.default_rng(3)
    f0_pred = np.abs(rng.normal(150, 40, (B, N // 480))).astype(np.float32)
    f0_tgt = np.where(rng.random((B, N // 480)) < 0.3, 0, rng.normal(150, 40, (B, N // 480))).astype(np.float32)
    w = dict(default_gan_loss_config())
    del w["adversarial_start"]          # a schedule of the trainer's (bajax's warm-up), not a loss weight

    @jax.jit
    def ours(out, real, fake, f0_pred, f0_tgt):
        d_r, d_g, f_r, f_g = out

        def frozen(r, f):               # the discriminator's outputs on these waves (parity tested above)
            return out

        g_total, g_parts = L.generator_objective(frozen, real, fake, f0_pred, f0_tgt, **w)
        d_total, d_parts = L.discriminator_objective(frozen, real, fake, tpr_weight=w["tpr_weight"],
                                                     tpr_tau=w["tpr_tau"])
        return {"gen": L.generator_adv_loss(d_g), "disc": L.discriminator_adv_loss(d_r, d_g),
                "fm": L.feature_matching_loss(f_r, f_g), "tpr": L.tpr_loss(d_r, d_g, 0.04),
                "tpr_tau_big": L.tpr_loss(d_r, d_g, 10.0), "mel": L.mel_l1_loss(real, fake),
                "f0": L.f0_l1_loss(f0_pred, f0_tgt), "gen_total": g_total, "disc_total": d_total,
                **{"g." + k: v for k, v in g_parts.items()}, **{"d." + k: v for k, v in d_parts.items()}}

    got_all = ours(got, real, fake, f0_pred, f0_tgt)
    t_real, t_fake, t_f0p, t_f0t = (torch.from_numpy(a) for a in (real, fake, f0_pred, f0_tgt))
    g_total, g_parts = R.generator_objective(want, t_real, t_fake, t_f0p, t_f0t, w["mel_weight"], w["fm_weight"],
                                             w["tpr_weight"], w["tpr_tau"])
    d_total, d_parts = R.discriminator_objective(want, w["tpr_weight"], w["tpr_tau"])
    want_all = {"gen": R.generator_loss(want[1]), "disc": R.discriminator_loss(want[0], want[1]),
                "fm": R.feature_loss(want[2], want[3]), "tpr": R.tpr_loss(want[0], want[1], 0.04),
                "tpr_tau_big": R.tpr_loss(want[0], want[1], 10.0),
                "mel": R.mel_loss(t_real, t_fake, [R.matcha_mel]),
                "f0": torch.nn.functional.l1_loss(t_f0p, t_f0t), "gen_total": g_total, "disc_total": d_total,
                **{"g." + k: v for k, v in g_parts.items()}, **{"d." + k: v for k, v in d_parts.items()}}
    assert set(got_all) == set(want_all)
    assert {k[2:] for k in got_all if k.startswith("g.")} == {"gen_loss", "fm_loss", "mel_l1", "tpr_loss", "f0_loss"}
    assert {k[2:] for k in got_all if k.startswith("d.")} == {"disc_loss", "tpr_loss"}
    errs = {}
    for k, v in want_all.items():
        a, b = float(got_all[k]), float(v)
        errs[k] = abs(a - b) / abs(b)
        assert errs[k] <= RTOL, (k, a, b)
    print(cfg.mrd, {k: f"{v:.1e}" for k, v in errs.items()})


def test_reference_weights():
    w = default_gan_loss_config()
    assert (w.mel_weight, w.fm_weight, w.tpr_weight, w.tpr_tau, w.f0_weight) == (45.0, 2.0, 1.0, 0.04, 1.0)
    assert w.adversarial_start == 0     # the reference trains adversarially from the first step


@pytest.mark.torch
def test_tpr_uses_the_lower_median_of_an_even_count():
    import jax.numpy as jnp
    import torch

    from bajax.vocoder import losses as L
    from tests.torch_ref import hift_disc as R

    x = np.array([4.0, 1.0, 3.0, 2.0], np.float32)
    assert float(L.lower_median(jnp.asarray(x))) == float(torch.median(torch.from_numpy(x))) == 2.0   # not 2.5
    # dr - dg = [0, 0.3, 0.1, 0.2, 0.5, 0.4]: lower median 0.2 (mean of the middles would be 0.25); the kept
    # elements (dr < dg + 0.2) are 0 and 0.1, so L = (0.2^2 + 0.1^2) / 2 = 0.025 < tau.
    dr = np.array([[1.0, 1.3, 1.1], [1.2, 1.5, 1.4]], np.float32)
    dg = np.ones((2, 3), np.float32)
    got = float(L.tpr_loss([jnp.asarray(dr)], [jnp.asarray(dg)], 0.04))
    want = float(R.tpr_loss([torch.from_numpy(dr)], [torch.from_numpy(dg)], 0.04))
    assert got == pytest.approx(want, rel=1e-6) and got == pytest.approx(0.025, rel=1e-5)
    assert float(L.tpr_loss([jnp.asarray(dr)], [jnp.asarray(dg)], 0.01)) == pytest.approx(0.01)   # min(L, tau)


def test_discriminator_turn_sees_no_generator_gradient_and_silence_has_finite_mel_gradient():
    import jax
    import jax.numpy as jnp

    from bajax.vocoder import losses as L

    def disc(r, f):                                    # a stand-in with fmaps of real and fake
        return [r[:, :10]], [f[:, :10] ** 2], [[r]], [[2 * f]]

    real, fake = (jnp.asarray(w) for w in _waves())
    g = jax.grad(lambda f: L.discriminator_objective(disc, real, f)[0])(fake)
    assert float(jnp.abs(g).max()) == 0.0
    silent = fake.at[:, 1000:3000].set(0.0)
    g = jax.grad(lambda f: L.mel_l1_loss(real, f))(silent)
    assert bool(jnp.all(jnp.isfinite(g)))


def test_reference_sized_shapes_match_torch_names():
    """The default (reference) config's leaf shapes give every reference tensor shape (no weights built)."""
    from flax import nnx

    from bajax.interop.layout_vocoder_disc import discriminator_layout
    from bajax.vocoder.discriminator import MultipleDiscriminator

    cfg = default_discriminator_config()
    abstract = nnx.eval_shape(lambda: MultipleDiscriminator(cfg, rngs=nnx.Rngs(0)))
    shapes = {tuple(str(k) for k in p): tuple(v.get_value().shape)
              for p, v in nnx.to_flat_state(nnx.state(abstract, nnx.Param))}
    entries = {e.name: e.torch_shape(shapes) for e in discriminator_layout(shapes, cfg)}
    p = "discriminator.mpd.discriminators."
    assert entries[p + "0.convs.0.weight_v"] == (32, 1, 5, 1)
    assert entries[p + "4.convs.3.weight_v"] == (1024, 512, 5, 1)
    assert entries[p + "4.convs.4.weight_g"] == (1024, 1, 1, 1)
    assert entries[p + "2.conv_post.weight_v"] == (1, 1024, 3, 1)
    q = "discriminator.mrd.discriminators."
    assert entries[q + "0.spec_fn.window"] == (2048,)
    assert entries[q + "2.band_convs.4.0.weight_v"] == (32, 2, 3, 9)
    assert entries[q + "1.band_convs.0.4.weight_v"] == (32, 32, 3, 3)
    assert entries[q + "1.conv_post.weight_v"] == (1, 32, 3, 3)
    n_mpd = 5 * 6 * 3
    n_mrd = 3 * (1 + 5 * 5 * 3 + 3)
    assert len(entries) == n_mpd + n_mrd


@pytest.mark.torch
def test_reference_sized_state_dict_names_and_shapes():
    from flax import nnx

    from bajax.interop.layout_vocoder_disc import discriminator_layout
    from bajax.vocoder.discriminator import MultipleDiscriminator

    for kind in ("resolution", "spec"):
        cfg = default_discriminator_config()
        cfg.mrd = kind
        cfg.mpd_periods = (2,)                            # one full-width period discriminator is enough
        abstract = nnx.eval_shape(lambda cfg=cfg: MultipleDiscriminator(cfg, rngs=nnx.Rngs(0)))
        shapes = {tuple(str(k) for k in p): tuple(v.get_value().shape)
                  for p, v in nnx.to_flat_state(nnx.state(abstract, nnx.Param))}
        ref = _ref_disc(cfg)
        want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
        assert {e.name: e.torch_shape(shapes) for e in discriminator_layout(shapes, cfg)} == want


# ----------------------------------------------------------------------------------------------------- pitch


def _tones():
    """0.5 s 150 Hz, 0.5 s digital silence, 0.5 s 220 Hz at 24 kHz."""
    t = np.arange(12000) / 24000
    return np.concatenate([0.5 * np.sin(2 * np.pi * 150 * t), np.zeros(12000), 0.3 * np.sin(2 * np.pi * 220 * t)])


@pytest.mark.parametrize("frames", [75, 74, 80])
def test_yin_f0_of_tones_and_silence(frames):
    x = _tones()
    f0 = pitch.f0_of(x, frames)
    assert f0.shape == (frames,) and f0.dtype == np.float32
    # the 20 ms grid (76 points over 1.5 s) is stretched over `frames`: frame j reads grid point ~ j * 76 / frames
    seconds = (np.arange(frames) + 0.5) * (len(x) // 480 + 1) / frames * 0.02

    def at(a, b):
        return f0[(seconds > a + 0.04) & (seconds < b - 0.04)]       # away from the edges' blends

    assert np.all(np.abs(at(0.0, 0.5) / 150 - 1) < 0.02)
    assert np.all(at(0.5, 1.0) == 0)
    assert np.all(np.abs(at(1.0, 1.5) / 220 - 1) < 0.02)


def test_f0_of_noise_and_quiet_is_unvoiced_and_bad_input_is_refused():
    rng = np.random.default_rng(0)
    assert np.mean(pitch.f0_of(0.1 * rng.standard_normal(24480), 51) == 0) > 0.9
    assert np.all(pitch.f0_of(np.zeros(24480), 51) == 0)
    with pytest.raises(ValueError, match="NaN"):
        pitch.f0_of(np.full(4800, np.nan), 10)
    with pytest.raises(ValueError, match="method"):
        pitch.f0_of(np.zeros(4800), 10, method="crepe")


@pytest.mark.torch
def test_interp_linear_is_torch_interpolate():
    import torch

    x = np.random.default_rng(0).random(52) * 200
    for size in (51, 52, 40, 75):
        want = torch.nn.functional.interpolate(torch.from_numpy(x).view(1, 1, -1), size=size, mode="linear").view(-1)
        np.testing.assert_allclose(pitch.interp_linear(x, size), want.numpy(), rtol=1e-12, atol=1e-12)


def test_harvest_method_follows_the_reference():
    pw = pytest.importorskip("pyworld")
    x = _tones()
    f0 = pitch.f0_of(x, 75, method="harvest")
    grid, t = pw.harvest(x, 24000, frame_period=20.0)
    if np.sum(grid != 0) < 5:                     # harvest fails on pure tones: the reference then uses dio
        grid, t = pw.dio(x, 24000, frame_period=20.0)
    want = pitch.interp_linear(pw.stonemask(x, grid, t, 24000), 75).astype(np.float32)
    np.testing.assert_array_equal(f0, want)
    assert np.all(np.abs(f0[5:20] / 150 - 1) < 0.02) and np.all(f0[30:45] == 0)


@pytest.mark.torch
def test_generator_gradient_is_finite_through_silence(pair):
    """A generated crop with digital silence: exact-zero STFT bins in the spec discriminator and the mel."""
    import jax
    import jax.numpy as jnp

    from bajax.vocoder import losses as L

    cfg, disc, _, (real, fake), _, _ = pair
    if cfg.mrd != "spec":
        pytest.skip("the DAC discriminator takes no magnitude; one compile of the gradient is enough")
    silent = jnp.asarray(fake).at[:, 1500:3500].set(0.0)
    f0 = jnp.full((B, N // 480), 120.0)
    g = jax.jit(jax.grad(lambda f: L.generator_objective(disc, jnp.asarray(real), f, f0, f0)[0]))(silent)
    assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0

"""Vocoder interop through the CLI: a reference-structure HiFT state dict saved as hift.pt is imported with
`bajax import-torch --config configs/vocoder/tiny.py`, synthesises the reference's waveform (1e-4, injected
noise), and `bajax export` gives back every tensor of the .pt bitwise in safetensors that the reference
structure loads with strict=True; the export's discriminator/ folder loads strict=True into CosyVoice's HiFiGan
discriminator structure, computes what bajax's does, and comes back through import-torch bitwise; a pickled
object that is not a state dict is refused."""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bajax import cli, runs
from bajax.config import load
from bajax.vocoder.source import draw_source_noise
from tests.interop_util import torch_state
from tests.test_vocoder_generator import HOP, _mel, _perturbed_ref

TINY = str(Path(__file__).resolve().parents[1] / "configs" / "vocoder" / "tiny.py")
pytestmark = [pytest.mark.torch, pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")]


def test_import_pt_synthesise_export_round_trip(tmp_path):
    import jax
    import torch

    cfg = load(TINY, []).model           # the shipped tiny config's shapes
    mel = _mel(2, 12)
    ref = _perturbed_ref(cfg, mel)
    torch.save(ref.state_dict(), tmp_path / "hift.pt")
    assert cli.main(["import-torch", "--src", str(tmp_path / "hift.pt"), "--out", str(tmp_path / "run"),
                     "--config", TINY]) == 0
    model = runs.load(str(tmp_path / "run"), "vocoder").model.generator
    draws = draw_source_noise(jax.random.key(3), 2, 12 * HOP, cfg.nb_harmonics)
    wave, f0 = nnx.jit(lambda m, x, d: m(x, None, inject=d))(model, jnp.asarray(mel), draws)
    ref.m_source.l_sin_gen.inject = (torch.from_numpy(np.array(draws.phase))[:, :, None],
                                     torch.from_numpy(np.array(draws.noise)).transpose(1, 2).contiguous())
    with torch.no_grad():
        want_wave, want_f0 = (t.numpy() for t in ref({"speech_feat": torch.from_numpy(mel)}))
    assert np.abs(np.asarray(f0) - want_f0).max() <= 1e-4
    assert np.abs(np.asarray(wave) - want_wave).max() <= 1e-4

    assert cli.main(["export", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "export")]) == 0
    exported = torch_state(tmp_path / "export")
    original = ref.state_dict()
    assert list(exported) == list(original)                     # hift.pt's names, in its order
    for name, t in original.items():
        assert torch.equal(exported[name], t), name
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["component"] == "vocoder" and config["hift_config"]["upsample_rates"] == [8, 5, 3]
    from tests.torch_ref.hift import from_config

    from_config(cfg.to_dict()).load_state_dict(exported, strict=True)


def test_a_pickle_that_is_not_a_state_dict_is_refused(tmp_path, capsys):
    import torch

    torch.save({"generator": {"nested": "object"}}, tmp_path / "bad.pt")
    assert cli.main(["import-torch", "--src", str(tmp_path / "bad.pt"), "--out", str(tmp_path / "run"),
                     "--config", TINY]) == 2
    assert "bad.pt: expected a state dict {name: tensor}" in capsys.readouterr().err


def test_export_carries_the_discriminators_in_cosyvoice_names(tmp_path):
    """The discriminators (trained here, released by nobody) export to OUT/discriminator/ and load strict=True
    into the reference structure (tests/torch_ref/hift_disc.py); import-torch of the export restores them."""
    import jax
    import torch

    from bajax.interop.import_torch import fresh_model_state
    from bajax.interop.rundir import write_run
    from tests.test_vocoder_disc import _ref_disc, _to_bajax_layout, _waves

    cfg = load(TINY, [])
    state = fresh_model_state(cfg)
    for i, (path, var) in enumerate(nnx.to_flat_state(state)):   # not the values a fresh import would draw
        if path[0] == "discriminator":
            var.set_value(var.get_value() * (1.5 + jax.random.uniform(jax.random.key(i), var.get_value().shape)))
    run = write_run(tmp_path / "run", cfg, state, step=7)
    assert cli.main(["export", "--checkpoint", run, "--out", str(tmp_path / "export")]) == 0
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["companions"] == {"discriminator": ["discriminator/model.safetensors"]}
    assert not any(k.startswith("discriminator.") for k in torch_state(tmp_path / "export"))   # hift.pt alone

    ref = _ref_disc(cfg.model.disc)
    ref.load_state_dict(torch_state(tmp_path / "export" / "discriminator"), strict=True)
    disc = runs.load(run, "vocoder").model.discriminator
    real, fake = _waves()
    got = jax.jit(lambda a, b: disc(a, b))(real, fake)
    with torch.no_grad():
        want = ref.discriminator(torch.from_numpy(real), torch.from_numpy(fake))
    for k, (g, w) in enumerate(zip(got[0] + got[1], want[0] + want[1], strict=True)):
        w = _to_bajax_layout(w)
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-5, atol=1e-5 * np.abs(w).max(), err_msg=f"output {k}")

    assert cli.main(["import-torch", "--src", str(tmp_path / "export"), "--out", str(tmp_path / "back")]) == 0
    before = nnx.state(disc, nnx.Param)
    after = nnx.state(runs.load(str(tmp_path / "back"), "vocoder").model.discriminator, nnx.Param)
    for (pa, va), (pb, vb) in zip(nnx.to_flat_state(before), nnx.to_flat_state(after), strict=True):
        assert pa == pb and np.array_equal(np.asarray(va.get_value()), np.asarray(vb.get_value())), pa

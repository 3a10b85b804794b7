"""Vocoder interop through the CLI: a reference-structure HiFT state dict saved as hift.pt is imported with
`bajax import-torch --config configs/vocoder/tiny.py`, synthesises the reference's waveform (1e-4, injected
noise), and `bajax export` gives back every tensor of the .pt bitwise in safetensors that the reference
structure loads with strict=True; a pickled object that is not a state dict is refused."""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bajax import cli, runs
from bajax.vocoder.config import default_model_config
from bajax.vocoder.source import draw_source_noise
from tests.interop_util import torch_state
from tests.test_vocoder_generator import HOP, _mel, _perturbed_ref

TINY = str(Path(__file__).resolve().parents[1] / "configs" / "vocoder" / "tiny.py")
pytestmark = [pytest.mark.torch, pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")]


def test_import_pt_synthesise_export_round_trip(tmp_path):
    import jax
    import torch

    cfg = default_model_config()
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

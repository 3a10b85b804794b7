"""Export representability: every shipped config exports into a checkpoint whose every tensor name and
shape the reference structure (tests/torch_ref, built from the exported config fields) has, and `bajax
export` refuses a config that departs from a choice the reference code hard-codes, naming the key and the
value it needs, unless --allow-nonreference."""

import json

import pytest
from flax import nnx

from bajax import config, models
from bajax.cli import main
from bajax.interop.export import NonReference, export
from bajax.interop.import_torch import _abstract_shapes
from tests.interop_util import write_model_run

SHIPPED = ["configs/lm/tiny.py", "configs/lm/small.py", "configs/lm/7b.py", "configs/tokenizer/tiny.py",
           "configs/tokenizer/base.py", "configs/flow/tiny.py", "configs/flow/base.py", "configs/vocoder/tiny.py",
           "configs/vocoder/base.py"]


def _reference(cfg):
    """The reference structure of a component, on the meta device (no memory, so 7B is instant)."""
    import torch

    from tests.torch_ref.flow import FlowRef
    from tests.torch_ref.hift import from_config
    from tests.torch_ref.lm import OmniLM
    from tests.torch_ref.tokenizer import TokenizerRef

    if cfg.kind == "vocoder":      # hift.pt: the generator's state dict, built from the generator's settings
        return from_config(cfg.model.to_dict())
    fields = models.get(cfg.kind).layout.reference_config(cfg)
    with torch.device("meta"):
        return {"lm": OmniLM, "tokenizer": TokenizerRef, "flow": FlowRef}[cfg.kind](fields)


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")
@pytest.mark.parametrize("spec", SHIPPED)
def test_shipped_config_exports_what_the_reference_structure_holds(spec, tmp_path):
    cfg = config.load(spec)
    if cfg.kind == "flow" and cfg.model.cond_source == "tokenizer":
        (tmp_path / "config.json").write_text("{}")     # only its shapes are built: no tokenizer is read
        cfg.model.tokenizer_checkpoint = str(tmp_path)
    layout = models.get(cfg.kind).layout
    assert layout.nonreference(cfg) == [], f"{spec} departs from the reference"
    shapes = _abstract_shapes(cfg)
    exported = {e.name: tuple(e.torch_shape(shapes)) for e in layout.entries(shapes)}
    ref = _reference(cfg)
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items() if layout.owns(k)}
    assert exported == want


def _tiny_run(tmp_path, kind: str, **model):
    cfg = config.defaults(kind)
    cfg.model.update(model)
    built = models.get(kind).build_model(cfg.model, nnx.Rngs(0), {})
    return write_model_run(tmp_path / "run", cfg, built)


@pytest.mark.parametrize("kind, model, message", [
    ("lm", {"hidden": 64, "audio_head_heads": 4},
     r"model.hidden=64: the reference audio head needs a multiple of 128"),
    ("lm", {"audio_head_heads": 2},
     r"model.audio_head_heads=2: the reference audio head always uses hidden / 128 = 1 heads"),
    ("flow", {"prenet_in_hidden": 128}, r"model.prenet_in_hidden=128: the reference always uses 256"),
    ("flow", {"chunk": 50}, r"model.chunk=50: the reference always uses 100"),
    ("tokenizer", {"refine_kernel": 3}, r"model.refine_kernel=3: the reference refine net's convolutions are "
                                        r"always 5 wide"),
    ("vocoder", {"f0_layers": 4}, r"model.f0_layers=4: the reference F0 predictor has 5 convs"),
])
def test_export_refuses_a_config_the_reference_cannot_build(tmp_path, capsys, kind, model, message):
    run = _tiny_run(tmp_path, kind, **model)
    with pytest.raises(NonReference, match=message):
        export(run, str(tmp_path / "out"), log=None)
    assert not (tmp_path / "out").exists()
    assert main(["export", "--checkpoint", run, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "--allow-nonreference" in err and message.split(":")[0].replace("\\", "") in err
    # Asked for, it exports and says what the reference code would not build.
    assert main(["export", "--checkpoint", run, "--out", str(tmp_path / "out"), "--allow-nonreference"]) == 0
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert any(line.startswith(message.split(":")[0].replace("\\", "")) for line in written["nonreference"])


def test_lm_needs_a_multiple_of_128_for_the_reference_heads():
    cfg = config.defaults("lm")
    cfg.model.hidden = 96
    with pytest.raises(ValueError, match=r"model.audio_head_heads=0 means hidden / 128 heads as the reference, "
                                         r"but model.hidden=96"):
        models.get("lm").build_model(cfg.model, nnx.Rngs(0), {})

"""Release directories in and out (bajax import-release / export-release) and a release's text tokenizer.

The release is built here in the reference structure with random bf16 weights (tests/torch_ref/release.py):
import -> export must give back every tensor bitwise (dtype included; the never-used audio-head FFN biases
and the Pre-Net position table are carried, not re-created), the same config.json (visual sections
disabled, their weights skipped), the same tokenizer files and hift.pt, and load with strict=True into the
reference modules."""

import json

import numpy as np
import pytest

from bajax.cli import main
from bajax.data import text
from bajax.interop.release_config import ReleaseConfigError
from bajax.lm import special_tokens


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    pytest.importorskip("torch")
    from tests.torch_ref.release import write_release

    folder = tmp_path_factory.mktemp("release")
    return folder, write_release(folder)


@pytest.fixture(scope="module")
def imported(release, tmp_path_factory):
    from bajax.interop.release import import_release

    out = tmp_path_factory.mktemp("runs")
    return out, import_release(str(release[0]), str(out), log=None)


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")
def test_import_maps_the_config_and_reports_what_it_skips(release, imported):
    from bajax import runs

    folder, cfg = release
    out, summary = imported
    assert set(summary["components"]) == {"tokenizer", "lm", "flow", "vocoder"}
    assert summary["skipped_tensors"] == {"model.visual_model": 1, "model.visual_bridge_model": 1}
    assert sorted(summary["skipped_sections"]) == ["video_config", "visual_config"]
    lm = runs.read_config(out / "lm")
    assert (lm.model.hidden, lm.model.kv_heads, lm.model.vocab_size) == (128, 2, 384)
    # Special-token ids come from the release (config.json's audio_config and the tokenizer), not bajax's.
    ids = special_tokens.ids_of(lm.model)
    assert ids["audio_start"] == cfg["audio_config"]["audio_start_token_id"]
    assert ids != special_tokens.byte_level_ids(384)
    tok = text.for_model(lm.data.text_tokenizer, lm.model)     # generation and data use the release tokenizer
    assert tok.special == ids and tok.chat_template.startswith("{% for m in messages %}")
    flow = runs.read_config(out / "flow")
    assert (flow.model.cond_source, flow.model.t_schedule, flow.model.channels) == ("tokenizer", "cosine", 64)
    assert runs.read_config(out / "vocoder").model.base_channels == 32
    # A fine-tune started from the imported LM (train.init_from) exports with what the import carried.
    from bajax.interop.release_carry import Carried

    tuned = out / "tuned"
    tuned.mkdir()
    (tuned / "config.json").write_text(json.dumps({"train": {"init_from": str(out / "lm" / "checkpoints")}}))
    assert Carried.of(tuned).folder == out / "lm" / "release"
    assert sorted(Carried.of(tuned).reader) == [f"audio_head.transformer_layers.{i}.linear{j}.bias"
                                                for i in range(3) for j in (1, 2)]
    assert Carried.of(out / "flow").reader.keys() == [
        "audio_tokenizer.audio_flow_matching_decoder.prenet.positional_embedding"]


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")
def test_export_release_round_trips_every_tensor_bitwise(release, imported, tmp_path):
    import torch

    from bajax.interop.safetensors_io import Reader
    from tests.torch_ref.release import reference_modules

    folder, cfg = release
    out, _ = imported
    dest = tmp_path / "exported"
    assert main(["export-release", "--lm", str(out / "lm"), "--tokenizer", str(out / "tokenizer"),
                 "--flow", str(out / "flow"), "--vocoder", str(out / "vocoder"), "--out", str(dest)]) == 0
    a, b = Reader(folder), Reader(dest)
    visual = {k for k in a if ".visual_" in k}
    assert set(a) - visual == set(b)
    differ = [k for k in b if a.dtype_code(k) != b.dtype_code(k)
              or a.get(k, dtype=None).tobytes() != b.get(k, dtype=None).tobytes()]
    assert not differ, f"{len(differ)} tensors changed: {differ[:5]}"
    # config.json: every field back, the unmodelled sections disabled (their weights are not in the export).
    want = json.loads(json.dumps(cfg))
    want["visual_config"]["enable"] = want["video_config"]["enable"] = False
    assert json.loads((dest / "config.json").read_text()) == want
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "generation_config.json",
                 "modeling_omni.py"):
        assert (dest / name).read_bytes() == (folder / name).read_bytes(), name
    ha, hb = torch.load(folder / "hift.pt"), torch.load(dest / "hift.pt")
    assert ha.keys() == hb.keys() and all(torch.equal(ha[k], hb[k]) for k in ha)
    # Loadable by the reference structure, strictly.
    state = {k: torch.from_numpy(b.get(k)) for k in b}
    for module in reference_modules(cfg):
        module.load_state_dict({k: state[k] for k in module.state_dict()}, strict=True)
    assert sum(len(m.state_dict()) for m in reference_modules(cfg)) == len(state)


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")
@pytest.mark.parametrize("edit, message", [
    (lambda c: c.pop("use_norm_head"), r"use_norm_head=True \(absent: the reference default\): bajax cannot honour"),
    (lambda c: c.update(attention_qkv_bias=False), r"attention_qkv_bias=False: bajax cannot honour"),
    (lambda c: c["flow_matching_config"].update(spk_emb_dim=192), r"flow_matching_config.spk_emb_dim=192"),
    (lambda c: c.update(fancy_new_field=1), r"fancy_new_field: a field bajax does not know"),
    (lambda c: c["audio_config"].update(audio_pad_token_id=5), r"audio_config.audio_pad_token_id"),
])
def test_a_field_bajax_cannot_honour_stops_the_import_naming_it(release, tmp_path, capsys, edit, message):
    import shutil

    from bajax.interop.release import import_release

    folder, cfg = release
    src = tmp_path / "edited"
    shutil.copytree(folder, src)
    changed = json.loads(json.dumps(cfg))
    edit(changed)
    (src / "config.json").write_text(json.dumps(changed))
    with pytest.raises(ReleaseConfigError, match=message):
        import_release(str(src), str(tmp_path / "runs"), log=None)
    assert not (tmp_path / "runs").exists()
    assert main(["import-release", "--src", str(src), "--out", str(tmp_path / "runs")]) == 2
    assert "config.json" in capsys.readouterr().err


def test_rotary_emb_base_takes_precedence_and_round_trips():
    from tests.torch_ref.release import release_config

    class Ids:
        def token_to_id(self, s):
            return 300

    from bajax import config
    from bajax.interop import release_config as rc

    cfg = release_config(Ids())
    cfg["rotary_emb_base"] = 10000.0
    derived = rc.derive(cfg, "config.json")
    assert derived.models["lm"]["rope_theta"] == 10000.0
    assert any(n.startswith("rope_theta=1000000.0: not read") for n in derived.notes)
    cfgs = {}
    for kind in ("lm", "tokenizer", "flow"):
        cfgs[kind] = config.defaults(kind)
    from bajax.interop.release import _component_config

    cfgs = {k: _component_config(k, derived.models[k]) for k in cfgs}
    back = rc.build(cfgs, {n: 300 for n in special_tokens.NAMES}, cfg)
    assert back["rotary_emb_base"] == 10000.0 and back["rope_theta"] == 1000000.0


def test_release_text_tokenizer_from_tokenizer_json_or_vocab_and_merges(tmp_path):
    pytest.importorskip("tokenizers")
    from tests.torch_ref.release import ADDED, CHAT_TEMPLATE, build_text_tokenizer

    tok = build_text_tokenizer(tmp_path / "json")
    tok.model.save(str(tmp_path / "json"))
    slow = tmp_path / "slow"                          # vocab.json + merges.txt + tokenizer_config.json only
    slow.mkdir()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        (slow / name).write_bytes((tmp_path / "json" / name).read_bytes())
    fast = text.HFTokenizer(str(tmp_path / "json"))
    from_files = text.HFTokenizer(str(slow))
    assert fast.special == from_files.special
    base = tok.get_vocab_size(with_added_tokens=False)
    assert fast.special["audio_start"] == base + ADDED.index("<audio_start_baichuan>")
    assert fast.chat_template == from_files.chat_template == CHAT_TEMPLATE
    for s in ["hello there, the quick fox", "  spaces\nand lines 42"]:
        np.testing.assert_array_equal(fast.encode(s), from_files.encode(s))
        assert fast.decode(fast.encode(s)) == s
    # The model's ids decide: a tokenizer that disagrees with model.special_ids is refused, naming the token.
    with pytest.raises(ValueError, match=r"'audio_start': \(\d+, 5\)"):
        text.make(str(slow), vocab="qwen", vocab_size=384, special={**fast.special, "audio_start": 5})
    assert text.make(str(slow), vocab="qwen", vocab_size=384, special=fast.special).special == fast.special
    with pytest.raises(ValueError, match="differ from the Qwen ids"):     # the Qwen ids without special_ids
        text.make(str(slow), vocab="qwen", vocab_size=384)

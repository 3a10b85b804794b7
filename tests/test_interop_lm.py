"""LLM interop: export -> PyTorch (reference structure, strict=True) logits parity, export -> import bitwise,
a tiny transformers Qwen2ForCausalLM imported with `bajax import-hf`."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bajax import runs
from bajax.config import defaults
from bajax.interop import rundir
from bajax.interop.export import export
from bajax.interop.import_torch import import_torch
from bajax.lm import special_tokens
from bajax.lm.model import AudioLLM
from tests.interop_util import assert_runs_bitwise_equal, perturb, read_leaves, torch_state, write_model_run

pytestmark = pytest.mark.torch
CODEBOOKS = (16, 12, 8, 8, 8, 8, 8, 8)


def lm_cfg(**kw):
    cfg = defaults("lm")
    # hidden 128: the smallest width the reference audio head accepts (hidden / 128 heads)
    cfg.model.update({**dict(hidden=128, layers=2, heads=4, kv_heads=2, head_dim=32, mlp=64, codebook_sizes=CODEBOOKS,
                             audio_head_layers=2, audio_head_heads=0), **kw})
    return cfg


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lm")
    cfg = lm_cfg()
    model = perturb(AudioLLM(cfg.model, rngs=nnx.Rngs(0)))
    run = write_model_run(tmp / "run", cfg, model)
    # A tiny shard limit forces the sharded layout with an index.
    summary = export(run, str(tmp / "export"), max_shard_bytes=64 * 1024, log=None)
    return cfg, model, run, tmp / "export", summary


def batch(cfg, b=2, t=12):
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 256, (b, t))
    tokens[:, 3:8] = special_tokens.ids_for(cfg.model.vocab, cfg.model.vocab_size)["audio_pad"]
    codes = np.stack([rng.integers(0, c, (b, t)) for c in CODEBOOKS], -1)
    return tokens, codes


def test_export_loads_strict_and_logits_match(lm_run):
    cfg, model, _, out, summary = lm_run
    assert len(summary["files"]) > 1 and (out / "model.safetensors.index.json").is_file()
    assert_reference_logits(cfg, model, out)


def test_audio_head_norms_keep_the_reference_eps_under_another_backbone_eps(tmp_path):
    """The reference head's RMSNorms use eps 1e-6 whatever rms_norm_eps is (a Qwen2 import has 1e-5); with a
    backbone eps large enough to matter, the exported head must still match the reference."""
    cfg = lm_cfg(norm_eps=0.05)
    model = perturb(AudioLLM(cfg.model, rngs=nnx.Rngs(0)))
    run = write_model_run(tmp_path / "run", cfg, model)
    export(run, str(tmp_path / "export"), log=None)
    assert json.loads((tmp_path / "export" / "config.json").read_text())["rms_norm_eps"] == 0.05
    assert_reference_logits(cfg, model, tmp_path / "export")


def assert_reference_logits(cfg, model, out):
    import torch

    from tests.torch_ref.lm import OmniLM

    config = json.loads((out / "config.json").read_text())
    ref = OmniLM(config).eval()
    ref.load_state_dict(torch_state(out), strict=True)
    tokens, codes = batch(cfg)
    pad = special_tokens.ids_for(cfg.model.vocab, cfg.model.vocab_size)["audio_pad"]
    with torch.no_grad():
        h_ref = ref.model(torch.from_numpy(tokens), torch.from_numpy(codes), pad)
        want_text = ref.lm_head(h_ref).numpy()
        want_audio = [x.numpy() for x in ref.audio_head(h_ref.reshape(-1, h_ref.shape[-1]),
                                                        torch.from_numpy(codes.reshape(-1, 8)),
                                                        ref.model.audio_embed_layers)]
    b, t = tokens.shape
    jb = {"tokens": jnp.asarray(tokens, jnp.int32), "audio_codes": jnp.asarray(codes, jnp.int32),
          "positions": jnp.tile(jnp.arange(t, dtype=jnp.int32), (b, 1)), "segment_ids": jnp.ones((b, t), jnp.int32)}
    h = model.hidden(jb)
    got_text = np.asarray(model.text_logits(h))
    np.testing.assert_allclose(got_text, want_text, rtol=1e-4, atol=1e-4 * np.abs(want_text).max())
    got_audio = model.audio_logits(h, jb["audio_codes"])
    for k, (g, w) in enumerate(zip(got_audio, want_audio, strict=True)):
        w = w.reshape(b, t, -1)
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-4, atol=1e-4 * np.abs(w).max(), err_msg=f"head {k}")


def test_export_names_are_reference_names(lm_run):
    from bajax.interop.safetensors_io import Reader

    names = set(Reader(lm_run[3]).keys())
    assert {"model.layers.0.self_attn.W_pack.weight", "audio_head.transformer_layers.1.linear2.bias",
            "model.audio_embed_layers.7.weight", "lm_head.weight", "audio_head.heads.0.bias"} <= names
    assert not any("q_proj" in n or "kernel" in n for n in names)


def test_stacked_leaves_are_stored_and_read_per_layer(lm_run):
    """What keeps export memory at one tensor: a stacked leaf is chunked per layer, and a one-layer read
    returns exactly that layer of the restored leaf."""
    _, _, run, _, summary = lm_run
    sdir = str(runs.state_dir(run))
    leaf = ("layers", "layers", "mlp", "gate_proj", "kernel")
    reader = rundir.LeafReader(sdir)
    store = reader._open(leaf)
    assert store.shape[0] == 2 and store.chunk_layout.read_chunk.shape == (1, *store.shape[1:])
    whole = read_leaves(sdir, [leaf])[leaf]
    np.testing.assert_array_equal(reader.read(leaf, (1,)), whole[1])
    assert 0 < summary["largest_tensor_bytes"] < summary["bytes"]


@pytest.mark.slow
def test_export_then_import_is_bitwise(lm_run, tmp_path):
    _, _, run, out, _ = lm_run
    back = import_torch(str(out), str(tmp_path / "back"), log=None)
    assert assert_runs_bitwise_equal(run, back) > 40


def test_import_reports_name_and_shapes_on_mismatch(lm_run, tmp_path):
    cfg, _, _, out, _ = lm_run
    cfg = lm_cfg(mlp=48)
    cfg_file = tmp_path / "c.py"
    cfg_file.write_text("from bajax.runs import config_from_dict\nimport json\n"
                        f"def get_config(arg=''):\n    return config_from_dict(json.loads({cfg.to_json()!r}))\n")
    with pytest.raises(ValueError, match=r"model.layers.0.mlp.gate_proj.weight: checkpoint shape \(64, 128\) "
                                         r"!= bajax shape \(48, 128\)"):
        import_torch(str(out), str(tmp_path / "bad"), config=str(cfg_file), log=None)


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.slow
def test_hf_qwen2_import_logits(tmp_path, tied):
    import torch
    import transformers

    from bajax.interop.import_hf import import_qwen2
    from bajax.runs import load
    from tests import hf_qwen2_ref

    hf_cfg = transformers.Qwen2Config(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0,
                                      rms_norm_eps=1e-6, tie_word_embeddings=tied, max_position_embeddings=64)
    torch.manual_seed(0)
    hf = transformers.Qwen2ForCausalLM(hf_cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            p.copy_(1.0 + 0.2 * torch.randn_like(p) if "norm" in name else 0.2 * torch.randn_like(p))
    hf.save_pretrained(tmp_path / "hf")
    run = import_qwen2(str(tmp_path / "hf"), str(tmp_path / "run"), log=None)
    cfg = runs.read_config(run)
    assert (cfg.model.vocab_size, cfg.model.kv_heads, cfg.model.tie_embeddings) == (384, 2, tied)
    model = load(run, "lm").model          # the same restore as `train.init_from`
    ids = np.random.default_rng(0).integers(0, 256, (2, 10))
    with torch.no_grad():
        want = hf(torch.from_numpy(ids)).logits.numpy()
    jb = {"tokens": jnp.asarray(ids, jnp.int32), "audio_codes": jnp.zeros((2, 10, 8), jnp.int32),
          "positions": jnp.tile(jnp.arange(10, dtype=jnp.int32), (2, 1)), "segment_ids": jnp.ones((2, 10), jnp.int32)}
    got = np.asarray(model.text_logits(model.hidden(jb)))
    assert np.all(got[..., 300:] == 0)                      # padded vocabulary rows
    np.testing.assert_allclose(got[..., :300], want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # The streaming per-tensor mapping agrees with the reference mapping in tests/hf_qwen2_ref.py.
    tensors = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    tensors["model.embed_tokens.weight"] = np.pad(tensors["model.embed_tokens.weight"], ((0, 84), (0, 0)))
    tensors.pop("lm_head.weight", None) if tied else tensors.update(
        {"lm_head.weight": np.pad(tensors["lm_head.weight"], ((0, 84), (0, 0)))})
    ref = hf_qwen2_ref.qwen2_to_bajax(tensors, cfg.model)
    mine = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    np.testing.assert_array_equal(mine["layers"]["layers"]["self_attn"]["q_proj"]["kernel"],
                                  ref["layers"]["layers"]["self_attn"]["q_proj"]["kernel"])
    np.testing.assert_array_equal(mine["embed_tokens"]["embedding"], ref["embed_tokens"]["embedding"])

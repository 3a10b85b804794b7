"""Tokenizer interop: export -> PyTorch (reference structure, strict=True): identical RVQ codes, decoder
mel within 1e-4; export -> import bitwise (codebook EMA buffers included); Whisper encoder import."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bajax.config import defaults
from bajax.interop.export import export
from bajax.interop.import_torch import import_torch
from bajax.tokenizer.model import Tokenizer
from tests.interop_util import assert_runs_bitwise_equal, perturb, torch_state, write_model_run

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def tok_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tok")
    cfg = defaults("tokenizer")
    model = perturb(Tokenizer(cfg.model, rngs=nnx.Rngs(0)), scale=0.1)
    rng = np.random.default_rng(1)
    for layer in model.bridge.rvq.vq_list:        # EMA buffers: distinct values, so their mapping is tested
        cb = layer.codebook
        cb.embed_avg[...] = jnp.asarray(rng.standard_normal(cb.embed_avg.shape).astype(np.float32))
        cb.cluster_size[...] = jnp.asarray(rng.random(cb.cluster_size.shape).astype(np.float32) + 0.5)
    run = write_model_run(tmp / "run", cfg, model)
    export(run, str(tmp / "export"), log=None)
    return cfg, model, run, tmp / "export"


@pytest.mark.slow
def test_codes_identical_and_mel_matches(tok_run):
    import torch

    from tests.torch_ref.tokenizer import TokenizerRef

    cfg, model, _, out = tok_run
    ref = TokenizerRef(json.loads((out / "config.json").read_text())).eval()
    ref.load_state_dict(torch_state(out), strict=True)
    t = ref.audio_tokenizer
    mel = np.random.default_rng(2).standard_normal((1, 96, cfg.model.n_mels)).astype(np.float32)
    enc, enc_len = model.encoder(jnp.asarray(mel), jnp.array([96]))
    codes, mask = model.bridge.encode(enc, enc_len)
    with torch.no_grad():
        enc_t = t.audio_model(torch.from_numpy(mel).transpose(1, 2))
        codes_t = t.audio_bridge_model.encode(enc_t)
    np.testing.assert_allclose(np.asarray(enc), enc_t.numpy(), atol=1e-4 * np.abs(enc_t.numpy()).max(), rtol=0)
    assert codes.shape == codes_t.shape == (1, 12, 8)
    np.testing.assert_array_equal(np.asarray(codes), codes_t.numpy())

    out_j = model.decode(codes, jnp.sum(mask, axis=1).astype(jnp.int32))
    with torch.no_grad():
        refined, coarse, hidden = t.audio_decoder(t.audio_bridge_model.decode(torch.from_numpy(np.array(codes))))
    for name, got, want in (("hidden", out_j["hidden_states_before_dconv2"], hidden),
                            ("coarse", out_j["coarse_mel"], coarse), ("refined", out_j["refined_mel"], refined)):
        want = want.numpy()
        assert got.shape == want.shape, name
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4 * np.abs(want).max(), err_msg=name)


def test_export_has_codebook_buffers(tok_run):
    from bajax.interop.safetensors_io import Reader

    r = Reader(tok_run[3])
    for buf in ("cluster_size", "embed_avg", "embed"):
        assert f"audio_tokenizer.audio_bridge_model.vq_list.7.codebook.{buf}" in r
    assert r.shape("audio_tokenizer.audio_decoder.dconv1.conv.weight") == (64, 64, 3)   # ConvTranspose [in, out, k]
    assert r.shape("audio_tokenizer.audio_decoder.post_net.layers.12.weight") == (80, 64, 1)


@pytest.mark.slow
def test_export_then_import_is_bitwise(tok_run, tmp_path):
    _, _, run, out = tok_run
    back = import_torch(str(out), str(tmp_path / "back"), log=None)
    # unused_steps (dead-code restart counter) is bajax-only: not exported, reset to 0 on import.
    assert assert_runs_bitwise_equal(run, back, skip=lambda p: p[-1] == "unused_steps") > 40


def test_whisper_import_initialises_the_encoder(tmp_path):
    import torch
    import transformers

    from bajax import runs
    from bajax.interop.import_hf import import_whisper
    from bajax.runs import load

    hf_cfg = transformers.WhisperConfig(d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128,
                                        decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=128,
                                        num_mel_bins=128, max_source_positions=50, max_target_positions=16,
                                        vocab_size=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                        decoder_start_token_id=1)
    torch.manual_seed(0)
    hf = transformers.WhisperModel(hf_cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "layer_norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(tmp_path / "hf")
    run = import_whisper(str(tmp_path / "hf"), str(tmp_path / "run"), log=None)
    assert runs.read_config(run).model.max_source_positions == 50
    tok = load(run, "tokenizer").model
    mel = np.random.default_rng(0).standard_normal((2, 100, 128)).astype(np.float32)
    with torch.no_grad():
        want = hf.encoder(torch.from_numpy(mel).transpose(1, 2)).last_hidden_state.numpy()
    got, _ = jax.jit(lambda m: tok.encoder(m, jnp.array([100, 100])))(jnp.asarray(mel))
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=1e-4)
    # ... and `bajax train --config RUN/config.py --config.train.init_from=RUN/checkpoints` starts from it.
    from bajax.train.trainer import Trainer

    cfg = runs.read_config(run)
    cfg.train.init_from = f"{run}/checkpoints"
    trainer = Trainer(cfg, str(tmp_path / "train"), devices=jax.devices()[:1])
    with trainer.scope():
        model = nnx.merge(trainer.graphdef, trainer.fresh_state()["model"])
    started, imported = jax.tree.leaves(nnx.state(model.encoder)), jax.tree.leaves(nnx.state(tok.encoder))
    assert len(started) == len(imported) > 4
    for a, b in zip(started, imported, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

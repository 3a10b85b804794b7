"""Tokenizer encoder: parity with transformers' WhisperModel encoder after import, batch invariance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bajax.tokenizer.encoder import AudioEncoder, encoder_lengths
from bajax.tokenizer.hf_whisper import load_whisper_encoder

D, HEADS, FFN, LAYERS, MELS, POS = 64, 4, 128, 2, 128, 50


def tiny_encoder(**kw) -> AudioEncoder:
    return AudioEncoder(MELS, D, HEADS, FFN, LAYERS, POS, rngs=nnx.Rngs(0), **kw)


@pytest.fixture(scope="module")
def hf_whisper():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.WhisperConfig(d_model=D, encoder_layers=LAYERS, encoder_attention_heads=HEADS,
                                     encoder_ffn_dim=FFN, decoder_layers=1, decoder_attention_heads=HEADS,
                                     decoder_ffn_dim=FFN, num_mel_bins=MELS, max_source_positions=POS,
                                     max_target_positions=16, vocab_size=64, pad_token_id=0,
                                     bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    model = transformers.WhisperModel(cfg).eval()
    with torch.no_grad():     # random init leaves LayerNorms at identity: perturb them so they are tested too
        for name, p in model.named_parameters():
            if "layer_norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    tensors = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    return model, tensors


@pytest.mark.torch
@pytest.mark.parametrize("scan_layers", [True, False])
def test_encoder_matches_transformers_whisper(hf_whisper, scan_layers):
    torch = pytest.importorskip("torch")
    model, tensors = hf_whisper
    enc = tiny_encoder(scan_layers=scan_layers)
    load_whisper_encoder(enc, tensors)
    mel = np.random.default_rng(0).standard_normal((2, 2 * POS, MELS)).astype(np.float32)
    with torch.no_grad():
        want = model.encoder(torch.from_numpy(mel).transpose(1, 2)).last_hidden_state.numpy()
    got, lengths = enc(jnp.asarray(mel), jnp.array([2 * POS, 2 * POS]))
    assert got.shape == want.shape == (2, POS, D) and lengths.tolist() == [POS, POS]
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)


@pytest.mark.torch
def test_baichuan_key_layout_and_safetensors_dir_import(hf_whisper, tmp_path):
    """The same tensors under the reference's names (audio_tokenizer.audio_model.*), or in a checkpoint
    directory of WhisperForConditionalGeneration layout (model.encoder.*), load identically."""
    from safetensors.numpy import save_file

    _, tensors = hf_whisper
    save_file({"model." + k: np.ascontiguousarray(v) for k, v in tensors.items()},
              str(tmp_path / "model.safetensors"))
    c = tiny_encoder()
    load_whisper_encoder(c, tmp_path)
    renamed = {k.replace("encoder.", "audio_tokenizer.audio_model.").replace("embed_positions.weight",
                                                                          "positional_embedding"): v
               for k, v in tensors.items() if k.startswith("encoder.")}
    a, b = tiny_encoder(), tiny_encoder()
    load_whisper_encoder(a, tensors)
    load_whisper_encoder(b, renamed)
    pure = lambda m: nnx.to_pure_dict(nnx.state(m))
    jax.tree.map(np.testing.assert_array_equal, pure(a), pure(b))
    jax.tree.map(np.testing.assert_array_equal, pure(a), pure(c))
    bad = dict(tensors, **{"encoder.conv1.weight": np.zeros((D, MELS + 1, 3), np.float32)})
    with pytest.raises(ValueError, match="conv1"):
        load_whisper_encoder(tiny_encoder(), bad)


def test_encoder_is_batch_invariant():
    """An utterance encodes the same alone or padded in a batch (its frames never see padding)."""
    enc = tiny_encoder()
    rng = np.random.default_rng(1)
    mel_lengths = np.array([100, 57])
    mel = rng.standard_normal((2, 100, MELS)).astype(np.float32)
    mel[1, 57:] = 123.0                                                   # garbage past the length
    got, lengths = enc(jnp.asarray(mel), jnp.asarray(mel_lengths))
    assert lengths.tolist() == encoder_lengths(mel_lengths).tolist() == [50, 29]
    alone, _ = enc(jnp.asarray(mel[1:, :57]), jnp.array([57]))
    np.testing.assert_allclose(np.asarray(got[1, :29]), np.asarray(alone[0]), atol=2e-5)
    assert not np.asarray(got[1, 29:]).any()

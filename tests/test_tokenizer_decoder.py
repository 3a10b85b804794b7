"""Audio decoder: the reference forward (re-stated here in torch ops), batch invariance, lengths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bajax.tokenizer.decoder import AudioDecoder

D, HEADS, FFN, LAYERS = 16, 2, 32, 2


def make(reference_padding=True) -> AudioDecoder:
    dec = AudioDecoder(D, HEADS, FFN, LAYERS, n_mels=10, max_positions=200, refine_channels=(12, 12),
                       reference_padding=reference_padding, rngs=nnx.Rngs(0))
    # Non-trivial norms so the GroupNorm affine parameters are exercised.
    for norm in (dec.dconv1.norm, dec.dconv2.norm, *dec.post_net.norms):
        norm.weight[...] = 1 + 0.3 * jax.random.normal(jax.random.key(2), norm.weight.shape)
        norm.bias[...] = 0.3 * jax.random.normal(jax.random.key(3), norm.bias.shape)
    return dec


def torch_reference(dec: AudioDecoder, x: np.ndarray, lengths: np.ndarray):
    """The reference OmniAudioDecoder forward on a padded batch, written with torch modules/ops."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    p = jax.tree.map(lambda a: torch.from_numpy(np.array(a, np.float32)), nnx.to_pure_dict(nnx.state(dec)))
    t = torch.from_numpy
    lengths = t(lengths)

    def seq_mask(n, lens):
        return (torch.arange(n)[None, :] < lens[:, None])[..., None]

    def dconv(h, lens, params, stride):        # CasualConvTranspose1d: conv -> GroupNorm -> trim -> mask
        w = params["conv"]["kernel"].permute(1, 2, 0)
        y = F.conv_transpose1d(h.transpose(1, 2), w, params["conv"]["bias"], stride=stride)
        y = F.group_norm(y, 1, params["norm"]["weight"], params["norm"]["bias"], eps=1e-5).transpose(1, 2)
        trim = max(0, 3 - stride)
        y = y[:, : y.shape[1] - trim]
        out = (lens - 1) * stride + 3 - trim
        y = torch.where(seq_mask(y.shape[1], out), y, 0.0)[:, : int(out.max())]
        return y, out

    x = torch.where(seq_mask(x.shape[1], lengths), t(x), 0.0)
    h, len50 = dconv(x, lengths, {"conv": p["dconv1"]["conv"], "norm": p["dconv1"]["norm"]}, 4)
    h = h + p["positional_embedding"][: h.shape[1]]
    L = p["transformer"]["layers"]["layers"]
    hd = D // HEADS
    outs = []
    for b in range(h.shape[0]):                # varlen attention = each utterance on its own frames
        u = h[b, : int(len50[b])]
        for i in range(LAYERS):
            a = L["self_attn"]
            ln1 = F.layer_norm(u, (D,), L["self_attn_layer_norm"]["scale"][i], L["self_attn_layer_norm"]["bias"][i])
            q = ln1 @ a["q_proj"]["kernel"][i].reshape(D, D) + a["q_proj"]["bias"][i].reshape(D)
            k = ln1 @ a["k_proj"]["kernel"][i].reshape(D, D)
            v = ln1 @ a["v_proj"]["kernel"][i].reshape(D, D) + a["v_proj"]["bias"][i].reshape(D)
            heads = lambda z: z.reshape(-1, HEADS, hd).transpose(0, 1)  # noqa: E731
            o = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), is_causal=True)
            o = o.transpose(0, 1).reshape(-1, D) @ a["o_proj"]["kernel"][i].reshape(D, D) + a["o_proj"]["bias"][i]
            u = u + o
            ln2 = F.layer_norm(u, (D,), L["final_layer_norm"]["scale"][i], L["final_layer_norm"]["bias"][i])
            m = L["mlp"]
            f = F.gelu(ln2 @ m["fc1"]["kernel"][i] + m["fc1"]["bias"][i]) @ m["fc2"]["kernel"][i] + m["fc2"]["bias"][i]
            u = u + f
        ln = p["transformer"]["layer_norm"]
        outs.append(F.layer_norm(u, (D,), ln["scale"], ln["bias"]))
    hidden = torch.zeros(h.shape)
    for b, u in enumerate(outs):
        hidden[b, : u.shape[0]] = u
    coarse, len100 = dconv(hidden, len50, {"conv": p["dconv2"]["conv"], "norm": p["dconv2"]["norm"]}, 2)
    # MelSpecRefineNet
    out_len = ((len100.float() * 160 / 16000) * 16000 / 256).long()
    c = F.interpolate(coarse[:, : int(len100.max())].transpose(1, 2), size=int(out_len.max()), mode="nearest")
    r = c
    pn = p["post_net"]
    for i in range(len(pn["convs"])):
        r = F.conv1d(r, pn["convs"][i]["kernel"].permute(2, 1, 0), pn["convs"][i]["bias"], padding=2)
        r = F.mish(F.group_norm(r, 1, pn["norms"][i]["weight"], pn["norms"][i]["bias"], eps=1e-5))
    r = F.conv1d(r, pn["proj"]["kernel"].permute(2, 1, 0), pn["proj"]["bias"]).transpose(1, 2) + c.transpose(1, 2)
    mask = seq_mask(r.shape[1], out_len)
    return {"refined_mel": torch.where(mask, r, 0.0).numpy(),
            "coarse_mel": torch.where(mask, c.transpose(1, 2), 0.0).numpy(),
            "hidden_states_before_dconv2": hidden.numpy(), "mel_lengths": out_len.numpy(),
            "lengths_before_dconv2": len50.numpy()}


@pytest.mark.torch
@pytest.mark.slow
def test_decoder_matches_reference_forward_on_a_padded_batch():
    dec = make(reference_padding=True)
    lengths = np.array([6, 4, 5])
    x = np.random.default_rng(0).standard_normal((3, 6, D)).astype(np.float32)
    want = torch_reference(dec, x, lengths)
    got = dec(jnp.asarray(x), jnp.asarray(lengths))
    assert got["lengths_before_dconv2"].tolist() == [23, 15, 19] == want["lengths_before_dconv2"].tolist()
    assert got["mel_lengths"].tolist() == want["mel_lengths"].tolist() == [28, 18, 23]
    for key in ("hidden_states_before_dconv2", "coarse_mel", "refined_mel"):
        w = want[key]
        np.testing.assert_allclose(np.asarray(got[key])[:, : w.shape[1]], w, atol=1e-4, rtol=0, err_msg=key)


@pytest.mark.slow
def test_per_utterance_mode_is_batch_invariant_and_equals_reference_mode_alone():
    ref_mode, own = make(True), make(False)
    lengths = jnp.array([6, 3])
    x = jax.random.normal(jax.random.key(0), (2, 6, D))
    x = x.at[1, 3:].set(50.0)                                         # garbage past the length
    batch = own(x, lengths)
    for b in range(2):
        n = int(lengths[b])
        alone = own(x[b:b + 1, :n], lengths[b:b + 1])
        alone_ref = ref_mode(x[b:b + 1, :n], lengths[b:b + 1])
        m = int(alone["mel_lengths"][0])
        for key in ("refined_mel", "coarse_mel"):
            np.testing.assert_allclose(np.asarray(batch[key][b, :m]), np.asarray(alone[key][0, :m]), atol=2e-5)
            np.testing.assert_allclose(np.asarray(alone_ref[key]), np.asarray(alone[key]), atol=1e-6)
            assert not np.asarray(batch[key][b, m:]).any()

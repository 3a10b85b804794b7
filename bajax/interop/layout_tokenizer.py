"""The audio tokenizer's tensors in the reference layout (audio_modeling_omni.py, vector_quantize.py), under
`audio_tokenizer.`: audio_model (Whisper encoder), audio_bridge_model (bridge + RVQ codebook EMA buffers),
audio_decoder (dconv1, causal Whisper layers, dconv2, post_net refine net).

Not exported: `unused_steps` of each codebook (a bajax training counter for dead-code restart; import resets
it to 0) and the text-alignment branch (`align.*`: a trainable projection and a frozen LM that exist only
for the training loss).
"""

from __future__ import annotations

from bajax.interop.entries import Conv, ConvT, E, Flat, Linear, P, Same
from bajax.interop.layout_lm import _numbered

PREFIX = "audio_tokenizer."


def whisper_layers(shapes, name: str, root: str, *, rms: bool = False, index: tuple[int, ...] = ()) -> list:
    """`name.{i}.*` of Whisper-style layers (q/v/out bias, no k bias, fc1/fc2) stacked at `root`.
    `rms`: the Pre-Net's variant with RMSNorm (weight only) instead of LayerNorm."""
    lin, out = Linear(), []
    n = int(shapes[P(root + "self_attn_layer_norm/" + ("weight" if rms else "scale"))][len(index)])
    for i in range(n):
        p, ix, a = f"{name}.{i}.", index + (i,), root + "self_attn/"
        out += [E(p + "self_attn.q_proj.weight", lin, a + "q_proj/kernel", index=ix),
                E(p + "self_attn.q_proj.bias", Flat(), a + "q_proj/bias", index=ix),
                E(p + "self_attn.k_proj.weight", lin, a + "k_proj/kernel", index=ix),
                E(p + "self_attn.v_proj.weight", lin, a + "v_proj/kernel", index=ix),
                E(p + "self_attn.v_proj.bias", Flat(), a + "v_proj/bias", index=ix),
                E(p + "self_attn.out_proj.weight", Linear(2), a + "o_proj/kernel", index=ix),
                E(p + "self_attn.out_proj.bias", Same(), a + "o_proj/bias", index=ix)]
        for norm in ("self_attn_layer_norm", "final_layer_norm"):
            if rms:
                out.append(E(p + f"{norm}.weight", Same(), root + f"{norm}/weight", index=ix))
            else:
                out += [E(p + f"{norm}.weight", Same(), root + f"{norm}/scale", index=ix),
                        E(p + f"{norm}.bias", Same(), root + f"{norm}/bias", index=ix)]
        for fc in ("fc1", "fc2"):
            out += [E(p + f"{fc}.weight", lin, root + f"mlp/{fc}/kernel", index=ix),
                    E(p + f"{fc}.bias", Same(), root + f"mlp/{fc}/bias", index=ix)]
    return out


def layer_norm(name: str, root: str) -> list:
    return [E(name + ".weight", Same(), root + "/scale"), E(name + ".bias", Same(), root + "/bias")]


def conv(name: str, root: str, rule=None, bias: bool = True) -> list:
    out = [E(name + ".weight", rule or Conv(), root + "/kernel")]
    return out + ([E(name + ".bias", Same(), root + "/bias")] if bias else [])


def encoder(shapes, prefix: str = PREFIX + "audio_model.", root: str = "encoder/",
            positions: str = "positional_embedding") -> list:
    """The Whisper encoder; `prefix` / `positions` also describe a transformers WhisperModel
    ('encoder.', 'embed_positions.weight')."""
    return (conv(prefix + "conv1", root + "conv1") + conv(prefix + "conv2", root + "conv2")
            + [E(prefix + positions, Same(), root + "positional_embedding")]
            + whisper_layers(shapes, prefix + "layers", root + "transformer/layers/layers/")
            + layer_norm(prefix + "layer_norm", root + "transformer/layer_norm"))


def bridge(shapes) -> list:
    p, r = PREFIX + "audio_bridge_model.", "bridge/"
    out = (conv(p + "gate_proj", r + "gate_proj", bias=False) + conv(p + "up_proj", r + "up_proj", bias=False)
           + [E(p + "down_proj.weight", Linear(), r + "down_proj/kernel")]
           + layer_norm(p + "layer_norm", r + "layer_norm")
           + [E(p + "proj_decoder.weight", Linear(), r + "proj_decoder/kernel"),
              E(p + "proj_decoder.bias", Same(), r + "proj_decoder/bias")])
    for i in range(_numbered(shapes, r + "rvq/vq_list")):
        for buf in ("cluster_size", "embed_avg", "embed"):
            out.append(E(p + f"vq_list.{i}.codebook.{buf}", Same(), r + f"rvq/vq_list/{i}/codebook/{buf}"))
    return out


def decoder(shapes) -> list:
    p, r = PREFIX + "audio_decoder.", "decoder/"
    out = []
    for d in ("dconv1", "dconv2"):
        out += conv(p + d + ".conv", r + d + "/conv", ConvT())
        out += [E(p + d + ".norm.weight", Same(), r + d + "/norm/weight"),
                E(p + d + ".norm.bias", Same(), r + d + "/norm/bias")]
    out.append(E(p + "positional_embedding", Same(), r + "positional_embedding"))
    out += whisper_layers(shapes, p + "layers", r + "transformer/layers/layers/")
    out += layer_norm(p + "layer_norm", r + "transformer/layer_norm")
    # post_net.layers is nn.Sequential([Conv, GroupNorm, Mish] x n, Conv1x1): Mish has no parameters.
    n = _numbered(shapes, r + "post_net/convs")
    for i in range(n):
        out += conv(p + f"post_net.layers.{3 * i}", r + f"post_net/convs/{i}")
        out += [E(p + f"post_net.layers.{3 * i + 1}.weight", Same(), r + f"post_net/norms/{i}/weight"),
                E(p + f"post_net.layers.{3 * i + 1}.bias", Same(), r + f"post_net/norms/{i}/bias")]
    return out + conv(p + f"post_net.layers.{3 * n}", r + "post_net/proj")


def baichuan_tokenizer(shapes) -> list:
    return encoder(shapes) + bridge(shapes) + decoder(shapes)

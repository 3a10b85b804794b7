"""The flow decoder's tensors in the reference layout (audio_modeling_omni.py FlowmatchingPrenet and
flow_matching.py ConditionalDecoder, CosyVoice-2 / diffusers names), under
`audio_tokenizer.audio_flow_matching_decoder.`:

  prenet.positional_embedding         [5000, d] sinusoids the reference registers but never adds (written,
                                      ignored on import)
  prenet.in_mlp.{0,2}                 Linear cond -> 4d, SiLU, Linear 4d -> d
  prenet.transformer_layers.{i}       Whisper layers with RMSNorm;  prenet.final_norm, prenet.out_proj
  conditional_decoder.time_mlp.linear_{1,2}
  conditional_decoder.{down,mid,up}_blocks.{a}.0      ResNet: mlp.1 (time), block{1,2}.block.{0: conv,
                                                      2: LayerNorm}, res_conv
  conditional_decoder.{down,mid,up}_blocks.{a}.1.{c}  BasicTransformerBlock: norm1, attn1.to_{q,k,v},
                                                      attn1.to_out.0, norm3, ff.net.0.proj, ff.net.2
  conditional_decoder.{down,up}_blocks.0.2            causal Conv1d k3 (stride 1)
  conditional_decoder.final_block.block.{0,2}, final_proj
"""

from __future__ import annotations

from bajax.interop.entries import Const, Conv, E, Linear, P, Same
from bajax.interop.layout_tokenizer import conv, whisper_layers
from bajax.layers.sinusoidal import whisper_sinusoids

PREFIX = "audio_tokenizer.audio_flow_matching_decoder."
_conv = Conv()
PRENET_POSITIONS = 5000   # the reference's prenet_max_source_positions (not a bajax setting: the table is unused)


def prenet(shapes, positions: int = PRENET_POSITIONS) -> list:
    p, r = PREFIX + "prenet.", "prenet/"
    d = int(shapes[P(r + "final_norm/weight")][0])
    return ([E(p + "positional_embedding", Const(lambda: whisper_sinusoids(positions, d)))]
            + [E(p + "in_mlp.0.weight", Linear(), r + "in_proj/kernel"),
               E(p + "in_mlp.0.bias", Same(), r + "in_proj/bias"),
               E(p + "in_mlp.2.weight", Linear(), r + "in_out/kernel"),
               E(p + "in_mlp.2.bias", Same(), r + "in_out/bias")]
            + whisper_layers(shapes, p + "transformer_layers", r + "layers/layers/", rms=True)
            + [E(p + "final_norm.weight", Same(), r + "final_norm/weight"),
               E(p + "out_proj.weight", Linear(), r + "out_proj/kernel")])


def _block(p: str, root: str, index: tuple[int, ...]) -> list:
    """CausalBlock1D: block.0 = causal conv, block.2 = LayerNorm (block.1 / .3 transpose, .4 Mish)."""
    return [E(p + "block.0.weight", _conv, root + "conv/kernel", index=index),
            E(p + "block.0.bias", Same(), root + "conv/bias", index=index),
            E(p + "block.2.weight", Same(), root + "norm/scale", index=index),
            E(p + "block.2.bias", Same(), root + "norm/bias", index=index)]


def _stage(shapes, p: str, root: str, index: tuple[int, ...] = ()) -> list:
    """ModuleList([resnet, transformer_blocks, ...]) at `p`, from a bajax Stage at `root`."""
    r = root + "resnet/"
    out = [E(p + "0.mlp.1.weight", Linear(), r + "time_proj/kernel", index=index),
           E(p + "0.mlp.1.bias", Same(), r + "time_proj/bias", index=index)]
    out += _block(p + "0.block1.", r + "block1/", index) + _block(p + "0.block2.", r + "block2/", index)
    out += [E(p + "0.res_conv.weight", _conv, r + "res_conv/kernel", index=index),
            E(p + "0.res_conv.bias", Same(), r + "res_conv/bias", index=index)]
    b = root + "blocks/layers/"
    for c in range(int(shapes[P(b + "norm1/scale")][len(index)])):
        q, ix = p + f"1.{c}.", index + (c,)
        out += [E(q + "norm1.weight", Same(), b + "norm1/scale", index=ix),
                E(q + "norm1.bias", Same(), b + "norm1/bias", index=ix)]
        out += [E(q + f"attn1.to_{n}.weight", Linear(), b + f"attn/{n}_proj/kernel", index=ix) for n in "qkv"]
        out += [E(q + "attn1.to_out.0.weight", Linear(2), b + "attn/o_proj/kernel", index=ix),
                E(q + "attn1.to_out.0.bias", Same(), b + "attn/o_proj/bias", index=ix),
                E(q + "norm3.weight", Same(), b + "norm3/scale", index=ix),
                E(q + "norm3.bias", Same(), b + "norm3/bias", index=ix),
                E(q + "ff.net.0.proj.weight", Linear(), b + "ff/fc1/kernel", index=ix),
                E(q + "ff.net.0.proj.bias", Same(), b + "ff/fc1/bias", index=ix),
                E(q + "ff.net.2.weight", Linear(), b + "ff/fc2/kernel", index=ix),
                E(q + "ff.net.2.bias", Same(), b + "ff/fc2/bias", index=ix)]
    return out


def estimator(shapes) -> list:
    p, r = PREFIX + "conditional_decoder.", "estimator/"
    out = [E(p + "time_mlp.linear_1.weight", Linear(), r + "time_in/kernel"),
           E(p + "time_mlp.linear_1.bias", Same(), r + "time_in/bias"),
           E(p + "time_mlp.linear_2.weight", Linear(), r + "time_out/kernel"),
           E(p + "time_mlp.linear_2.bias", Same(), r + "time_out/bias")]
    out += _stage(shapes, p + "down_blocks.0.", r + "down/") + conv(p + "down_blocks.0.2", r + "down_conv")
    for a in range(int(shapes[P(r + "mid/layers/resnet/res_conv/bias")][0])):
        out += _stage(shapes, p + f"mid_blocks.{a}.", r + "mid/layers/", (a,))
    out += _stage(shapes, p + "up_blocks.0.", r + "up/") + conv(p + "up_blocks.0.2", r + "up_conv")
    out += _block(p + "final_block.", r + "final_block/", ())
    return out + conv(p + "final_proj", r + "final_proj")


def baichuan_flow(shapes) -> list:
    return prenet(shapes) + estimator(shapes)

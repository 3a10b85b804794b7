"""The HiFT vocoder generator's tensors in the reference layout: the keys of
`Cosy24kVocoder.hifigan_generator.state_dict()`, i.e. of third_party/cosy24k_vocoder/hift.pt (no prefix):

  m_source.l_linear                          Linear(nb_harmonics + 1 -> 1) merging the sine harmonics
  conv_pre, ups.{i}, conv_post               weight-normed: bias, weight_g [C, 1, 1], weight_v
  source_downs.{i}                           plain Conv1d: weight, bias
  source_resblocks.{i}, resblocks.{3 i + j}  convs1.{d}, convs2.{d} (weight-normed), activations1.{d}.alpha,
                                             activations2.{d}.alpha (Snake)
  f0_predictor.condnet.{2 l}                 weight-normed k3 convs (the odd indices are the ELUs)
  f0_predictor.classifier                    Linear(cond -> 1)

Weight norm is the reference's `torch.nn.utils.weight_norm` (dim 0): weight_g is [out, 1, 1] for a Conv1d
but [in, 1, 1] for a ConvTranspose1d (its weight is [in, out, k]); bajax keeps g as a vector (Trailing).
The reference's STFT window is a plain attribute, not a buffer, so the state dict holds no constants.
"""

from __future__ import annotations

from bajax.interop.entries import Conv, ConvT, E, Linear, P, Same, Trailing
from bajax.interop.layout_lm import _numbered


def _plain(name: str, root: str, rule) -> list:
    return [E(name + ".weight", rule, root + "/kernel"), E(name + ".bias", Same(), root + "/bias")]


def _normed(name: str, root: str, rule=None) -> list:
    """A weight-normed conv, in the state dict's order (weight_norm re-registers g and v after the bias)."""
    return [E(name + ".bias", Same(), root + "/bias"),
            E(name + ".weight_g", Trailing(), root + "/weight_g"),
            E(name + ".weight_v", rule or Conv(), root + "/weight_v")]


def _resblock(shapes, name: str, root: str) -> list:
    n = _numbered(shapes, root + "/convs1")
    out = []
    for conv in ("convs1", "convs2"):
        for d in range(n):
            out += _normed(f"{name}.{conv}.{d}", f"{root}/{conv}/{d}")
    for act in ("activations1", "activations2"):
        out += [E(f"{name}.{act}.{d}.alpha", Same(), f"{root}/{act}/{d}/alpha") for d in range(n)]
    return out


def hift(shapes, prefix: str = "") -> list:
    """Entries of a bajax HiFTGenerator state (leaf path -> shape) under torch key prefix `prefix`."""
    if P("conv_pre/weight_v") not in shapes:
        raise KeyError("not a HiFT generator state: no leaf conv_pre/weight_v")
    p = prefix
    out = _plain(p + "m_source.l_linear", "m_source/l_linear", Linear())
    out += _normed(p + "conv_pre", "conv_pre")
    out += [e for i in range(_numbered(shapes, "ups")) for e in _normed(f"{p}ups.{i}", f"ups/{i}", ConvT())]
    out += [e for i in range(_numbered(shapes, "source_downs"))
            for e in _plain(f"{p}source_downs.{i}", f"source_downs/{i}", Conv())]
    for i in range(_numbered(shapes, "source_resblocks")):
        out += _resblock(shapes, f"{p}source_resblocks.{i}", f"source_resblocks/{i}")
    for i in range(_numbered(shapes, "resblocks")):
        out += _resblock(shapes, f"{p}resblocks.{i}", f"resblocks/{i}")
    out += _normed(p + "conv_post", "conv_post")
    for i in range(_numbered(shapes, "f0_predictor/condnet")):
        out += _normed(f"{p}f0_predictor.condnet.{2 * i}", f"f0_predictor/condnet/{i}")
    return out + _plain(p + "f0_predictor.classifier", "f0_predictor/classifier", Linear())

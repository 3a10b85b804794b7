"""The HiFT vocoder's discriminator tensors in the reference layout, under CosyVoice's HiFiGan training module
(`discriminator.` = HiFiGan.discriminator, a MultipleDiscriminator):

  discriminator.mpd.discriminators.{i}.convs.{0..4}.{weight_g, weight_v, bias}        Matcha DiscriminatorP
  discriminator.mpd.discriminators.{i}.conv_post.{...}
  mrd='resolution' (Baichuan / DAC DiscriminatorR):
  discriminator.mrd.discriminators.{i}.spec_fn.window                 torchaudio's Hann(w) buffer (constant)
  discriminator.mrd.discriminators.{i}.band_convs.{b}.{0..4}.{...}    5 bands x 5 convs
  discriminator.mrd.discriminators.{i}.conv_post.{...}
  mrd='spec' (CosyVoice SpecDiscriminator):
  discriminator.mrd.discriminators.{i}.discriminators.{0..4}.{...}, discriminator.mrd.discriminators.{i}.out.{...}

Weight norm keys: `style='weight_g'` is the legacy torch.nn.utils.weight_norm that Matcha and Baichuan use
(weight_g [out, 1, 1, 1], weight_v [out, in, kh, kw]); `style='parametrizations'` is CosyVoice HEAD's
discriminator.py when torch has torch.nn.utils.parametrizations (parametrizations.weight.original0 = g,
original1 = v). bajax keeps weight_g [out] and weight_v [kh, kw, in, out] (channels-last HWIO).

`export_state` / `import_state` move a live MultipleDiscriminator to and from a {name: array} dict;
`bajax export` of a vocoder run writes them to OUT/discriminator/model.safetensors (bajax/models/vocoder.py).
"""

from __future__ import annotations

import numpy as np

from bajax.audio.mel import hann_window
from bajax.interop.entries import Const, E, Entry, P, Rule, Same, Trailing

PREFIX = "discriminator."
STYLES = {"weight_g": ("weight_g", "weight_v"),
          "parametrizations": ("parametrizations.weight.original0", "parametrizations.weight.original1")}


class Conv2d(Rule):
    """bajax kernel [kh, kw, in, out] <-> torch Conv2d weight [out, in, kh, kw]."""

    def shape(self, shapes):
        kh, kw, i, o = shapes[0]
        return (o, i, kh, kw)

    def to_torch(self, arrays):
        return arrays[0].transpose(3, 2, 0, 1)

    def from_torch(self, t, shapes):
        return [t.transpose(2, 3, 1, 0)]


def _count(shapes, root: str) -> int:
    """How many numbered children `root/{i}/...` the leaves have."""
    head = P(root)
    found = {int(p[len(head)]) for p in shapes if p[:len(head)] == head and len(p) > len(head)}
    if found != set(range(len(found))):
        raise ValueError(f"{root}: children {sorted(found)} are not numbered 0..n-1")
    return len(found)


def _wn(name: str, root: str, style: str) -> list[Entry]:
    g, v = STYLES[style]
    return [E(f"{name}.{g}", Trailing(3), root + "/weight_g"), E(f"{name}.{v}", Conv2d(), root + "/weight_v"),
            E(f"{name}.bias", Same(), root + "/bias")]


def discriminator_layout(shapes, cfg, prefix: str = PREFIX, style: str = "weight_g") -> list[Entry]:
    """Entries for a MultipleDiscriminator of config `cfg` whose leaf shapes are `shapes`."""
    if style not in STYLES:
        raise ValueError(f"weight-norm style {style!r} is not one of {sorted(STYLES)}")
    out: list[Entry] = []
    for i in range(_count(shapes, "mpd/discriminators")):
        r, p = f"mpd/discriminators/{i}/", f"{prefix}mpd.discriminators.{i}."
        for j in range(_count(shapes, r + "convs")):
            out += _wn(p + f"convs.{j}", r + f"convs/{j}", style)
        out += _wn(p + "conv_post", r + "conv_post", style)
    for i in range(_count(shapes, "mrd/discriminators")):
        r, p = f"mrd/discriminators/{i}/", f"{prefix}mrd.discriminators.{i}."
        if cfg.mrd == "resolution":
            w = int(cfg.mrd_fft_sizes[i])
            out.append(E(p + "spec_fn.window", Const(lambda w=w: np.asarray(hann_window(w), np.float32))))
            for b in range(_count(shapes, r + "band_convs")):
                for j in range(_count(shapes, r + f"band_convs/{b}")):
                    out += _wn(p + f"band_convs.{b}.{j}", r + f"band_convs/{b}/{j}", style)
            out += _wn(p + "conv_post", r + "conv_post", style)
        else:
            for j in range(_count(shapes, r + "discriminators")):
                out += _wn(p + f"discriminators.{j}", r + f"discriminators/{j}", style)
            out += _wn(p + "out", r + "out", style)
    return out


def _leaves(model) -> dict:
    from flax import nnx

    return {tuple(str(k) for k in path): var for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def export_state(model, cfg, prefix: str = PREFIX, style: str = "weight_g") -> dict[str, np.ndarray]:
    """{reference name: float32 array} of a MultipleDiscriminator."""
    leaves = _leaves(model)
    shapes = {p: tuple(v.get_value().shape) for p, v in leaves.items()}
    return {e.name: np.asarray(e.rule.to_torch([np.asarray(leaves[s.path].get_value()) for s in e.srcs]))
            for e in discriminator_layout(shapes, cfg, prefix, style)}


def import_state(model, cfg, tensors: dict, prefix: str = PREFIX, style: str = "weight_g") -> None:
    """Sets the model's parameters from reference tensors (numpy or torch), strictly: every entry must be
    present with its shape, and every tensor under `prefix` must be an entry."""
    import jax.numpy as jnp

    leaves = _leaves(model)
    shapes = {p: tuple(v.get_value().shape) for p, v in leaves.items()}
    entries = discriminator_layout(shapes, cfg, prefix, style)
    names = {e.name for e in entries}
    unknown = sorted(k for k in tensors if k.startswith(prefix) and k not in names)
    missing = sorted(names - set(tensors))
    if unknown or missing:
        raise KeyError(f"discriminator tensors: missing {missing[:5]} ({len(missing)}), without a bajax "
                       f"counterpart {unknown[:5]} ({len(unknown)}); check the config (mrd, channels) and style")
    for e in entries:
        t = tensors[e.name]
        t = t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)
        want = e.torch_shape(shapes)
        if tuple(t.shape) != want:
            raise ValueError(f"tensor {e.name}: checkpoint shape {tuple(t.shape)} != bajax shape {want}")
        for s, piece in zip(e.srcs, e.rule.from_torch(t, e.src_shapes(shapes)), strict=True):
            var = leaves[s.path]
            var.set_value(jnp.asarray(piece, var.get_value().dtype))

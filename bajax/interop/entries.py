"""The vocabulary of tensor mappings between bajax state leaves and PyTorch tensors.

An `Entry` names ONE PyTorch tensor and says how it is computed from one or more bajax leaves (a leaf is a
path in `nnx.state(model)`, e.g. ('layers', 'layers', 'mlp', 'gate_proj', 'kernel'), optionally indexed on
its leading stacked-layer dimensions). Its `Rule` converts both ways:

    rule.to_torch([arrays])          -> tensor           (export)
    rule.from_torch(tensor, shapes)  -> [arrays]         (import; the exact inverse, so a round trip is bitwise)
    rule.shape([shapes])             -> tensor shape     (known before any data is read: shard planning,
                                                          and the name + both shapes in a mismatch error)

Layouts (layout_*.py) are lists of entries built from the leaf shapes of a checkpoint. Entries that share
a leaf fall into one `group`; export and import process one group at a time, so host memory holds only
that group's leaves (plus the tensor being written), never the whole model.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np

Path = tuple[str, ...]


def P(path: str) -> Path:
    """'a/b/c' -> ('a', 'b', 'c')."""
    return tuple(path.split("/"))


@dataclasses.dataclass(frozen=True)
class Src:
    path: Path
    index: tuple[int, ...] = ()      # leading indices into a stacked leaf (layer, or mid block + block)


class Rule:
    def shape(self, shapes: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
        raise NotImplementedError

    def to_torch(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def from_torch(self, t: np.ndarray, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
        raise NotImplementedError


class Same(Rule):
    """Identical layout (embedding tables, norm weights, codebooks, position tables)."""

    def shape(self, shapes):
        return tuple(shapes[0])

    def to_torch(self, arrays):
        return arrays[0]

    def from_torch(self, t, shapes):
        return [t.reshape(shapes[0])]


class Flat(Rule):
    """A bias kept per head in bajax ([heads, head_dim]) is one vector in PyTorch."""

    def shape(self, shapes):
        return (math.prod(shapes[0]),)

    def to_torch(self, arrays):
        return arrays[0].reshape(-1)

    def from_torch(self, t, shapes):
        return [t.reshape(shapes[0])]


class Trailing(Rule):
    """A per-channel vector, [C] in bajax, that torch stores with `n` trailing unit dims (the weight_g
    [C, 1, 1] of torch.nn.utils.weight_norm on a Conv1d / ConvTranspose1d)."""

    def __init__(self, n: int = 2):
        self.n = n

    def shape(self, shapes):
        return tuple(shapes[0]) + (1,) * self.n

    def to_torch(self, arrays):
        return arrays[0].reshape(arrays[0].shape + (1,) * self.n)

    def from_torch(self, t, shapes):
        return [t.reshape(shapes[0])]


class Linear(Rule):
    """bajax kernel [in..., out...] (heads and head_dim kept apart) <-> torch Linear weight [out, in]."""

    def __init__(self, n_in: int = 1):
        self.n_in = n_in

    def shape(self, shapes):
        s = shapes[0]
        return (math.prod(s[self.n_in:]), math.prod(s[: self.n_in]))

    def to_torch(self, arrays):
        a = arrays[0]
        return a.reshape(math.prod(a.shape[: self.n_in]), -1).T

    def from_torch(self, t, shapes):
        return [t.T.reshape(shapes[0])]


class Conv(Rule):
    """bajax Conv1d kernel [k, in, out] <-> torch Conv1d weight [out, in, k]."""

    def shape(self, shapes):
        k, i, o = shapes[0]
        return (o, i, k)

    def to_torch(self, arrays):
        return arrays[0].transpose(2, 1, 0)

    def from_torch(self, t, shapes):
        return [t.transpose(2, 1, 0)]


class ConvT(Rule):
    """bajax ConvTranspose1d kernel [k, in, out] <-> torch ConvTranspose1d weight [in, out, k]."""

    def shape(self, shapes):
        k, i, o = shapes[0]
        return (i, o, k)

    def to_torch(self, arrays):
        return arrays[0].transpose(1, 2, 0)

    def from_torch(self, t, shapes):
        return [t.transpose(2, 0, 1)]


class Cat(Rule):
    """Several leaves concatenated along torch dim 0 (W_pack = q|k|v; MultiheadAttention in_proj)."""

    def __init__(self, parts: Sequence[Rule]):
        self.parts = tuple(parts)

    def shape(self, shapes):
        each = [r.shape([s]) for r, s in zip(self.parts, shapes, strict=True)]
        return (sum(s[0] for s in each),) + tuple(each[0][1:])

    def to_torch(self, arrays):
        return np.concatenate([r.to_torch([a]) for r, a in zip(self.parts, arrays, strict=True)], axis=0)

    def from_torch(self, t, shapes):
        sizes = [r.shape([s])[0] for r, s in zip(self.parts, shapes, strict=True)]
        pieces = np.split(t, np.cumsum(sizes)[:-1], axis=0)
        return [r.from_torch(p, [s])[0] for r, p, s in zip(self.parts, pieces, shapes, strict=True)]


class DepthFFN(Rule):
    """The audio head's per-position FFN weights, stacked [depth, a, b] in bajax (y_k = x_k W_k).

    The reference keeps them in one Linear whose weight it views as [b, depth, a] and contracts as
    einsum('bld,tld->blt'): linear1 [2h, depth * h] (a = h, b = 2h) and linear2 [h, depth * 2h]
    (a = 2h, b = h). So torch[b, k, a] = bajax[k, a, b] for both.
    """

    def shape(self, shapes):
        depth, a, b = shapes[0]
        return (b, depth * a)

    def to_torch(self, arrays):
        w = arrays[0]
        return w.transpose(2, 0, 1).reshape(w.shape[2], -1)

    def from_torch(self, t, shapes):
        depth, a, b = shapes[0]
        return [t.reshape(b, depth, a).transpose(1, 2, 0)]


class Padded(Rule):
    """A vocabulary-sized tensor whose bajax table has `rows` padding rows beyond the checkpoint's: the
    import fills them with zeros (logit 0, never a target), the export drops them."""

    def __init__(self, inner: Rule, rows: int):
        self.inner, self.rows = inner, rows

    def shape(self, shapes):
        s = self.inner.shape(shapes)
        return (s[0] - self.rows,) + tuple(s[1:])

    def to_torch(self, arrays):
        return self.inner.to_torch(arrays)[: self.inner.shape([a.shape for a in arrays])[0] - self.rows]

    def from_torch(self, t, shapes):
        pad = np.zeros((self.rows,) + t.shape[1:], t.dtype)
        return self.inner.from_torch(np.concatenate([t, pad], axis=0), shapes)


class Const(Rule):
    """A tensor the reference stores but never reads (unused FFN biases, the Pre-Net position table):
    written on export so `strict=True` loading works, ignored on import."""

    def __init__(self, value: np.ndarray | Callable[[], np.ndarray]):
        self.value = value

    def array(self) -> np.ndarray:
        return self.value() if callable(self.value) else self.value

    def shape(self, shapes):
        return tuple(self.array().shape)

    def to_torch(self, arrays):
        return self.array()

    def from_torch(self, t, shapes):
        return []


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    rule: Rule
    srcs: tuple[Src, ...] = ()
    load: bool = True          # False: export-only (a tied lm_head written from the embedding table)

    def src_shapes(self, leaf_shapes: dict[Path, tuple[int, ...]]) -> list[tuple[int, ...]]:
        out = []
        for s in self.srcs:
            if s.path not in leaf_shapes:
                raise KeyError(f"{self.name}: bajax leaf {'/'.join(s.path)} is not in the checkpoint")
            out.append(tuple(leaf_shapes[s.path][len(s.index):]))
        return out

    def torch_shape(self, leaf_shapes) -> tuple[int, ...]:
        return tuple(int(d) for d in self.rule.shape(self.src_shapes(leaf_shapes)))


def E(name: str, rule: Rule, *srcs: str | Src, index: tuple[int, ...] = (), load: bool = True) -> Entry:
    """Entry shorthand: sources given as 'a/b/c' strings share `index`."""
    return Entry(name, rule, tuple(s if isinstance(s, Src) else Src(P(s), index) for s in srcs), load)


def groups(entries: Sequence[Entry]) -> list[list[Entry]]:
    """Entries partitioned so that no leaf is needed by two groups (union-find over shared leaves), in the
    order of first appearance. Constants form singleton groups."""
    parent: dict[Path, Path] = {}

    def find(x: Path) -> Path:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for e in entries:
        roots = [find(s.path) for s in e.srcs]
        for r in roots[1:]:
            parent[find(r)] = find(roots[0])
    out: dict[object, list[Entry]] = {}
    for i, e in enumerate(entries):
        key = find(e.srcs[0].path) if e.srcs else ("const", i)
        out.setdefault(key, []).append(e)
    return list(out.values())


def leaves_of(group: Sequence[Entry]) -> list[Path]:
    seen: dict[Path, None] = {}
    for e in group:
        for s in e.srcs:
            seen.setdefault(s.path, None)
    return list(seen)

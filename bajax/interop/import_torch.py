"""`bajax import-torch` (= `bajax import-hf --kind baichuan`): reference-layout safetensors (or a PyTorch
state-dict file such as hift.pt, read with `torch.load(weights_only=True)`) -> a bajax run dir.

The inverse of `bajax export`. The bajax config comes from SRC/config.json's "bajax" section (written by
the export) or from `--config` (a reference checkpoint: the config must describe the same shapes; the first
tensor whose shape differs stops the import with its name and both shapes). The component is the config's
kind; tensors of the other components in the same file are skipped. An export's companions (a vocoder's
SRC/discriminator/) are read when they are there; without them those parameters start fresh.

The generic engine `import_entries` is shared with the Hugging Face imports: the model is created fresh on
the config's mesh (parameters born sharded), then every tensor group is read tensor by tensor from the
safetensors files into a host buffer of the target leaf and placed on that leaf's sharding. Leaves no
entry covers keep their fresh initialisation and are reported.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from bajax import runs
from bajax.interop import entries as ent
from bajax.interop import rundir
from bajax.interop.safetensors_io import Reader, open_reader, safetensors_files


def fresh_model_state(cfg):
    """The nnx.State of a freshly initialised model of `cfg` on its mesh (parameters born sharded)."""
    import jax
    from flax import nnx

    from bajax import models, runs, sharding

    kind = models.get(cfg.kind)
    mesh = sharding.make_mesh(dict(cfg.mesh))

    def build():
        return nnx.state(kind.build_model(cfg.model, nnx.Rngs(cfg.seed), {}))

    with runs.scope(mesh, cfg):
        abstract = jax.eval_shape(build)
        return jax.jit(build, out_shardings=sharding.state_shardings(abstract, mesh))()


def _flat(state) -> dict:
    """{leaf path with str keys: Variable} of an nnx.State."""
    from flax import nnx

    return {tuple(str(k) for k in path): var for path, var in nnx.to_flat_state(state)}


def import_entries(reader: Reader, entries: list[ent.Entry], cfg, *, log=print):
    """The model state of `cfg` with every loadable entry read from `reader` (shapes checked first)."""
    import jax

    state = fresh_model_state(cfg)
    leaves = _flat(state)
    shapes = {p: tuple(v.get_value().shape) for p, v in leaves.items()}
    entries = [e for e in entries if e.load]
    for e in entries:                                    # every problem before any work
        want = e.torch_shape(shapes)
        if e.name not in reader:
            raise KeyError(f"tensor {e.name!r} (bajax {'/'.join(e.srcs[0].path) if e.srcs else 'constant'}, "
                           f"shape {want}) is missing from {reader.src}")
        if reader.shape(e.name) != want:
            raise ValueError(f"tensor {e.name}: checkpoint shape {reader.shape(e.name)} != bajax shape {want} "
                             f"(for {'/'.join(e.srcs[0].path) if e.srcs else 'a constant'}); the config "
                             "must describe the checkpoint's sizes")
    for group in ent.groups([e for e in entries if e.srcs]):
        buffers = {p: np.array(jax.device_get(leaves[p].get_value())) for p in ent.leaves_of(group)}
        for e in group:
            pieces = e.rule.from_torch(reader.get(e.name, dtype=None), e.src_shapes(shapes))
            for s, piece in zip(e.srcs, pieces, strict=True):
                buf = buffers[s.path]
                if s.index:
                    buf[s.index] = piece
                else:
                    buf[...] = piece
        for p, buf in buffers.items():
            var = leaves[p]
            var.set_value(jax.device_put(buf.astype(var.get_value().dtype), var.get_value().sharding))
        del buffers
    covered = {s.path for e in entries for s in e.srcs}
    fresh = sorted({p[0] for p in shapes if p not in covered})
    if log and fresh:
        log(f"kept their fresh initialisation (not in the source checkpoint): {', '.join(fresh)}")
    return state


def check_unknown(reader: Reader, entries: list[ent.Entry], keep, ignore: str | None) -> int:
    """Tensors this component owns (`keep(name)`) that no entry reads are an error: a silently dropped
    weight. Returns the number of skipped tensors (other components, or `ignore` regex matches)."""
    known = {e.name for e in entries}
    pattern = re.compile(ignore) if ignore else None
    unknown, skipped = [], 0
    for name in reader:
        if name in known:
            continue
        if not keep(name) or (pattern and pattern.search(name)):
            skipped += 1
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(f"{reader.src}: tensors with no bajax counterpart: {sorted(unknown)[:5]} ({len(unknown)} "
                         "in all); check the config, or skip them with --ignore REGEX")
    return skipped


def import_torch(src: str, out_dir: str, *, config: str | None = None, overrides=(), ignore: str | None = None,
                 log=print) -> str:
    from bajax.interop.export import layout_of

    cfg_path = Path(src) / "config.json" if Path(src).is_dir() else Path(src).parent / "config.json"
    if config:
        from bajax.config import load

        cfg = load(config, overrides)
    elif cfg_path.is_file() and "bajax" in json.loads(cfg_path.read_text()):
        cfg = runs.config_from_dict(json.loads(cfg_path.read_text())["bajax"], f"{cfg_path} ('bajax' section)")
    else:
        raise ValueError(f"{src}: no config.json with a 'bajax' section (written by `bajax export`); pass "
                         "--config with a bajax config whose model section describes this checkpoint")
    layout = layout_of(cfg.kind)
    shapes = _abstract_shapes(cfg)
    entries = layout.entries(shapes)
    # An export's companions (the vocoder's discriminators) are read when their folders are in SRC.
    companions = layout.companions(shapes, cfg)
    present = [stem for stem in companions if (Path(src) / stem).is_dir()]
    reader = (Reader(src, extra=[f for stem in present for f in safetensors_files(Path(src) / stem)]) if present
              else open_reader(src))
    entries += [e for stem in present for e in companions[stem]]
    skipped = check_unknown(reader, entries, layout.owns, ignore)
    state = import_entries(reader, entries, cfg, log=log)
    out = rundir.write_run(out_dir, cfg, state)
    if log:
        log(f"imported {cfg.kind} ({len(entries)} tensors, {skipped} of other components skipped) -> {out}")
    return out


def _abstract_shapes(cfg) -> dict:
    import jax
    from flax import nnx

    from bajax import models

    kind = models.get(cfg.kind)
    abstract = jax.eval_shape(lambda: nnx.state(kind.build_model(cfg.model, nnx.Rngs(0), {})))
    return {p: tuple(v.get_value().shape) for p, v in _flat(abstract).items()}

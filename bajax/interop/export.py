"""`bajax export`: a run directory -> safetensors in the reference (Baichuan-Audio) parameter layout + config.json.

The run's kind decides the component through its registered `ReferenceLayout` (bajax/models): lm
-> model.* / lm_head / audio_head.*; tokenizer -> audio_tokenizer.* (encoder, bridge with the codebook EMA
buffers, decoder, refine net); flow -> the flow decoder keys (audio_tokenizer.audio_flow_matching_decoder.*);
vocoder -> hift.pt's keys, and its discriminators to OUT/discriminator/model.safetensors (CosyVoice's
HiFiGan names, `ReferenceLayout.companions`).
Streaming: the output plan comes from checkpoint metadata, then one tensor at a time is read (its sources
as per-layer TensorStore slices), converted and appended, so peak host memory is ~ the largest exported
tensor with its sources. A LoRA run exports merged (kernel + alpha / r * A B, bajax/interop/adapters.py);
`export_adapters` there writes its adapters alone.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bajax import models, runs
from bajax.interop import adapters, rundir
from bajax.interop.release_carry import Carried
from bajax.interop.safetensors_io import ShardedWriter

DEFAULT_SHARD_BYTES = 5 * 1024**3        # Hugging Face's default max_shard_size


def layout_of(kind: str) -> models.ReferenceLayout:
    """The reference layout of a registered kind; a kind without one cannot be exported or imported."""
    spec = models.get(kind)
    if spec.layout is None:
        raise ValueError(f"model kind {kind!r} has no reference layout: nothing to export or import")
    return spec.layout


class NonReference(ValueError):
    """The run's config departs from a choice the reference code hard-codes: its export would not load, or
    would load and compute something else."""


def export(run_dir: str, out_dir: str, *, step: int | None = None, max_shard_bytes: int = DEFAULT_SHARD_BYTES,
           allow_nonreference: bool = False, log=print) -> dict:
    """Writes OUT/model.safetensors (or shards + index) and OUT/config.json; returns a summary dict.

    A config the reference code cannot represent (`ReferenceLayout.nonreference`) is refused, naming each
    key and the value the reference needs, unless `allow_nonreference` (then config.json lists them under
    "nonreference", for PyTorch code of your own)."""
    t0 = time.time()
    run = runs.resolve(run_dir, "run")
    cfg = runs.read_config(run, flag="run")
    departures = layout_of(cfg.kind).nonreference(cfg)
    if departures and not allow_nonreference:
        raise NonReference(f"{run_dir}: the reference code cannot represent this {cfg.kind} model:\n  "
                           + "\n  ".join(departures)
                           + "\nTrain with the reference's values, or pass --allow-nonreference to export anyway "
                             "(the reference code will not load it as is)")
    step = runs.pick_step(run, step, flag="run")
    sdir = str(runs.state_dir(run, step, flag="run"))
    meta = runs.leaf_shapes(sdir)
    shapes = {k: v[0] for k, v in meta.items()}
    layout = layout_of(cfg.kind)
    entries = layout.entries(shapes)
    companions = layout.companions(shapes, cfg)
    # A LoRA run: its adapters are merged into the kernels they adapt as those are read (interop/adapters.py).
    adapted = adapters.adapted_kernels(shapes)
    used = ({s.path for e in [*entries, *(e for group in companions.values() for e in group)] for s in e.srcs}
            | adapters.adapter_leaves(shapes))
    unmapped = sorted("/".join(p) for p in shapes if p not in used and not layout.bajax_only(p))
    if unmapped:
        raise ValueError(f"{run_dir}: checkpoint leaves with no reference name: {unmapped[:5]} "
                         f"({len(unmapped)} in all); the layout in bajax/interop does not know them")
    plan = _plan(entries, shapes, meta)
    carried = Carried.of(run.workdir)   # a run imported from a release: its constants and dtypes (release_carry.py)
    if carried is not None:
        plan = [(name, carried.shape(e, shape), carried.dtype(name, dtype))
                for e, (name, shape, dtype) in zip(entries, plan, strict=True)]
    meta_header = {"bajax_kind": cfg.kind, "bajax_step": str(step)}
    writer = ShardedWriter(out_dir, plan, max_shard_bytes=max_shard_bytes, metadata=meta_header)
    reader = rundir.LeafReader(sdir)
    if adapted:
        reader = adapters.MergingReader(reader, adapted, adapters.scale_of(cfg, run_dir))
        cfg = adapters.plain_config(cfg)   # the export is a plain model: its bajax config has no adapters
    largest = _write(writer, reader, entries, plan, carried)
    files = writer.close()
    total_bytes = writer.total_bytes
    companion_files = {}
    for stem, group in companions.items():   # in a folder of their own, so OUT stays the reference model alone
        side = _plan(group, shapes, meta)
        side_writer = ShardedWriter(Path(out_dir) / stem, side, max_shard_bytes=max_shard_bytes,
                                    metadata=meta_header)
        largest = max(largest, _write(side_writer, reader, group, side, None))   # never carried: no release has them
        companion_files[stem] = [f"{stem}/{f}" for f in side_writer.close()]
        total_bytes += side_writer.total_bytes
    config = {"format": "baichuan-audio", "component": cfg.kind, "step": step, **layout.reference_config(cfg),
              **({"nonreference": departures} if departures else {}),
              **({"companions": companion_files} if companion_files else {}),
              "bajax": json.loads(cfg.to_json_best_effort())}
    (Path(out_dir) / "config.json").write_text(json.dumps(config, indent=2))
    summary = {"component": cfg.kind, "step": step, "tensors": len(plan), "files": files,
               "companions": companion_files, "merged_adapters": len(adapted),
               "bytes": total_bytes, "largest_tensor_bytes": largest, "seconds": round(time.time() - t0, 2)}
    if log and departures:
        log("warning: exported with --allow-nonreference; the reference code will not build this model:\n  "
            + "\n  ".join(departures))
    if log:
        side = "".join(f" + {stem} ({len(companions[stem])} tensors)" for stem in companion_files)
        log(f"exported {cfg.kind} step {step}: {len(plan)} tensors{side}, {total_bytes / 1e6:.1f} MB in "
            f"{len(files) + sum(map(len, companion_files.values()))} file(s) -> {out_dir}")
    return summary


def _plan(entries, shapes, meta) -> list[tuple]:
    """[(name, torch shape, dtype)] of the entries: a tensor keeps its first source's stored dtype."""
    return [(e.name, e.torch_shape(shapes), meta[e.srcs[0].path][1] if e.srcs else e.rule.to_torch([]).dtype)
            for e in entries]


def _write(writer: ShardedWriter, reader, entries, plan, carried) -> int:
    """Writes the entries' tensors in plan order, one at a time (their sources are per-layer slices read
    straight from TensorStore); returns the largest tensor's bytes."""
    largest = 0
    for e, (_, _, dtype) in zip(entries, plan, strict=True):
        arrays = [reader.read(s.path, s.index) for s in e.srcs]
        t = e.rule.to_torch(arrays)
        if carried is not None:
            t = carried.tensor(e, t, dtype)
        largest = max(largest, t.nbytes)
        writer.write(e.name, t)
        del arrays, t
    return largest

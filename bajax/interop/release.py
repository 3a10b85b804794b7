"""`bajax import-release` / `bajax export-release`: a whole Baichuan-Audio release directory <-> bajax runs.

A release directory (Baichuan-Audio-Base / -Instruct, the audio parts of Baichuan-Omni-1.5) is a Hugging
Face model directory: config.json (the reference OmniConfig), safetensors (sharded with
model.safetensors.index.json, or one model.safetensors) in ONE key space -- model.* / lm_head.* /
audio_head.* (the LM), audio_tokenizer.* (the audio tokenizer), audio_tokenizer.audio_flow_matching_decoder.*
(the flow decoder), keys of parts bajax does not model (model.visual_model.*, ...) -- the text tokenizer
files and the remote code, and the HiFT vocoder's hift.pt (at the top, or under cosy24k_vocoder/ or
third_party/cosy24k_vocoder/ as the Baichuan repositories ship it).

Import makes OUT/{tokenizer, lm, flow[, vocoder]}: each a run directory (bajax/interop/rundir.py) whose
config is the release's config.json mapped field by field (bajax/interop/release_config.py), whose tensors
are read tensor by tensor by the `import-torch` engine (import_torch.import_entries), and which carries
what bajax does not compute with (bajax/interop/release_carry.py). The LM run's `data.text_tokenizer`
points at the release's tokenizer files it carries and its `model.special_ids` are the release's.
Parts bajax does not model are reported (OUT/release.json) and skipped.

Export runs `bajax export` on each component (so a LoRA run is merged like any other export), moves the
shards into OUT under one numbering with one model.safetensors.index.json, writes config.json from the runs'
configs over the carried release config, copies the carried files back, and writes the vocoder as hift.pt.
Host memory stays ~ one tensor (import: one tensor group; export: one tensor), never the model.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from bajax.interop import release_carry, release_config
from bajax.interop.safetensors_io import INDEX, Reader, _header

# Tensors of parts bajax does not model that sit under a prefix an LM component owns.
UNMODELLED = re.compile(r"^model\.(visual_model|visual_bridge_model|video_model|video_bridge_model)\.")
KINDS = ("tokenizer", "lm", "flow")       # import order: the flow config names the tokenizer run
VOCODER_PLACES = ("hift.pt", "cosy24k_vocoder/hift.pt", "third_party/cosy24k_vocoder/hift.pt")
NOT_CARRIED = {"config.json", INDEX}      # written by export itself (weights are never copied as files)


def _component_config(kind: str, values: dict):
    """The defaults of `kind` with the release's model values (dotted keys) applied."""
    from bajax import config

    cfg = config.defaults(kind)
    for key, value in values.items():
        *head, last = key.split(".")
        node = cfg.model
        for k in head:
            node = node[k]
        current = node[last]
        node[last] = type(current)(value) if isinstance(current, (int, float, str, bool)) and not isinstance(
            value, (list, tuple)) else tuple(value) if isinstance(value, list) else value
    return cfg


def _release_files(src: Path) -> list[Path]:
    """Files of the release other than weights and config (tokenizer, generation config, remote code)."""
    return [p for p in sorted(src.iterdir()) if p.is_file() and p.name not in NOT_CARRIED
            and not p.name.endswith((".safetensors", ".bin", ".pt", ".pth"))]


def _special_ids(src: Path, derived, where: str) -> dict[str, int]:
    """Every special-token id: the audio ones from config.json, the others from the tokenizer files, which
    must agree with config.json on the audio ones."""
    from bajax.data.text import HFTokenizer
    from bajax.lm import special_tokens

    tok = HFTokenizer(str(src))
    wrong = {f"audio_config.{special_tokens.RELEASE_FIELDS[n]}": (i, tok.special[n])
             for n, i in derived.special.items() if tok.special[n] != i}
    if wrong:
        raise release_config.ReleaseConfigError(
            f"{where}: special-token ids differ from the release's tokenizer files (field: (config.json, "
            f"tokenizer)): {wrong}; the tokenizer and config.json must come from the same release")
    return {**tok.special, **derived.special}


def _vocoder_source(src: Path) -> Path | None:
    return next((src / p for p in VOCODER_PLACES if (src / p).is_file()), None)


def import_release(src: str, out: str, *, log=print) -> dict:
    """OUT/<component> runs from the release directory SRC; returns the summary written to OUT/release.json."""
    from bajax.interop.export import layout_of
    from bajax.interop.import_torch import _abstract_shapes, check_unknown, import_entries
    from bajax.interop.rundir import write_run

    src_p, out_p = Path(src), Path(out)
    cfg_path = src_p / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{src}: no config.json; a release directory holds the reference OmniConfig "
                                "config.json, the safetensors weights and the tokenizer files")
    release = json.loads(cfg_path.read_text())
    derived = release_config.derive(release, str(cfg_path))
    special = _special_ids(src_p, derived, str(cfg_path))
    reader = Reader(src_p)
    cfgs = {kind: _component_config(kind, derived.models[kind]) for kind in KINDS}
    files_dir = out_p / "lm" / release_carry.DIR / "files"
    cfgs["lm"].model.vocab = "qwen"                      # a Hugging Face vocabulary; the ids are the release's
    cfgs["lm"].model.special_ids.update(special)
    cfgs["lm"].data.text_tokenizer = str(files_dir)
    cfgs["flow"].model.cond_source = "tokenizer"
    cfgs["flow"].model.tokenizer_checkpoint = str(out_p / "tokenizer")
    layouts = {kind: layout_of(kind) for kind in KINDS}
    unmodelled = sorted(n for n in reader if UNMODELLED.match(n) or not any(lay.owns(n) for lay in layouts.values()))
    summary = {"source": str(src_p), "components": {}, "skipped_tensors": _by_prefix(unmodelled),
               "skipped_sections": derived.skipped_sections, "notes": derived.notes, "special_ids": special}
    for kind in KINDS:
        cfg, layout = cfgs[kind], layouts[kind]
        entries = layout.entries(_abstract_shapes(cfg))
        check_unknown(reader, entries, lambda n, lay=layout: lay.owns(n) and not UNMODELLED.match(n), None)
        state = import_entries(reader, entries, cfg, log=log)
        run = write_run(out_p / kind, cfg, state)
        carried = release_carry.save(run, reader, entries, config=release)
        summary["components"][kind] = {"run": run, "tensors": sum(e.name in reader for e in entries),
                                       "carried": sorted(carried)}
        del state
    files_dir.mkdir(parents=True, exist_ok=True)
    for f in _release_files(src_p):
        shutil.copy2(f, files_dir / f.name)
    summary["components"]["lm"]["files"] = [f.name for f in _release_files(src_p)]
    hift = _vocoder_source(src_p)
    if hift is not None:
        summary["components"]["vocoder"] = _import_vocoder(hift, out_p / "vocoder", log=log)
    (out_p / "release.json").write_text(json.dumps(summary, indent=2))
    if log:
        for line in derived.notes:
            log(f"note: {line}")
        for section in derived.skipped_sections:
            log(f"skipped: {section} (enabled in the release; bajax does not model it)")
        if unmodelled:
            log(f"skipped {len(unmodelled)} tensors of parts bajax does not model: "
                + ", ".join(f"{p} ({n})" for p, n in summary["skipped_tensors"].items()))
        log(f"imported {src} -> {', '.join(summary['components'])} under {out}")
    return summary


def _by_prefix(names: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in names:
        p = ".".join(n.split(".")[:2])
        out[p] = out.get(p, 0) + 1
    return out


def _import_vocoder(hift: Path, out: Path, *, log) -> dict:
    """hift.pt (no config in the release: Cosy24kVocoder hard-codes it) -> a vocoder run; the two widths the
    tensors reveal (conv_pre, the F0 predictor) come from their shapes, the rest is the reference's."""
    from bajax.config import defaults
    from bajax.interop.export import layout_of
    from bajax.interop.import_torch import _abstract_shapes, check_unknown, import_entries
    from bajax.interop.rundir import write_run
    from bajax.interop.safetensors_io import open_reader
    from bajax.vocoder.config import reference_model_config

    reader = open_reader(hift)
    cfg = defaults("vocoder")
    cfg.model.update(reference_model_config())
    widths = (("base_channels", "conv_pre.weight_v"), ("f0_cond_channels", "f0_predictor.condnet.0.weight_v"))
    for key, tensor in widths:
        if tensor not in reader:
            raise KeyError(f"{hift}: no tensor {tensor}; not a HiFT generator state dict")
        cfg.model[key] = int(reader.shape(tensor)[0])
    layout = layout_of("vocoder")
    entries = layout.entries(_abstract_shapes(cfg))
    check_unknown(reader, entries, layout.owns, None)
    run = write_run(out, cfg, import_entries(reader, entries, cfg, log=log))
    release_carry.save(run, reader, entries)
    return {"run": run, "tensors": len(entries), "source": str(hift)}


def export_release(*, lm: str, tokenizer: str, flow: str, vocoder: str | None = None, out: str,
                   max_shard_bytes: int | None = None, log=print) -> dict:
    """A release directory OUT from the component runs (see the module docstring); returns a summary."""
    from bajax import runs
    from bajax.interop.export import DEFAULT_SHARD_BYTES, export
    from bajax.lm import special_tokens

    given = {"lm": lm, "tokenizer": tokenizer, "flow": flow}
    cfgs = {}
    for kind, path in given.items():
        cfgs[kind] = runs.read_config(runs.resolve(path, kind).workdir, kind, flag=kind)  # refuses another kind
    carried = {kind: release_carry.Carried.of(runs.resolve(path, kind).workdir) for kind, path in given.items()}
    base = next((c.config() for c in carried.values() if c is not None and c.config() is not None), None)
    release = release_config.build(cfgs, special_tokens.ids_of(cfgs["lm"].model), base)
    out_p = Path(out)
    if out_p.exists() and any(out_p.iterdir()):
        raise FileExistsError(f"--out {out} is not empty; export-release writes a whole directory")
    parts = out_p / ".parts"
    shards: list[Path] = []
    for kind in ("lm", "tokenizer", "flow"):
        s = export(given[kind], str(parts / kind), max_shard_bytes=max_shard_bytes or DEFAULT_SHARD_BYTES, log=None)
        shards += [parts / kind / f for f in s["files"]]
    weight_map, total = {}, 0
    for i, f in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        f.replace(out_p / name)
        header, _ = _header(out_p / name)
        for key, info in header.items():
            if key != "__metadata__":
                weight_map[key] = name
                total += info["data_offsets"][1] - info["data_offsets"][0]
    (out_p / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    (out_p / "config.json").write_text(json.dumps(release, indent=2))
    lm_files = carried["lm"].folder / "files" if carried["lm"] is not None else None
    copied = []
    if lm_files is not None and lm_files.is_dir():
        for f in sorted(lm_files.iterdir()):
            if f.is_file() and f.name not in NOT_CARRIED:
                shutil.copy2(f, out_p / f.name)
                copied.append(f.name)
    summary = {"out": str(out_p), "tensors": len(weight_map), "bytes": total, "shards": len(shards), "files": copied}
    if vocoder:
        summary["vocoder"] = _export_vocoder(vocoder, parts / "vocoder", out_p, export)
    shutil.rmtree(parts)
    if log:
        log(f"exported a release: {len(weight_map)} tensors in {len(shards)} shard(s), {total / 1e6:.1f} MB"
            + (", vocoder hift.pt" if vocoder else "") + f", {len(copied)} carried file(s) -> {out}")
    return summary


def _export_vocoder(run: str, tmp: Path, out: Path, export) -> str:
    """The vocoder as the reference loads it: a torch state dict file (Cosy24kVocoder.from_pretrained)."""
    try:
        import torch
    except ImportError:
        raise ValueError("writing the vocoder's hift.pt needs torch (pip install 'bajax[torch]')") from None
    import numpy as np

    export(run, str(tmp), log=None)
    reader = Reader(tmp)
    state = {}
    for name in reader:
        a = reader.get(name, dtype=None)
        state[name] = (torch.from_numpy(a.view(np.int16)).view(torch.bfloat16) if a.dtype.name == "bfloat16"
                       else torch.from_numpy(np.ascontiguousarray(a)))
    dest = out / "hift.pt"
    torch.save(state, dest)
    return str(dest)

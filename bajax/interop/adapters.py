"""LoRA runs at export: adapters merged into the base kernels, or written alone in PEFT names.

A LoRA run's checkpoint holds `.../kernel` plus `.../lora_a` [in..., r] and `.../lora_b` [r, out...] beside it
(bajax/layers/lora.py). Two ways out:

  merged (`bajax export`)        `MergingReader` hands the layout `kernel + alpha / r * A B` wherever it asks
                                 for an adapted kernel, per layer slice, so every reference rule (W_pack's q|k|v
                                 concatenation, o_proj's [heads, head_dim, embed] flattening) applies unchanged
                                 and the export is plain weights in the reference names (loads with strict=True)
  adapters only (`--adapters-only`)
                                 adapter_model.safetensors + adapter_config.json, PEFT's layout:
                                 base_model.model.<module>.lora_A.weight [r, in], .lora_B.weight [out, r], where
                                 <module> is the reference tensor's name without `.weight`

A reference tensor built from SEVERAL bajax kernels (W_pack = q|k|v, the audio head's in_proj = q|k|v) gets one
adapter of rank k*r whose A stacks the parts' A factors and whose B is block-diagonal (zeros where a part has
no adapter): B A is then exactly the per-part updates concatenated. PEFT scales by lora_alpha / r, so such a
module is listed in `rank_pattern` (k*r) and `alpha_pattern` (k*alpha): the scale stays alpha / r.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from bajax import runs
from bajax.interop import entries as ent
from bajax.interop import rundir
from bajax.layers import lora
from bajax.models import lora as run_lora

PREFIX = "base_model.model."
ADAPTER_FILE = "adapter_model.safetensors"


def adapted_kernels(shapes) -> dict[tuple[str, ...], tuple[tuple[str, ...], tuple[str, ...]]]:
    """{kernel path: (A path, B path)} of every adapted kernel of a checkpoint's leaves."""
    out = {}
    for path in shapes:
        if path and path[-1] == lora.A:
            module = path[:-1]
            if module + (lora.B,) not in shapes or module + ("kernel",) not in shapes:
                raise ValueError(f"checkpoint leaf {'/'.join(path)} has no matching {lora.B} and kernel beside it")
            out[module + ("kernel",)] = (path, module + (lora.B,))
    return out


def adapter_leaves(shapes) -> set[tuple[str, ...]]:
    return {p for pair in adapted_kernels(shapes).values() for p in pair}


def scale_of(cfg, where: str) -> float:
    chosen = run_lora.settings(cfg.train.get("lora"))
    if chosen is None:
        raise ValueError(f"{where}: the checkpoint holds LoRA adapters but its config.json has train.lora.rank=0; "
                         "the adapter scale alpha / rank is unknown")
    return chosen.scale


class MergingReader:
    """A `rundir.LeafReader` whose adapted kernels read back merged: kernel + scale * A B, one slice at a time."""

    def __init__(self, reader, adapted: dict, scale: float):
        self.reader, self.adapted, self.scale = reader, adapted, scale

    def read(self, leaf, index=()):
        kernel = self.reader.read(leaf, index)
        if leaf not in self.adapted:
            return kernel
        a_path, b_path = self.adapted[leaf]
        a, b = self.reader.read(a_path, index), self.reader.read(b_path, index)
        lead = a.ndim + b.ndim - 2 - kernel.ndim               # stacked dims the index left unselected
        if lead == 0:
            return lora.merge_kernel(kernel, a, b, self.scale)
        out = np.empty_like(kernel)
        for i in np.ndindex(*kernel.shape[:lead]):
            out[i] = lora.merge_kernel(kernel[i], a[i], b[i], self.scale)
        return out


def plain_config(cfg):
    """The config of a merged export: the same model without adapters (its weights are plain)."""
    out = cfg.copy_and_resolve_references()
    with out.unlocked():
        out.train.lora.rank = 0
    return out


# -- adapters only, PEFT-style -----------------------------------------------------------------------------

def module_name(tensor: str) -> str:
    """The module a reference tensor belongs to: 'x.W_pack.weight' -> 'x.W_pack'; nn.MultiheadAttention's
    'x.self_attention.in_proj_weight' -> 'x.self_attention' (PEFT adapts the attention module itself)."""
    return tensor.removesuffix(".weight") if tensor.endswith(".weight") else tensor.rsplit(".", 1)[0]


def _linear_parts(entry: ent.Entry) -> list[ent.Rule]:
    rule = entry.rule
    parts = list(rule.parts) if isinstance(rule, ent.Cat) else [rule]
    if not all(isinstance(p, ent.Linear) for p in parts):
        raise ValueError(f"{entry.name}: its bajax kernels carry LoRA adapters but map to the reference through "
                         f"{type(rule).__name__}, which has no PEFT adapter form; export the run merged (without "
                         "--adapters-only), or leave that layer out of train.lora.targets")
    return parts


def peft_pair(entry: ent.Entry, adapted: dict, reader, shapes) -> tuple[np.ndarray, np.ndarray, int]:
    """(lora_A [k r, in], lora_B [out, k r], k) of one reference tensor from its k adapted parts."""
    parts = _linear_parts(entry)
    a_rows, blocks = [], []
    for rule, src in zip(parts, entry.srcs, strict=True):
        rows = rule.shape([shapes[src.path][len(src.index):]])[0]     # this part's output rows in torch
        pair = adapted.get(src.path)
        if pair is None:
            blocks.append((rows, None))
            continue
        a, b = reader.read(pair[0], src.index), reader.read(pair[1], src.index)
        rank = a.shape[-1]
        a_rows.append(a.reshape(-1, rank).T)             # [r, in]
        blocks.append((rows, b.reshape(rank, -1).T))     # [out_part, r]
    k, rank = len(a_rows), a_rows[0].shape[0]
    lora_b = np.zeros((sum(rows for rows, _ in blocks), k * rank), a_rows[0].dtype)
    row, j = 0, 0
    for rows, block in blocks:
        if block is not None:
            lora_b[row:row + rows, j * rank:(j + 1) * rank] = block
            j += 1
        row += rows
    return np.concatenate(a_rows, 0), lora_b, k


def export_adapters(run_dir: str, out_dir: str, *, step: int | None = None, log=print) -> dict:
    """OUT/adapter_model.safetensors + OUT/adapter_config.json (PEFT's file names) of a LoRA run."""
    from bajax.interop.export import layout_of
    from bajax.interop.safetensors_io import ShardedWriter

    t0 = time.time()
    run = runs.resolve(run_dir, "run")
    cfg = runs.read_config(run, flag="run")
    step = runs.pick_step(run, step, flag="run")
    sdir = str(runs.state_dir(run, step, flag="run"))
    shapes = {k: v[0] for k, v in runs.leaf_shapes(sdir).items()}
    adapted = adapted_kernels(shapes)
    if not adapted:
        raise ValueError(f"{run_dir}: step {step} holds no LoRA adapters (train.lora.rank was 0): nothing to write "
                         "with --adapters-only; export it without that flag")
    settings = run_lora.settings(cfg.train.get("lora"))
    if settings is None:
        scale_of(cfg, run_dir)     # raises: adapters without a scale
    entries = [e for e in layout_of(cfg.kind).entries(shapes) if any(s.path in adapted for s in e.srcs)]
    covered = {s.path for e in entries for s in e.srcs}
    missing = sorted("/".join(p) for p in adapted if p not in covered)
    if missing:
        raise ValueError(f"{run_dir}: adapted kernels with no reference tensor: {missing[:5]}")
    reader = rundir.LeafReader(sdir)
    tensors, modules, ranks, alphas = [], [], {}, {}
    for e in entries:
        lora_a, lora_b, k = peft_pair(e, adapted, reader, shapes)
        module = module_name(e.name)
        tensors += [(f"{PREFIX}{module}.lora_A.weight", lora_a), (f"{PREFIX}{module}.lora_B.weight", lora_b)]
        modules.append(module)
        if k > 1:
            ranks[module], alphas[module] = k * settings.rank, k * settings.alpha
    plan = [(name, t.shape, t.dtype) for name, t in tensors]
    writer = ShardedWriter(out_dir, plan, max_shard_bytes=1 << 62, metadata={"bajax_kind": cfg.kind})
    for name, t in tensors:
        writer.write(name, t)
    writer.close()
    # One file, under the name PEFT's `PeftModel.from_pretrained` looks for.
    (Path(out_dir) / "model.safetensors").replace(Path(out_dir) / ADAPTER_FILE)
    files = [ADAPTER_FILE]
    config = {"peft_type": "LORA", "r": settings.rank, "lora_alpha": settings.alpha,
              "lora_dropout": settings.dropout, "target_modules": modules, "rank_pattern": ranks,
              "alpha_pattern": alphas, "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
              "init_lora_weights": True, "modules_to_save": None, "task_type": None,
              "base_model_name_or_path": None,
              "bajax": {"kind": cfg.kind, "step": step, "targets": list(settings.targets),
                        "note": "tensor names follow the reference (Baichuan-Audio) module names that `bajax "
                                "export` writes; rank_pattern/alpha_pattern cover modules that concatenate "
                                "several bajax projections (W_pack = q|k|v)"}}
    (Path(out_dir) / "adapter_config.json").write_text(json.dumps(config, indent=2))
    nbytes = sum(t.nbytes for _, t in tensors)
    summary = {"component": cfg.kind, "step": step, "tensors": len(tensors), "modules": len(modules),
               "files": files, "bytes": nbytes, "seconds": round(time.time() - t0, 2)}
    if log:
        log(f"exported the LoRA adapters of {cfg.kind} step {step}: {len(modules)} modules, {len(tensors)} tensors, "
            f"{nbytes / 1e6:.1f} MB -> {out_dir}")
    return summary

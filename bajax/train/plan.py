"""Sharding and memory plans for a config on a pod slice or GPU cluster, checked by compiling the train step.

No TPU pod is needed: the train step is compiled ahead of time for the slice's device count on fake CPU
devices (`--xla_force_host_platform_device_count`), with `jax.ShapeDtypeStruct` inputs carrying the real
shardings, and XLA's `memory_analysis()` of that program gives per-device buffer sizes. Caveat: these are
CPU-compiled buffers. The CPU backend may keep some bf16 intermediates in fp32 and fuses differently from
the TPU/GPU compilers, so the figures are a close upper estimate, not the accelerator's own plan.

The program compiled is the one the TARGET would run, not the host's (`target_config`, `compile_step`):
the model's plain kernels (`bajax.kernels.use("plain")`, never the CPU-tuned forms), none of the kind's
CPU-only XLA flags (`cpu_compiler_options`), and the attention `model.attention` resolves to on the target
(`auto`: splash on TPU, cudnn on GPU). Those two kernels cannot be compiled on a CPU host (a Pallas TPU
kernel; a cuDNN custom call), so the plan compiles `blockwise` in their place, the pure-JAX flash attention
with the same O(T x block) memory class, and says so in the report; the kernel's own small workspace is
not counted.

The parameter layout (which mesh axes split each parameter) needs no compilation: it follows from the
logical axes, the rules and the mesh shape alone (`param_table`), so it is cheap to check against a golden.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from bajax.train.step import micro_steps

GB = 1e9


@dataclasses.dataclass(frozen=True)
class Accelerator:
    hbm_bytes: float             # memory per device (chip or GPU)
    peak_flops: float            # dense bf16 FLOP/s per device
    devices_per_host: int
    cores_per_device: int = 1    # v4 / v5p slice names count TensorCores; JAX sees one device per chip


ACCELERATORS = {
    "v4": Accelerator(32 * GB, 275e12, 4, cores_per_device=2),
    "v5p": Accelerator(95 * GB, 459e12, 4, cores_per_device=2),
    "v5e": Accelerator(16 * GB, 197e12, 4),
    "v6e": Accelerator(32 * GB, 918e12, 4),
    # GPUs, 8 per host (DGX/HGX); "h100x1" is one GPU. Dense (not 2:4 sparse) bf16 tensor-core peaks and
    # memory from NVIDIA's datasheets: A100 80GB SXM 312 TFLOP/s; H100 SXM5 80 GB HBM3, 989 TFLOP/s (the
    # datasheet's 1,979 is with sparsity); H200 141 GB, same compute; B200 180 GB, 2.25 PFLOP/s. HBM is
    # counted as the marketed 80e9 bytes (the device reports ~81.5e9 usable), so plans err on the safe side.
    "a100": Accelerator(80 * GB, 312e12, 8),   # the 80 GB part
    "h100": Accelerator(80 * GB, 989e12, 8),
    "h200": Accelerator(141 * GB, 989e12, 8),
    "b200": Accelerator(180 * GB, 2250e12, 8),
}


GPU_FAMILIES = ("a100", "h100", "h200", "b200")


@dataclasses.dataclass(frozen=True)
class Topology:
    name: str
    family: str
    devices: int
    hosts: int
    accel: Accelerator

    @property
    def platform(self) -> str:
        """The JAX platform of the target devices: "tpu" or "gpu"."""
        return "gpu" if self.family in GPU_FAMILIES else "tpu"


def parse_topology(name: str) -> Topology:
    """'v5p-256' (TPU slice name: v4/v5p count TensorCores, so 128 chips), 'v6e-256', 'h100x64' (GPUs)."""
    m = re.fullmatch(r"(v4|v5p|v5e|v6e)-(\d+)|(a100|h100|h200|b200)[x-](\d+)", name.strip().lower())
    if not m:
        raise ValueError(f"--topology {name!r}: expected a TPU slice like v5p-256, v5e-256, v6e-256, v4-128 "
                         f"or GPUs like h100x64; known accelerators: {sorted(ACCELERATORS)}")
    family, count = (m.group(1), int(m.group(2))) if m.group(1) else (m.group(3), int(m.group(4)))
    accel = ACCELERATORS[family]
    if count % accel.cores_per_device:
        raise ValueError(f"--topology {name}: {family} slices have {accel.cores_per_device} cores per chip")
    devices = count // accel.cores_per_device
    return Topology(name, family, devices, max(1, math.ceil(devices / accel.devices_per_host)), accel)


def parse_mesh(text: str) -> dict[str, int]:
    """'data=2,fsdp=64,tensor=1' -> {'data': 2, 'fsdp': 64, 'tensor': 1}."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"--mesh {text!r}: write axis=size pairs, e.g. data=2,fsdp=64,tensor=1")
        out[key.strip()] = int(value)
    return out


def resolve_mesh(shape: dict[str, int], devices: int) -> dict[str, int]:
    """Fills the one -1 axis, checks the product (the same rules as bajax.sharding.make_mesh)."""
    from bajax.sharding import MESH_AXES

    unknown = set(shape) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"mesh: unknown axes {sorted(unknown)}; valid axes are {list(MESH_AXES)}")
    sizes = {a: int(shape.get(a, 1)) for a in MESH_AXES}
    fill = [a for a, s in sizes.items() if s == -1]
    known = math.prod(s for s in sizes.values() if s != -1)
    if len(fill) > 1 or (fill and devices % known):
        raise ValueError(f"mesh {sizes} cannot fill {devices} devices")
    if fill:
        sizes[fill[0]] = devices // known
    if math.prod(sizes.values()) != devices:
        raise ValueError(f"mesh {sizes} has {math.prod(sizes.values())} devices; the topology has {devices}")
    return sizes


# -- abstract state and the parameter layout, without devices --------------------------------------------

def abstract_state(cfg):
    """(kind, abstract train state) exactly as the trainer builds them, but only shapes (jax.eval_shape);
    frozen helper models keep their random initialisation (only their shapes matter here)."""
    import jax

    from bajax import models, sharding
    from bajax.train.step import init_state, phases

    kind = models.get(cfg.kind)
    run_phases = phases(kind, cfg, trainable_filter(cfg, kind))
    with sharding.axis_rules(cfg.sharding.rules):
        state = jax.eval_shape(lambda: init_state(kind, cfg.model, cfg.seed, run_phases, lora_cfg=cfg.train.lora))
    return kind, state


def trainable_filter(cfg, kind):
    """The run's trainable parameters as the trainer picks them (a LoRA run: its adapters only)."""
    from bajax.models import lora
    from bajax.train import freeze

    patterns, train_only = freeze.resolve(cfg.train, kind.stages)
    return freeze.trainable_filter(patterns, train_only, adapters_only=lora.enabled(cfg))


class _MeshShape:
    """What `sharding.fit_spec` reads of a mesh (its axis sizes), for plans without devices."""

    def __init__(self, shape: dict[str, int]):
        self.shape = dict(shape)
        self.axis_names = tuple(shape)


def _spec_of(var, rules, mesh_shape: dict[str, int]):
    from bajax import sharding

    spec = sharding.logical_to_spec(sharding.variable_axes(var), rules, tuple(mesh_shape))
    return sharding.fit_spec(spec, var.get_value().shape, _MeshShape(mesh_shape))


def _local_shape(shape, spec, mesh_shape) -> tuple[int, ...]:
    out = []
    for dim, entry in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
        out.append(dim // math.prod(mesh_shape[n] for n in names))
    return tuple(out)


def _spec_str(spec) -> str:
    parts = []
    for entry in spec:
        parts.append("-" if entry is None else entry if isinstance(entry, str) else "+".join(entry))
    return "(" + ", ".join(parts) + ")"


def param_table(state, rules, mesh_shape: dict[str, int]) -> list[dict]:
    """One row per model variable: path, global shape, logical axes, mesh split and per-device shape."""
    from flax import nnx

    from bajax import sharding
    from bajax.train import freeze

    rows = []
    for path, var in nnx.to_flat_state(state["model"]):
        value = var.get_value()
        spec = _spec_of(var, rules, mesh_shape)
        local = _local_shape(value.shape, spec, mesh_shape)
        rows.append({"path": freeze.path_str(path), "shape": list(value.shape),
                     "axes": ["-" if a is None else a for a in sharding.variable_axes(var)],
                     "spec": _spec_str(spec), "local": list(local), "dtype": str(value.dtype),
                     "local_bytes": int(np.prod(local)) * np.dtype(value.dtype).itemsize,
                     "param": isinstance(var, nnx.Param)})
    return rows


def state_bytes_per_device(tree, rules, mesh_shape) -> int:
    """Bytes per device of an abstract state subtree (variables split by their rules, the rest replicated)."""
    import jax
    from flax import nnx

    total = 0
    for leaf in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, nnx.Variable)):
        if isinstance(leaf, nnx.Variable):
            value = leaf.get_value()
            local = _local_shape(value.shape, _spec_of(leaf, rules, mesh_shape), mesh_shape)
        else:
            value, local = leaf, leaf.shape
        total += int(np.prod(local)) * np.dtype(value.dtype).itemsize
    return total


# -- the plan --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Plan:
    config: str
    topology: Topology
    mesh: dict[str, int]
    table: list[dict]
    n_params: int
    n_trainable: int
    params_bytes: int          # per device, the whole model state
    opt_bytes: int             # per device, optimizer moments of the trainable parameters
    grads_bytes: int           # per device, fp32 gradients of the trainable parameters (transient)
    batch_bytes: int           # per device, one global batch's share
    flops_per_step: float
    mfu: float
    compiled: dict | None = None   # memory_analysis figures (bytes) and XLA's flops, when compiled
    notes: tuple[str, ...] = ()    # how the compiled program differs from the target's (target_config)
    dtype: str = ""                # the model's compute dtype
    remat: str = ""
    grad_accum: int = 1
    batch_size: int = 0

    @property
    def hbm(self) -> float:
        return self.topology.accel.hbm_bytes

    @property
    def peak_bytes(self) -> float:
        """Compiled peak when available: arguments + outputs - donated aliases + temporaries. (The CPU
        backend's own `peak_memory_in_bytes` omits temporaries, so it is not used.)"""
        if self.compiled:
            c = self.compiled
            return c["argument"] + c["output"] - c["alias"] + c["temp"]
        return self.params_bytes + self.opt_bytes + self.grads_bytes + self.batch_bytes

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= 0.9 * self.hbm   # 10% for the runtime, fragmentation, collectives' buffers

    def step_seconds(self) -> float:
        return self.flops_per_step / (self.topology.devices * self.topology.accel.peak_flops * self.mfu)

    def knobs(self) -> list[str]:
        """What would shrink the per-device peak, biggest lever first."""
        out = []
        state = self.params_bytes + self.opt_bytes + self.grads_bytes
        acts = self.compiled["temp"] - self.grads_bytes if self.compiled else 0
        if state > 0.3 * self.hbm:
            out.append(f"raise the fsdp degree (--mesh ...,fsdp=N; now {self.mesh['fsdp']}): parameters, "
                       f"optimizer state and gradients ({state / GB:.1f} GB per device) shrink as 1/fsdp")
        if acts > 0.3 * self.hbm or not out:
            if self.remat in ("none", ""):
                out.append("recompute activations in the backward pass: --config.model.remat=full "
                           "(or dots / dots_no_batch to keep matmul outputs)")
            if self.compiled:
                out.append("check the largest arrays above: one that still spans the global batch (or "
                           "sequence) is an activation without a sharding constraint (sharding.constrain)")
            out.append(f"micro-batch: raise --config.train.grad_accum (now {self.grad_accum}); activations "
                       "scale with the micro-batch rows per device")
            if self.mesh.get("tensor", 1) == 1:
                out.append("split heads/mlp/vocab over a tensor axis (--mesh ...,tensor=4) to cut the largest "
                           "activations (logits) per device")
        return out


# Target kernels that cannot be compiled by the CPU host's XLA, and what the plan compiles in their place.
HOST_STANDINS = {"splash": "blockwise", "cudnn": "blockwise"}


def target_config(cfg, topology: Topology):
    """`(cfg', notes)`: `cfg` with `model.attention` pinned to what the target runs (`auto` resolved for the
    topology's platform and the config's sequence length), or to its CPU-compilable stand-in (`HOST_STANDINS`);
    `notes` say what was chosen and why, for the report."""
    cfg = cfg.copy_and_resolve_references()
    m = cfg.get("model")
    if m is None or "attention" not in m:
        return cfg, ()
    from bajax.kernels import attention as attention_kernels

    seq_len = int(cfg.data.seq_len) if "data" in cfg and "seq_len" in cfg.data else None
    target = attention_kernels.resolve(m.attention, seq_len, platform=topology.platform)
    planned = HOST_STANDINS.get(target, target)
    via = f"model.attention={m.attention}" + (f" -> {target} on {topology.platform}" if m.attention != target else "")
    if planned != target:
        note = (f"attention: {via}; {target} cannot be compiled on this CPU host, so the plan compiles "
                f"{planned} (same O(T x block) memory class; {target}'s own workspace is not counted)")
    else:
        note = f"attention: {via} (compiled as the target runs it)"
    m.attention = planned   # an existing key: allowed on a locked ConfigDict
    return cfg, (note,)


def plan(cfg, topology: Topology, mesh_shape: dict[str, int], *, mfu: float = 0.4, config_name: str = "",
         compiled: dict | None = None, notes: tuple[str, ...] = ()) -> Plan:
    """Analytic per-device plan (parameter layout, state sizes, FLOPs); `compiled` adds XLA's figures."""
    import jax
    from flax import nnx

    mesh = resolve_mesh(mesh_shape, topology.devices)
    rules = cfg.sharding.rules
    kind, state = abstract_state(cfg)
    table = param_table(state, rules, mesh)
    trainable, _ = nnx.split_state(state["model"], trainable_filter(cfg, kind), ...)
    count = lambda t: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(t))  # noqa: E731
    rows_per_device = cfg.train.batch_size / (mesh["data"] * mesh["fsdp"])
    batch_bytes = sum(math.prod(b.shape) * b.dtype.itemsize for b in kind.abstract_batch(cfg).values())
    return Plan(
        config=config_name, topology=topology, mesh=mesh, table=table,
        n_params=sum(math.prod(r["shape"]) for r in table if r["param"]), n_trainable=count(trainable),
        params_bytes=state_bytes_per_device(state["model"], rules, mesh),
        opt_bytes=state_bytes_per_device(state["opt"], rules, mesh),
        grads_bytes=state_bytes_per_device(trainable, rules, mesh),   # fp32 like the parameters
        batch_bytes=int(batch_bytes * rows_per_device / cfg.train.batch_size),
        flops_per_step=float(kind.flops_per_step(cfg)), mfu=mfu, compiled=compiled, notes=tuple(notes),
        dtype=str(cfg.model.get("dtype", "")), remat=str(cfg.model.get("remat", "")),
        grad_accum=micro_steps(cfg, mesh["data"] * mesh["fsdp"]), batch_size=int(cfg.train.batch_size))


def compile_step(cfg, mesh_shape: dict[str, int]) -> dict:
    """AOT-compiles the trainer's jitted step for `mesh_shape` on this process's (fake) devices, as the
    target would run it: plain kernels, no CPU compiler options (pass a `target_config` cfg for the
    attention); returns memory_analysis() in bytes per device and XLA's FLOP count. Needs
    jax.device_count() == mesh size."""
    import tempfile
    import time

    import jax
    from jax.sharding import NamedSharding

    from bajax import kernels, sharding
    from bajax.train.trainer import Trainer

    class TargetTrainer(Trainer):
        def compiler_options(self):   # the kind's CPU-only XLA flags are the host's, not the target's
            return None

    cfg = cfg.copy_and_resolve_references()
    for axis, size in mesh_shape.items():
        cfg.mesh[axis] = size
    trainer = TargetTrainer(cfg, tempfile.mkdtemp(prefix="bajax-plan-"))
    with trainer.scope(), kernels.use("plain"):
        fields = trainer.kind.batch_fields
        batch = {k: jax.ShapeDtypeStruct(b.shape, b.dtype, sharding=NamedSharding(
                    trainer.mesh, sharding.logical_to_spec(fields[k].axes, trainer.rules, trainer.mesh.axis_names)))
                 for k, b in trainer.kind.abstract_batch(cfg).items()}
        t0 = time.perf_counter()
        lowered = trainer.compiled_step().lower(trainer.abstract_with_shardings(), batch)
        compiled = lowered.compile()
        seconds = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    largest = largest_arrays(compiled.as_text())
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return {"argument": mem.argument_size_in_bytes, "output": mem.output_size_in_bytes,
            "alias": mem.alias_size_in_bytes, "temp": mem.temp_size_in_bytes,
            "xla_peak": mem.peak_memory_in_bytes, "xla_flops": float((cost or {}).get("flops", 0.0)),
            "compile_seconds": seconds, "largest": largest}


_ITEMSIZE = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "f32": 4, "s32": 4, "u32": 4,
             "f64": 8, "s64": 8}


def largest_arrays(hlo_text: str, n: int = 6) -> list[tuple[str, int]]:
    """The n biggest distinct array shapes of the per-device program: a shape that still holds the GLOBAL
    batch or sequence (e.g. f32[8,1048576,7168]) points at an activation missing a sharding constraint."""
    sizes = {}
    for m in re.finditer(r"\b(pred|[su]8|bf16|f16|s16|[fsu]32|[fs]64)\[([0-9,]*)\]", hlo_text):
        dims = [int(d) for d in m.group(2).split(",") if d]
        sizes[m.group(0)] = math.prod(dims) * _ITEMSIZE[m.group(1)]
    return sorted(sizes.items(), key=lambda kv: -kv[1])[:n]


# -- the report ------------------------------------------------------------------------------------------

def format_table(table: list[dict]) -> str:
    """The parameter layout as fixed-width text (also the golden file format)."""
    cols = [("parameter", lambda r: r["path"]), ("shape", lambda r: "x".join(map(str, r["shape"]))),
            ("logical axes", lambda r: ",".join(r["axes"])), ("mesh split", lambda r: r["spec"]),
            ("per device", lambda r: "x".join(map(str, r["local"])))]
    cells = [[name for name, _ in cols]] + [[f(r) for _, f in cols] for r in table]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def _gb(x: float) -> str:
    return f"{x / GB:8.2f} GB"


def format_report(p: Plan) -> str:
    t, a = p.topology, p.topology.accel
    lines = [
        f"plan: {p.config} on {t.name}: {t.devices} devices ({t.family}, {a.hbm_bytes / GB:.0f} GB each), "
        f"{t.hosts} hosts x {min(t.devices, a.devices_per_host)} devices",
        f"mesh: {', '.join(f'{k}={v}' for k, v in p.mesh.items())}; global batch {p.batch_size} rows, "
        f"grad_accum {p.grad_accum}, remat {p.remat or '-'}, compute dtype {p.dtype or '-'}",
        *p.notes,
        f"parameters: {p.n_params / 1e9:.3f} B ({p.n_trainable / 1e9:.3f} B trainable)",
        "",
        "per-device memory (analytic, from the shardings):",
        f"  parameters (whole model state)   {_gb(p.params_bytes)}",
        f"  optimizer state (Adam moments)   {_gb(p.opt_bytes)}",
        f"  gradients (fp32, transient)      {_gb(p.grads_bytes)}",
        f"  batch                            {_gb(p.batch_bytes)}",
    ]
    if p.compiled:
        c = p.compiled
        acts = max(c["temp"] - p.grads_bytes, 0)
        lines += [
            f"per-device memory (XLA memory_analysis of the compiled step, {c['compile_seconds']:.0f} s to compile):",
            f"  arguments (state + batch)        {_gb(c['argument'])}",
            f"  temporaries                      {_gb(c['temp'])}   (activations + workspace ~{acts / GB:.2f} GB "
            "beyond the gradients)",
            f"  outputs (donated: {c['alias'] / GB:.2f} GB reuse the inputs) {_gb(c['output'])}",
            f"  peak = arguments + outputs - donated + temporaries {_gb(p.peak_bytes)}",
            "  largest arrays: " + ", ".join(f"{name} {size / GB:.2f} GB" for name, size in c.get("largest", [])),
            "  caveat: CPU-compiled buffers (the CPU backend may hold bf16 intermediates in fp32 and fuses "
            "differently from TPU/GPU); read them as an upper estimate",
        ]
    else:
        lines.append(f"  peak (analytic, without activations: run without --no-compile) {_gb(p.peak_bytes)}")
    budget = 0.9 * p.hbm
    verdict = "FITS" if p.fits else "DOES NOT FIT"
    lines += ["", f"{verdict}: peak {p.peak_bytes / GB:.2f} GB of {p.hbm / GB:.0f} GB per device "
              f"({100 * p.peak_bytes / p.hbm:.0f}%; budget 90% = {budget / GB:.1f} GB, headroom "
              f"{(budget - p.peak_bytes) / GB:.1f} GB)"]
    if not p.fits:
        lines += ["knobs that would help:"] + [f"  - {k}" for k in p.knobs()]
    step = p.step_seconds()
    per_dev = p.flops_per_step / t.devices
    lines += [
        "",
        f"compute: {p.flops_per_step:.3e} training FLOPs per step (analytic), {per_dev:.3e} per device",
        f"  at {100 * p.mfu:.0f}% MFU of {a.peak_flops / 1e12:.0f} TFLOP/s per device: {step:.2f} s per step, "
        f"{86400 / step:,.0f} steps per day",
    ]
    if p.compiled and p.compiled.get("xla_flops"):
        lines.append(f"  XLA cost analysis (CPU program, per device): {p.compiled['xla_flops']:.3e} FLOPs; it counts a "
                     "scanned layer stack's loop body once, so it is far below the analytic figure")
    lines += ["", "parameter layout (mesh split per dimension; '-' = replicated):", format_table(p.table)]
    return "\n".join(lines)

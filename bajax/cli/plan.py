"""`bajax plan`: will this config fit that pod slice? Parameter layout, per-device memory, FLOPs, step time.

    bajax plan --config configs/lm/7b.py --topology v5p-256 [--mesh data=1,fsdp=-1,tensor=1] [--mfu 0.4]
    bajax plan --config configs/lm/7b.py --topology v5p-256 --no-compile     # layout and analytic sizes only
    bajax plan --config configs/lm/7b.py --topology h100x1 --config.train.stage= \
        --config.train.lora.rank=64 --config.train.batch_size=1          # a LoRA fine-tune on one 80 GB GPU

Compiling needs as many (fake CPU) devices as the slice has chips, and the device count is fixed when JAX
starts, so this command re-runs itself in a child process with the right XLA_FLAGS (see bajax/train/plan.py).
What is compiled is what the target runs: plain kernels, no CPU compiler flags, and the attention that
`model.attention` picks there (splash on TPU, cudnn on GPU, compiled as `blockwise` on this CPU host; the
report says so).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

_CHILD = "BAJAX_PLAN_DEVICES"   # set in the child: the device count it was started with


def _child_argv(args, overrides) -> list[str]:
    argv = ["plan", "--config", args.config, "--topology", args.topology, "--mfu", str(args.mfu)]
    if args.mesh:
        argv += ["--mesh", args.mesh]
    if args.json:
        argv += ["--json", args.json]
    return argv + [f"--config.{o}" for o in overrides]


def _reexec(args, overrides, devices: int) -> int:
    env = dict(os.environ)
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", ""))
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    env[_CHILD] = str(devices)
    cmd = [sys.executable, "-m", "bajax.cli", *_child_argv(args, overrides)]
    return subprocess.run(cmd, env=env).returncode


def run(args, overrides) -> int:
    from bajax.cli.train import load_config_or_exit
    from bajax.train import plan as plan_lib

    try:
        topology = plan_lib.parse_topology(args.topology)
        mesh_override = plan_lib.parse_mesh(args.mesh or "")
    except ValueError as e:
        print(f"bajax plan: {e}", file=sys.stderr)
        return 2
    compile_now = not args.no_compile
    if compile_now and os.environ.get(_CHILD) != str(topology.devices):
        return _reexec(args, overrides, topology.devices)
    cfg = load_config_or_exit(args, overrides, "plan")
    if cfg is None:
        return 2
    mesh = {**dict(cfg.mesh), **mesh_override}
    try:  # a bad mesh, or a model that cannot be built from this config (e.g. a missing checkpoint)
        mesh = plan_lib.resolve_mesh(mesh, topology.devices)
        cfg, notes = plan_lib.target_config(cfg, topology)   # the attention the target runs (or its stand-in)
        compiled = plan_lib.compile_step(cfg, mesh) if compile_now else None
        result = plan_lib.plan(cfg, topology, mesh, mfu=args.mfu, config_name=args.config, compiled=compiled,
                               notes=notes)
    except (ValueError, FileNotFoundError) as e:
        print(f"bajax plan: {args.config}: {e}", file=sys.stderr)
        return 2
    print(plan_lib.format_report(result), flush=True)
    if args.json:
        summary = {"config": args.config, "topology": topology.name, "devices": topology.devices,
                   "mesh": result.mesh, "params": result.n_params, "params_bytes": result.params_bytes,
                   "opt_bytes": result.opt_bytes, "grads_bytes": result.grads_bytes,
                   "peak_bytes": result.peak_bytes, "hbm_bytes": result.hbm, "fits": result.fits,
                   "flops_per_step": result.flops_per_step, "step_seconds": result.step_seconds(),
                   "mfu": result.mfu, "dtype": result.dtype, "notes": list(result.notes),
                   "compiled": compiled, "table": result.table}
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    return 0 if result.fits else 1


def register(sub) -> None:
    p = sub.add_parser("plan", help="compile the train step for a pod slice: memory, layout, FLOPs, step time",
                       description=__doc__, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    from bajax.cli.train import add_config_args

    add_config_args(p)
    p.add_argument("--topology", required=True, help="v5p-256, v5e-256, v6e-256, v4-128, h100x64, a100x32, ...")
    p.add_argument("--mesh", default="", help="mesh axes overriding the config's, e.g. data=2,fsdp=64,tensor=1")
    p.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation for the step-time estimate")
    p.add_argument("--no-compile", action="store_true",
                   help="skip the AOT compilation: layout and analytic state sizes only (seconds, no fake devices)")
    p.add_argument("--json", default="", help="also write the figures and the layout table to this JSON file")
    p.set_defaults(func=run)

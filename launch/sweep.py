"""One training job per member of a sweep, on this machine, a TPU pod or a SLURM cluster.

    python launch/sweep.py configs/sweeps/rvq_layers.py --root gs://BUCKET/sweeps/rvq [--launcher local]
    python launch/sweep.py SWEEP --root /shared/sweeps/x --launcher slurm [--dry-run] [-- sbatch options]
    python launch/sweep.py SWEEP --root gs://B/x --launcher tpu [--dry-run] -- --tpu NAME --zone ZONE

A sweep file is a Python module with
    CONFIG = "configs/tokenizer/base.py"          # the config every member starts from (--config overrides)
    def get_sweep() -> list[tuple[str, list[str]]]: # (member name, config overrides "a.b=value")
Each member trains in ROOT/NAME with `--config.a.b=value` overrides (`{workdir}` in a value becomes ROOT),
so re-running the sweep resumes every member where it stopped. Launchers: local runs the members one after
another here; tpu runs them one after another on one pod (launch/tpu_pod.sh); slurm submits one job per
member (launch/gpu_slurm.sbatch).
--dry-run prints the exact commands.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from bajax.sweep import expand, load_sweep

HERE = Path(__file__).resolve().parent


def member_command(launcher: str, config: str, workdir: str, overrides: list[str], extra: list[str],
                   python: str = sys.executable) -> list[str]:
    """The exact command that trains one member."""
    flags = [f"--config.{o}" for o in overrides]
    if launcher == "local":
        return [python, "-m", "bajax.cli", "train", "--config", config, "--workdir", workdir, *flags, *extra]
    if launcher == "tpu":
        return ["bash", str(HERE / "tpu_pod.sh"), *extra, "--config", config, "--workdir", workdir, "--", *flags]
    if launcher == "slurm":
        name = Path(workdir).name
        return ["sbatch", f"--job-name=bajax-{name}", *extra, str(HERE / "gpu_slurm.sbatch"), config, workdir,
                *flags]
    raise ValueError(f"launcher {launcher!r}: choose local, tpu or slurm")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="a configs/sweeps/*.py file")
    parser.add_argument("--root", required=True, help="parent of the members' workdirs (ROOT/NAME)")
    parser.add_argument("--config", default=None, help="config to sweep (default: the sweep file's CONFIG)")
    parser.add_argument("--launcher", choices=("local", "tpu", "slurm"), default="local")
    parser.add_argument("--only", default="", help="comma-separated member names to run")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    try:
        sweep = load_sweep(args.sweep)
    except ValueError as e:
        print(f"sweep: {e}", file=sys.stderr)
        return 2
    members = sweep.members
    config = args.config or sweep.config
    if not config:
        print(f"sweep: {args.sweep} sets no CONFIG; pass --config", file=sys.stderr)
        return 2
    if not Path(config.partition(":")[0]).is_file() and not args.dry_run:
        print(f"sweep: config {config!r} not found", file=sys.stderr)
        return 2
    only = set(filter(None, args.only.split(",")))
    unknown = only - {n for n, _ in members}
    if unknown:
        print(f"sweep: --only names {sorted(unknown)} are not members: {[n for n, _ in members]}", file=sys.stderr)
        return 2
    root = args.root.rstrip("/")
    print(f"# sweep {args.sweep}: {len(members)} members of {config} under {root}/, launcher {args.launcher}")
    for name, overrides in members:
        if only and name not in only:
            continue
        # `{workdir}` in an override is the sweep root (as in `bajax sweep`): a member may start from another's
        # checkpoint, e.g. train.init_from={workdir}/stage1/checkpoints.
        overrides = expand(overrides, root)
        cmd = member_command(args.launcher, config, f"{root}/{name}", overrides, extra)
        print(shlex.join(cmd), flush=True)
        if not args.dry_run:
            code = subprocess.run(cmd).returncode
            if code:
                print(f"sweep: member {name} failed with exit code {code}", file=sys.stderr)
                return code
    return 0


if __name__ == "__main__":
    sys.exit(main())

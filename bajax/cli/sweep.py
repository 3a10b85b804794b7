"""`bajax sweep SWEEP --workdir DIR`: train a sweep's members, then tabulate and plot their final metrics.

The sweep file format and the work are in bajax/sweep.py. `--print-launch` prints one `bajax train` command
per member and runs nothing, for clusters (launch/sweep.py wraps the same commands in sbatch or a TPU-pod
launcher). `--config.a.b=v` overrides apply to every member.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from bajax import config_files
from bajax import sweep as sweep_lib


def run(args, overrides) -> int:
    sweep = sweep_lib.load_sweep(config_files.resolve(args.sweep))
    config = args.config or sweep.config
    config = config_files.resolve(config) if config else config
    only = tuple(n for n in args.only.split(",") if n)
    if args.print_launch:
        for name, member_overrides in sweep.members:
            if not only or name in only:
                cmd = sweep_lib.train_command(config, str(Path(args.workdir) / name),
                                              list(overrides) + sweep_lib.expand(member_overrides, args.workdir))
                print(shlex.join(cmd))
        return 0
    sweep_lib.run_members(sweep, args.workdir, config=config, common=tuple(overrides), only=only)
    rows = sweep_lib.collect(sweep, args.workdir)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    print(sweep_lib.markdown_table(rows, columns))
    print(f"results: {Path(args.workdir) / 'results.csv'}, results.md, results.png")
    return 0


def register(sub) -> None:
    p = sub.add_parser("sweep", help="run an ablation sweep's members and tabulate their final metrics",
                       description=sweep_lib.__doc__.split("\n\n")[0])
    p.add_argument("sweep", help="a configs/sweeps/*.py file")
    p.add_argument("--workdir", required=True, help="parent of the members' work directories (DIR/NAME)")
    p.add_argument("--config", default=None, help="config to sweep (default: the sweep file's CONFIG)")
    p.add_argument("--only", default="", help="comma-separated member names to run")
    p.add_argument("--print-launch", action="store_true",
                   help="print one `bajax train` command per member and run nothing")
    p.set_defaults(func=run, accepts_overrides=True)

"""Ablation sweeps: a grid of config overrides run as one member each, then one table and one plot.

A sweep file (`configs/sweeps/*.py`) is a module with
    CONFIG = "configs/tokenizer/tiny.py"             # the config every member starts from
    METRICS = ("eval_mel_mae", ...)                  # optional: metrics to tabulate (default: every final one)
    def get_sweep() -> [(name, ["a.b=value", ...])]  # one entry per member

`bajax sweep SWEEP --workdir DIR` trains the members one after another in DIR/NAME (a finished member is
skipped, an interrupted one resumes; `{workdir}` in an override is replaced by DIR, so a member can start
from an earlier member's checkpoint, e.g. `train.init_from={workdir}/stage1/checkpoints`), then writes
DIR/results.csv, DIR/results.md and DIR/results.png from each member's last logged metrics.
`--print-launch` prints one `bajax train` command per member and runs nothing, for clusters
(launch/sweep.py wraps the same commands in sbatch or a TPU-pod launcher).
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import math
import re
from pathlib import Path

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]*$")


@dataclasses.dataclass(frozen=True)
class Sweep:
    path: str
    config: str | None
    members: tuple[tuple[str, tuple[str, ...]], ...]
    metrics: tuple[str, ...] = ()


def load_sweep(path: str) -> Sweep:
    """Reads a sweep file; a ValueError names what is wrong and how to write it."""
    if not Path(path).is_file():
        raise ValueError(f"sweep file {path!r} not found (e.g. configs/sweeps/rvq_layers.py)")
    spec = importlib.util.spec_from_file_location(f"_bajax_sweep_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_sweep"):
        raise ValueError(f"{path} has no get_sweep() returning [(name, ['a.b=value', ...]), ...]")
    members, seen = [], set()
    for name, overrides in module.get_sweep():
        if not NAME_RE.match(name) or name in seen:
            raise ValueError(f"{path}: member name {name!r} must be unique and a plain file name")
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ValueError(f"{path}: member {name!r} has overrides without '=': {bad} (write 'a.b=value')")
        seen.add(name)
        members.append((name, tuple(o.removeprefix("--config.") for o in overrides)))
    if not members:
        raise ValueError(f"{path}: get_sweep() returned no members")
    return Sweep(path=path, config=getattr(module, "CONFIG", None), members=tuple(members),
                 metrics=tuple(getattr(module, "METRICS", ())))


def expand(overrides, sweep_dir: str) -> list[str]:
    """Overrides with `{workdir}` replaced by the sweep's directory."""
    return [o.replace("{workdir}", str(sweep_dir)) for o in overrides]


def train_command(config: str, workdir: str, overrides) -> list[str]:
    return ["bajax", "train", "--config", config, "--workdir", workdir, *[f"--config.{o}" for o in overrides]]


def final_metrics(workdir: Path) -> dict[str, float]:
    """The last value of every metric in a member's metrics.jsonl (eval metrics come from the last eval)."""
    last: dict[str, float] = {}
    path = workdir / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                last.update(json.loads(line))
    return last


def run_members(sweep: Sweep, workdir: str, *, config: str | None = None, common: tuple[str, ...] = (),
                only: tuple[str, ...] = (), quiet: bool = False) -> None:
    """Trains every member in turn; each `train` resumes or returns at once when already finished."""
    from bajax.config import load
    from bajax.train.trainer import train

    config = config or sweep.config
    if not config:
        raise ValueError(f"{sweep.path} sets no CONFIG; pass --config")
    for name, overrides in sweep.members:
        if only and name not in only:
            continue
        cfg = load(config, list(common) + expand(overrides, workdir))
        member_dir = Path(workdir) / name
        done = final_metrics(member_dir).get("step", 0)
        if done >= cfg.train.steps:
            print(f"[sweep] {name}: finished earlier (step {int(done)}), skipped", flush=True)
            continue
        print(f"[sweep] {name}: {' '.join(overrides) or '(defaults)'}", flush=True)
        train(cfg, str(member_dir), quiet=quiet)


def collect(sweep: Sweep, workdir: str) -> list[dict]:
    """One row per member: its name, overrides and final metrics; writes results.csv / .md / .png."""
    rows = []
    for name, overrides in sweep.members:
        metrics = final_metrics(Path(workdir) / name)
        keys = sweep.metrics or tuple(k for k in metrics if k != "step")
        rows.append({"member": name, "overrides": " ".join(overrides), "step": metrics.get("step"),
                     **{k: metrics.get(k) for k in keys}})
    out = Path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    (out / "results.md").write_text(markdown_table(rows, columns))
    plot(rows, [c for c in columns if c not in ("member", "overrides", "step")], out / "results.png")
    return rows


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return "" if v is None else str(v)


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], metrics: list[str], path: Path) -> None:
    """One panel per metric (at most 6), members on the x axis in sweep order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in metrics if any(isinstance(r.get(m), (int, float)) for r in rows)][:6]
    if not metrics:
        return
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2), squeeze=False)
    names = [r["member"] for r in rows]
    for ax, metric in zip(axes[0], metrics):
        values = [r.get(metric) if isinstance(r.get(metric), (int, float)) else float("nan") for r in rows]
        ax.plot(names, values, marker="o")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""What every `bajax eval` command writes into its --out directory:

  results.json     the means with 95% confidence intervals (and corpus-level rates), row counts and failures,
                   the models (run directory and step), seeds, the recogniser, package versions and the exact
                   command. No wall-clock time or date is in it: the same command gives the same file.
  utterances.csv   one line per row (utterance, or utterance x RVQ depth), error rows included
  results.md       the same summary as a table, with the failures listed and the timing of this run
  results.png      each metric's mean and 95% CI (per group when there are groups, e.g. RVQ depth)
"""

from __future__ import annotations

import contextlib
import csv
import importlib.metadata
import io
import json
import math
import platform
import shlex
import sys

from etils import epath

# The packages whose versions can change a number in results.json.
PACKAGES = ("bajax", "jax", "jaxlib", "flax", "numpy", "scipy", "soundfile", "pesq", "pystoi", "speechmos",
            "onnxruntime", "resemblyzer", "torch", "pocketsphinx", "jiwer", "whisper-normalizer", "transformers")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


def command_line(argv: list[str] | None = None) -> str:
    return shlex.join(["bajax", *(sys.argv[1:] if argv is None else argv)])


def _clean(value):
    """JSON-safe: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write(out: str, results: dict, rows: list[dict], *, seconds: float, metrics: tuple[str, ...]) -> dict:
    """Writes the four files into `out`; returns {name: path}."""
    root = epath.Path(out)
    root.mkdir(parents=True, exist_ok=True)
    paths = {name: root / name for name in ("results.json", "utterances.csv", "results.md", "results.png")}
    paths["results.json"].write_text(json.dumps(_clean(results), indent=2, ensure_ascii=False) + "\n")
    paths["utterances.csv"].write_text(_csv(rows))
    paths["results.md"].write_text(markdown(results, seconds=seconds))
    paths["results.png"].write_bytes(plot(results, metrics))
    return {k: str(v) for k, v in paths.items()}


def _csv(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()})
    return buf.getvalue()


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.4g}" if isinstance(x, float) else str(x)


def _table(summary: dict) -> list[str]:
    lines = ["| metric | mean | 95% CI | n |", "|---|---|---|---|"]
    for name, s in summary.items():
        ci = "-" if not s.get("ci95") else f"[{s['ci95'][0]:.4g}, {s['ci95'][1]:.4g}]"
        lines.append(f"| {name} | {_fmt(s.get('mean'))} | {ci} | {s.get('n', '-')} |")
    return lines


def markdown(results: dict, *, seconds: float) -> str:
    rows = results["rows"]
    lines = [f"# bajax eval {results['task']}", "", f"`{results['command']}`", ""]
    lines += [f"- {k}: {v}" for k, v in results["models"].items()]
    if results.get("recognizer"):
        lines.append(f"- recogniser: {results['recognizer']}")
    lines += [f"- manifest: {results['manifest']} (split {results['split']})",
              f"- rows: {rows['total']} asked, {rows['scored']} scored, {rows['failed']} failed"
              + (f" ({', '.join(f'{k}: {v}' for k, v in rows['failures'].items())})" if rows["failures"] else "")
              + (f"; {rows['resampled']} resampled to {results['protocol']['sample_rate']} Hz"
                 if rows["resampled"] else ""),
              f"- wall time of this run: {seconds:.1f} s", ""]
    if results.get("groups"):
        for group, summary in results["groups"].items():
            lines += [f"## {results['group_by']} = {group}", "", *_table(summary), ""]
    else:
        lines += ["## Means over utterances", "", *_table(results["metrics"]), ""]
    if results.get("corpus"):
        lines += ["## Corpus-level rates", ""]
        lines += [f"- {k}: {_fmt(v)}" for k, v in results["corpus"].items()] + [""]
    if results.get("errors"):
        lines += ["## Failed rows", ""] + [f"- `{e['id']}` ({e['reason']}): {e['error']}" for e in results["errors"]]
        lines.append("")
    return "\n".join(lines)


def plot(results: dict, metrics: tuple[str, ...]) -> bytes:
    """PNG bytes: one panel per metric, the mean with its 95% CI per group (or the single mean)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = results.get("groups") or {"all": results["metrics"]}
    names = [m for m in metrics if any(g.get(m, {}).get("mean") is not None for g in groups.values())]
    fig = Figure(figsize=(3.2 * max(len(names), 1), 3.0), dpi=100)
    FigureCanvasAgg(fig)
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        labels, means, errs = [], [], [[], []]
        for label, summary in groups.items():
            s = summary.get(name, {})
            if s.get("mean") is None:
                continue
            labels.append(label)
            means.append(s["mean"])
            lo, hi = s["ci95"] or (s["mean"], s["mean"])
            errs[0].append(s["mean"] - lo)
            errs[1].append(hi - s["mean"])
        ordered = all(label.isdigit() for label in labels)    # RVQ depths: a line; systems: points only
        ax.errorbar(range(len(means)), means, yerr=errs, fmt="o-" if ordered else "o", capsize=4)
        ax.set_xticks(range(len(labels)), labels)
        ax.set_title(name)
        if results.get("group_by"):
            ax.set_xlabel(results["group_by"])
    if not names:
        fig.add_subplot(1, 1, 1).text(0.5, 0.5, "no metric could be computed", ha="center", va="center")
    fig.suptitle(f"bajax eval {results['task']} (mean, 95% CI)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()

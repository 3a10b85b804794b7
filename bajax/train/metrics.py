"""Metrics to the console, `WORKDIR/metrics.jsonl` and TensorBoard, from process 0 only.

Timing: at a logged step the writer waits for that step's outputs (the clock), so `step_time` is the wall
time of the train steps since the previous logged step divided by their number, minus what the trainer
marks as not training (`excluded`: evaluation, checkpoint saves), which is logged as `eval_time` and
`save_time` instead. Throughput and MFU follow from that time, so MFU cannot count a save or an
evaluation as a fast step. The values are converted to Python numbers one logged step later.
"""

from __future__ import annotations

import contextlib
import json
import math
import time

import jax
import numpy as np
from etils import epath

REWRITE_EVERY_S = 30.0     # object stores (gs://) cannot append: the file is rewritten at most this often


class MetricsWriter:
    """Times logged step N when it is added and writes it when step N+log_every is logged (or at `flush`).

    The first interval includes compilation and is not timed."""

    def __init__(self, workdir: str, *, tensorboard: bool = True, enabled: bool | None = None, echo: bool = True,
                 flops_per_step: float = 0.0, peak_flops: float = 0.0, unit: str = "tokens",
                 append: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.echo = echo  # print a console line per logged step (files are written either way)
        self.path = epath.Path(workdir) / "metrics.jsonl"
        # Local files are appended line by line. Object stores (gs://) have no append: there the whole file
        # (earlier runs' lines included, so a resumed run keeps its history) is rewritten now and then.
        self.append = "://" not in str(workdir) if append is None else append
        self._lines: list[str] = []
        self._rewritten = time.perf_counter()
        self.flops_per_step, self.peak_flops, self.unit = flops_per_step, peak_flops, unit
        self._tb = None
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.append and self.path.exists():
                self._lines = self.path.read_text().splitlines(keepends=True)
            if tensorboard:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(str(epath.Path(workdir) / "tensorboard"))
        self._pending: tuple[int, dict, dict] | None = None
        self._last_sync: tuple[int, float, float, float] | None = None  # (step, wall time, units, FLOPs)
        self._excluded: dict[str, float] = {}                     # not-training seconds since the last sync
        self.records: list[dict] = []

    def drop_after(self, step: int) -> int:
        """On resume from `step` (0: a start with no checkpoint): the rows of later steps (logged before a
        crash, now re-run) are dropped, so every step appears once, and so is a line torn by a kill mid-write.
        The file is rewritten whole (object stores cannot truncate); returns how many lines went."""
        if not self.enabled or not self.path.exists():
            return 0
        lines = self.path.read_text().splitlines(keepends=True)
        keep = [line for line, at in zip(lines, map(_step_of, lines)) if at is not None and at <= step]
        if len(keep) != len(lines):
            self.path.write_text("".join(keep))
        if not self.append:
            self._lines = keep
        return len(lines) - len(keep)

    @contextlib.contextmanager
    def excluded(self, name: str, wait_for=None):
        """Times the block as `name` (e.g. 'save_time'), not as training: the train steps dispatched before
        it are waited for first (`wait_for`: their outputs), so their time stays training time."""
        if wait_for is not None:
            jax.block_until_ready(wait_for)
        start = time.perf_counter()
        try:
            yield
        finally:
            self._excluded[name] = self._excluded.get(name, 0.0) + time.perf_counter() - start

    def add(self, step: int, device_metrics: dict, cumulative_units: float,
            cumulative_flops: float | None = None) -> None:
        """Waits for step's outputs, times the steps since the previous logged one, queues step's metrics
        and writes the previously queued step's. With `cumulative_flops` (the useful FLOPs of every step so
        far) MFU counts those; without, `flops_per_step` per step."""
        jax.block_until_ready(device_metrics)
        now = time.perf_counter()
        timing = dict(self._excluded)
        if self._last_sync is not None and step > self._last_sync[0]:
            last_step, last_time, last_units, last_flops = self._last_sync
            seconds = max(now - last_time - sum(self._excluded.values()), 1e-9)
            dt = seconds / (step - last_step)
            timing["step_time"] = dt
            timing[f"{self.unit}_per_sec"] = (cumulative_units - last_units) / seconds
            if self.peak_flops > 0:
                flops = (self.flops_per_step * (step - last_step) if cumulative_flops is None
                         else cumulative_flops - last_flops)
                timing["mfu"] = flops / seconds / self.peak_flops
        self._last_sync = (step, now, cumulative_units, cumulative_flops or 0.0)
        self._excluded = {}
        previous, self._pending = self._pending, (step, device_metrics, timing)
        if previous is not None:
            self._write(*previous)

    def flush(self) -> None:
        if self._pending is not None:
            self._write(*self._pending)
            self._pending = None
        if self.enabled and not self.append:
            self._rewrite()
        if self._tb is not None:
            self._tb.flush()

    def _write(self, step: int, device_metrics: dict, timing: dict) -> None:
        values = {k: float(np.asarray(v)) for k, v in jax.device_get(device_metrics).items()}
        values.update(timing)
        now = time.perf_counter()
        record = {"step": step, **values}
        self.records.append(record)
        if not self.enabled:
            return
        line = json.dumps(record) + "\n"
        if self.append:
            with self.path.open("a") as f:
                f.write(line)
        else:
            self._lines.append(line)
            if now - self._rewritten > REWRITE_EVERY_S:
                self._rewrite()
        if self._tb is not None:
            for k, v in values.items():
                if math.isfinite(v):
                    self._tb.add_scalar(k, v, step)
        if self.echo:
            print(format_line(record), flush=True)

    def _rewrite(self) -> None:
        self.path.write_text("".join(self._lines))
        self._rewritten = time.perf_counter()

    def close(self) -> None:
        self.flush()
        if self._tb is not None:
            self._tb.close()


def _step_of(line: str) -> int | None:
    """The step of a metrics.jsonl line; None for a blank or torn (half-written) line."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


CONSOLE_KEYS = ("loss", "text_loss", "audio_loss", "mel_loss", "cfm_loss", "lr", "grad_norm", "step_time",
                "tokens_per_sec", "mfu")


def format_line(record: dict) -> str:
    parts = [f"step {record['step']:>6d}"]
    for key in CONSOLE_KEYS:
        if key in record:
            v = record[key]
            parts.append(f"{key} {v:.3e}" if key == "lr" else f"{key} {v:.4g}")
    return " | ".join(parts)


def read_jsonl(path) -> list[dict]:
    p = epath.Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]

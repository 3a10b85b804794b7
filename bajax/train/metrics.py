"""Metrics to the console, `WORKDIR/metrics.jsonl` and TensorBoard, from process 0 only.

The trainer hands over the device arrays of step N while step N+1 is already dispatched, and this writer
only converts them to Python numbers then, so the host never waits for the device (`write_late`).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import jax
import numpy as np


class MetricsWriter:
    def __init__(self, workdir: str, *, tensorboard: bool = True, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.path = Path(workdir) / "metrics.jsonl"
        self._tb = None
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(str(Path(workdir) / "tensorboard"))
        self._pending: tuple[int, dict, dict] | None = None

    def write_late(self, step: int, device_metrics: dict, host_metrics: dict) -> None:
        """Queues step's metrics and writes the previously queued ones (which are ready by now)."""
        previous, self._pending = self._pending, (step, device_metrics, host_metrics)
        if previous is not None:
            self.write(*previous)

    def flush(self) -> None:
        if self._pending is not None:
            self.write(*self._pending)
            self._pending = None
        if self._tb is not None:
            self._tb.flush()

    def write(self, step: int, device_metrics: dict, host_metrics: dict) -> dict:
        values = {k: float(np.asarray(v)) for k, v in jax.device_get(device_metrics).items()}
        values.update(host_metrics)
        record = {"step": step, **values}
        if not self.enabled:
            return record
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)
        print(format_line(record), flush=True)
        return record

    def close(self) -> None:
        self.flush()
        if self._tb is not None:
            self._tb.close()


CONSOLE_KEYS = ("loss", "text_loss", "audio_loss", "mel_loss", "cfm_loss", "lr", "grad_norm", "step_time",
                "tokens_per_sec", "mfu")


def format_line(record: dict) -> str:
    parts = [f"step {record['step']:>6d}"]
    for key in CONSOLE_KEYS:
        if key in record:
            v = record[key]
            parts.append(f"{key} {v:.3e}" if key == "lr" else f"{key} {v:.4g}")
    return " | ".join(parts)


def read_jsonl(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


class StepTimer:
    """Wall time between consecutive step boundaries (dispatch-to-dispatch, which equals device time in a
    steady state because dispatch blocks once the device queue is full)."""

    def __init__(self):
        self._last = None

    def lap(self) -> float:
        now = time.perf_counter()
        dt = 0.0 if self._last is None else now - self._last
        self._last = now
        return dt

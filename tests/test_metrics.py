"""metrics.jsonl: appended locally; on object stores (no append) rewritten whole, keeping earlier runs' lines;
step_time counts train steps only."""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from bajax.train.metrics import MetricsWriter


def log(writer, steps):
    for step in steps:
        writer.add(step, {"loss": jnp.float32(step / 10)}, cumulative_units=100.0 * step)
    writer.close()


def steps_in(path):
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_local_append_keeps_every_step_across_runs(tmp_path):
    log(MetricsWriter(str(tmp_path), tensorboard=False, enabled=True, echo=False), [1, 2, 3])
    log(MetricsWriter(str(tmp_path), tensorboard=False, enabled=True, echo=False), [4, 5])   # a resumed run
    assert steps_in(tmp_path / "metrics.jsonl") == [1, 2, 3, 4, 5]


def test_rewrite_mode_keeps_history_and_writes_on_close(tmp_path):
    log(MetricsWriter(str(tmp_path), tensorboard=False, enabled=True, echo=False, append=False), [1, 2])
    writer = MetricsWriter(str(tmp_path), tensorboard=False, enabled=True, echo=False, append=False)
    writer.add(3, {"loss": jnp.float32(0.3)}, 300.0)
    writer.add(4, {"loss": jnp.float32(0.4)}, 400.0)
    assert steps_in(tmp_path / "metrics.jsonl") == [1, 2]      # not rewritten yet (at most every 30 s)
    writer.close()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert records[-1]["loss"] == jnp.float32(0.4) and "step_time" in records[-1]


@pytest.mark.slow
def test_step_time_excludes_saves_and_evaluation(tmp_path):
    """A tiny run saving every 4 steps and evaluating every 6: each window's step_time is train steps only
    (within 2x of the run's median), saves and evaluations are logged as save_time / eval_time, MFU <= 1.
    Windows of 3 steps, so a burst of load from a neighbouring test process weighs less on one window."""
    from bajax.config import load
    from bajax.train.trainer import train

    root = Path(__file__).resolve().parents[1]
    cfg = load(str(root / "configs" / "lm" / "tiny.py"),
               ["data.seq_len=128", "metrics.log_every=3", "metrics.tensorboard=false", "train.steps=24",
                "checkpoint.every=4", "train.eval_every=6", "train.eval_batches=1"])
    rows = train(cfg, str(tmp_path), quiet=True).metrics
    timed = [r for r in rows if "step_time" in r]
    assert [r["step"] for r in rows] == list(range(3, 25, 3)) and len(timed) == len(rows) - 1
    median = float(np.median([r["step_time"] for r in timed]))
    assert all(median / 2 <= r["step_time"] <= 2 * median for r in timed), [r["step_time"] for r in timed]
    assert all(0 < r["mfu"] <= 1 for r in timed)
    # A save runs after its step is logged, so its time shows in the next logged row: 4 -> 6, 8 -> 9,
    # 12 -> 15, 16 -> 18, 20 -> 21 (24's is after the last row). An evaluation runs before its row is logged.
    assert [r["step"] for r in rows if "save_time" in r] == [6, 9, 15, 18, 21]
    assert [r["step"] for r in rows if "eval_time" in r] == [6, 12, 18, 24]


def test_mfu_counts_the_useful_flops_of_the_steps_between_logs(tmp_path, monkeypatch):
    """With cumulative useful FLOPs the MFU is (FLOPs since the last log) / seconds / peak, not the constant
    per-step figure; the LM's useful FLOPs count real tokens and the audio head at audio-target positions."""
    import time

    from bajax import config as config_lib
    from bajax.lm import flops as lm_flops
    from bajax.lm.batch import empty
    from bajax.models import lm

    now = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])
    w = MetricsWriter(str(tmp_path), tensorboard=False, echo=False, flops_per_step=1e9, peak_flops=1e8)
    w.add(1, {"loss": jnp.float32(1.0)}, 10.0, 0.0)
    now[0] = 10.0
    w.add(3, {"loss": jnp.float32(1.0)}, 30.0, 4e8)          # 4e8 FLOPs in 10 s at a 1e8 peak: MFU 0.4
    w.close()
    assert [r.get("mfu") for r in w.records] == [None, pytest.approx(0.4)]

    cfg = config_lib.load("configs/lm/tiny.py", ["data.seq_len=16"])
    batch = empty(2, 16)
    batch["segment_ids"][0, :12] = 1                           # 12 + 9 real tokens, 5 of them with audio
    batch["segment_ids"][1, :9] = 1
    batch["audio_weights"][0, 2:6, 0] = 1
    batch["audio_weights"][1, 0, 3] = 1
    batch["audio_weights"][1, 12, :] = 1                       # padding: not counted
    per_token = lm_flops.train_flops_per_token(cfg.model, 16, audio_fraction=0.0)["total"]
    head = 6.0 * lm_flops.audio_head_matmul_macs(cfg.model)
    assert lm.useful_flops(cfg, batch) == pytest.approx(21 * per_token + 5 * head)

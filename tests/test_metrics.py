"""metrics.jsonl: appended locally; on object stores (no append) rewritten whole, keeping earlier runs' lines."""

import json

import jax.numpy as jnp

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

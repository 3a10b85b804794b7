"""Multi-host on one machine, and preemption: real `bajax train` subprocesses.

Data and the comparison: every process keeps the records i = process_index (mod process_count) of the
same seeded shuffle and packs its own rows, and the global batch is process 0's rows then process 1's. A
1-process run packs all records into its rows, so its batches differ and cannot be compared. The
1-process reference therefore builds both shards itself (`make_dataset(cfg, p, 2)` for p = 0, 1) and
concatenates their rows in process order: the same global batch, on one process and a different mesh.

Every JAX computation of these tests runs in a child process (`child_env`), the pytest process runs none.
"""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bajax import sharding
from bajax.config import load
from bajax.train.checkpoint import Checkpointer
from bajax.train.metrics import read_jsonl
from bajax.train.trainer import Trainer, train

pytestmark = pytest.mark.slow  # end to end / several processes: minutes each

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "lm" / "tiny.py")
# train.eval_every=0 by default here; the 2-process LM test turns evaluation on.
FAST = ["data.seq_len=128", "metrics.log_every=1", "metrics.tensorboard=false", "optim.warmup_steps=2",
        "checkpoint.every=2", "train.eval_every=0"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(devices: int) -> dict:
    """Environment of a child JAX process with `devices` fake CPU devices. Every JAX run of these tests is a
    child with a long collective timeout: on a loaded 2-core machine a fake device's thread can arrive at a
    collective later than XLA's default 40 s, which aborts the whole process."""
    cache = os.environ["BAJAX_TEST_JAX_CACHE"]           # this run's directory (tests/conftest.py)
    return dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=cache,
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
                XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} "
                          "--xla_cpu_collective_call_terminate_timeout_seconds=900")


TOKENIZER = str(ROOT / "configs" / "tokenizer" / "tiny.py")
# The tokenizer's EMA statistics are sums over the global batch, so they cross processes; the reference
# padding mode normalises the decoder over the global batch too. Small crops keep the test fast.
TOKENIZER_FAST = ["metrics.log_every=1", "metrics.tensorboard=false", "optim.warmup_steps=2",
                  "checkpoint.every=2", "train.eval_every=0", "data.audio.crop_seconds=1.28"]


def bajax_train(workdir, overrides, *extra, devices: int, config: str = TINY, **popen) -> subprocess.Popen:
    env = child_env(devices)
    cmd = [sys.executable, "-m", "bajax.cli", "train", "--config", config, "--workdir", str(workdir),
           *[f"--config.{o}" for o in overrides], *extra]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, text=True, **popen)


def two_shard_batches(trainer: Trainer):
    """The 2-process global batches, built in one process: shard 0's rows, then shard 1's."""
    shards = [iter(trainer.kind.make_dataset(trainer.cfg, p, 2, "train")) for p in range(2)]
    while True:
        parts = [next(s) for s in shards]
        yield {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def losses_of(trainer: Trainer, state, batches, n: int) -> list[float]:
    step_fn = trainer.compiled_step()
    out = []
    for _ in range(n):
        state, metrics = step_fn(state, sharding.to_global(next(batches), trainer.mesh))
        out.append(float(metrics["loss"]))
    return out


def test_two_processes_equal_one_and_checkpoint_moves_to_one_process(tmp_path):
    # FSDP across both processes; evaluation at steps 2 and 4 (every process runs the same 2 eval steps).
    overrides = FAST + ["train.steps=4", "mesh.data=1", "mesh.fsdp=-1", "train.eval_every=2", "train.eval_batches=2"]
    port = free_port()
    procs = [bajax_train(tmp_path / "mh", overrides, "--coordinator", f"127.0.0.1:{port}", "--num-processes",
                         "2", "--process-id", str(i), devices=4, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for i in range(2)]
    outs = [p.communicate(timeout=1200)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    assert "process 1 of 2" in outs[1] and "4 local of 8 devices" in outs[1]
    # Only process 0 writes metrics: one line per step, not two.
    records = read_jsonl(tmp_path / "mh" / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert "step      1 |" in outs[0] and "step      1 |" not in outs[1]
    assert [r["step"] for r in records if "eval_loss" in r] == [2, 4]
    two = [r["loss"] for r in records]
    # Both processes wrote their data-iterator state into the shared checkpoint.
    names = {p.name for p in (tmp_path / "mh" / "checkpoints" / "2" / "data_iter").iterdir()}
    assert names >= {"process_0-of-2.json", "process_1-of-2.json"}

    # 1 process x 8 devices on another mesh shape, fed the same global batches; it also restores the
    # 2-process checkpoint of step 2 and continues, and lets the trainer resume the 2-process run.
    ref = subprocess.run([sys.executable, __file__, str(tmp_path / "mh"), str(tmp_path / "one")], env=child_env(8),
                         cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]
    got = json.loads((tmp_path / "one" / "reference.json").read_text())
    np.testing.assert_allclose(got["fresh"], two, rtol=1e-5)
    np.testing.assert_allclose(got["from_step_2"], two[2:], rtol=1e-5)
    assert got["resumed_steps"] == [5]
    assert "WARNING: the data iterator of step 4 was saved by a different number of processes" in ref.stdout


def reference(mh_workdir: str, workdir: str) -> None:
    """The 1-process side of the test above, run in its own process (see `child_env`)."""
    Path(workdir).mkdir(parents=True, exist_ok=True)
    cfg = load(TINY, FAST + ["train.steps=4", "mesh.data=2", "mesh.fsdp=4"])
    trainer = Trainer(cfg, workdir)
    out = {}
    with trainer.scope():
        out["fresh"] = losses_of(trainer, trainer.fresh_state(), two_shard_batches(trainer), 4)
        ckpt = Checkpointer(str(Path(mh_workdir) / "checkpoints"), every=2, keep=3)
        state = ckpt.restore(2, trainer.abstract_with_shardings())   # written by 2 processes
        ckpt.close()
        assert int(state["step"]) == 2
        batches = two_shard_batches(trainer)
        next(batches), next(batches)
        out["from_step_2"] = losses_of(trainer, state, batches, 2)
    # The trainer itself resumes the 2-process run here (the data stream restarts, with a warning).
    result = train(load(TINY, FAST + ["train.steps=5", "mesh.data=4", "mesh.fsdp=2"]), mh_workdir)
    out["resumed_steps"] = [m["step"] for m in result.metrics]
    (Path(workdir) / "reference.json").write_text(json.dumps(out))


def test_sigterm_checkpoints_and_resume_matches_uninterrupted(tmp_path):
    overrides = FAST + ["train.steps=30", "checkpoint.every=1000"]   # only the SIGTERM save and the last
    proc = bajax_train(tmp_path / "run", overrides, devices=8, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    seen = []
    for line in proc.stdout:           # the first metrics line means training is under way
        seen.append(line)
        if line.startswith("step"):
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.communicate(timeout=600)[0]
    out = "".join(seen) + rest
    assert proc.returncode == 0, out[-3000:]
    assert "preempted_at_step" in out and "stopped early" in out
    ckpts = tmp_path / "run" / "checkpoints"
    stopped = max(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
    assert 1 <= stopped < 30
    # The preemption checkpoint is complete: state and data iterator, no unfinished temporary directory.
    assert {p.name for p in (ckpts / str(stopped)).iterdir()} >= {"state", "data_iter"}
    assert not [p for p in ckpts.iterdir() if "tmp" in p.name]

    resumed = bajax_train(tmp_path / "run", overrides, devices=8, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL)
    out2 = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0 and f"resumed from step {stopped}" in out2, out2[-3000:]
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 31))

    full = bajax_train(tmp_path / "full", overrides, devices=8, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out3 = full.communicate(timeout=900)[0]
    assert full.returncode == 0, out3[-3000:]
    uninterrupted = read_jsonl(tmp_path / "full" / "metrics.jsonl")
    np.testing.assert_array_equal([r["loss"] for r in records], [r["loss"] for r in uninterrupted])


def test_sigterm_to_one_process_stops_all_at_the_same_step(tmp_path):
    """A TPU maintenance event may signal one host only: JAX's preemption sync makes every process stop
    and checkpoint at the same step (a process stopping alone would leave the others hanging)."""
    overrides = FAST + ["train.steps=40", "checkpoint.every=1000", "mesh.data=1", "mesh.fsdp=-1"]
    port = free_port()
    procs = [bajax_train(tmp_path / "mh", overrides, "--coordinator", f"127.0.0.1:{port}", "--num-processes",
                         "2", "--process-id", str(i), devices=4, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for i in range(2)]
    seen = []
    for line in procs[0].stdout:
        seen.append(line)
        if line.startswith("step"):
            procs[1].send_signal(signal.SIGTERM)
            break
    outs = ["".join(seen) + procs[0].communicate(timeout=600)[0], procs[1].communicate(timeout=600)[0]]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    assert "SIGTERM caught" in outs[1] and "SIGTERM" not in outs[0]
    stops = [int(o.split("done: step ")[1].split()[0]) for o in outs]
    assert stops[0] == stops[1] < 40
    step_dir = tmp_path / "mh" / "checkpoints" / str(stops[0])
    assert {p.name for p in (step_dir / "data_iter").iterdir()} >= {"process_0-of-2.json", "process_1-of-2.json"}


def test_tokenizer_two_processes_equal_one(tmp_path):
    """The tokenizer on 2 processes x 4 devices (EMA codebook statistics summed across processes) gives the
    losses of 1 process x 8 devices fed the same global batches."""
    overrides = TOKENIZER_FAST + ["train.steps=3", "mesh.data=1", "mesh.fsdp=-1"]
    port = free_port()
    procs = [bajax_train(tmp_path / "mh", overrides, "--coordinator", f"127.0.0.1:{port}", "--num-processes",
                         "2", "--process-id", str(i), devices=4, config=TOKENIZER, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT) for i in range(2)]
    outs = [p.communicate(timeout=1200)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    two = [r["loss"] for r in read_jsonl(tmp_path / "mh" / "metrics.jsonl")]
    assert len(two) == 3
    ref = subprocess.run([sys.executable, __file__, "tokenizer", str(tmp_path / "one")], env=child_env(8),
                         cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]
    got = json.loads((tmp_path / "one" / "reference.json").read_text())
    np.testing.assert_allclose(got["fresh"], two, rtol=1e-5)


def tokenizer_reference(workdir: str) -> None:
    Path(workdir).mkdir(parents=True, exist_ok=True)
    trainer = Trainer(load(TOKENIZER, TOKENIZER_FAST + ["train.steps=3", "mesh.data=2", "mesh.fsdp=4"]), workdir)
    with trainer.scope():
        fresh = losses_of(trainer, trainer.fresh_state(), two_shard_batches(trainer), 3)
    (Path(workdir) / "reference.json").write_text(json.dumps({"fresh": fresh}))


if __name__ == "__main__":
    import absl.flags

    absl.flags.FLAGS.mark_as_parsed()
    if sys.argv[1] == "tokenizer":
        tokenizer_reference(sys.argv[2])
    else:
        reference(*sys.argv[1:3])

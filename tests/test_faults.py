"""Runs that survive what users do to them: a damaged newest checkpoint (fallback, or an error with
--no-fallback), a changed process count vs a missing data-iterator file, a resume with a changed model, an
`init_from` of another shape, and a crash after logged-but-unsaved steps."""

import json
from pathlib import Path

import numpy as np
import pytest

from bajax import cli, runs
from bajax.config import load
from bajax.train.metrics import read_jsonl
from bajax.train.trainer import train

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "lm" / "tiny.py")
pytestmark = pytest.mark.slow   # real training runs, ~2.5 min in all
FAST = ["data.seq_len=128", "metrics.log_every=1", "metrics.tensorboard=false", "optim.warmup_steps=2",
        "checkpoint.async_save=false", "train.eval_every=0"]


def bajax_train(workdir, *overrides) -> int:
    return cli.main(["train", "--config", TINY, "--workdir", str(workdir),
                     *(f"--config.{o}" for o in FAST + list(overrides))])


def test_resume_with_a_changed_width_is_refused_by_name_and_config_json_is_kept(tmp_path, capsys):
    assert bajax_train(tmp_path, "train.steps=1") == 0
    before = (tmp_path / "config.json").read_bytes()
    capsys.readouterr()
    assert bajax_train(tmp_path, "train.steps=2", "model.hidden=256") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err                        # one message, no traceback
    assert "step 1 does not fit this config's model" in err
    assert "embed_tokens/embedding: checkpoint (" in err and ", 128), this config (" in err and ", 256)" in err
    assert "model.hidden: 128 -> 256" in err
    assert (tmp_path / "config.json").read_bytes() == before   # still describes the checkpoint's tensors
    assert runs.steps(runs.Run(runs.as_path(tmp_path))) == [1]


def test_init_from_a_run_of_another_shape_names_the_parameters(tmp_path, capsys):
    assert bajax_train(tmp_path / "a", "train.steps=1") == 0
    capsys.readouterr()
    assert bajax_train(tmp_path / "b", "train.steps=1", "model.mlp=96",
                       f"train.init_from={tmp_path / 'a' / 'checkpoints'}") == 2
    err = capsys.readouterr().err
    assert "--config.train.init_from" in err and "gate_proj/kernel: checkpoint (" in err
    assert "model.mlp: 352 -> 96" in err
    assert not (tmp_path / "b" / "config.json").exists()


def test_metrics_rows_of_re_run_steps_appear_once(tmp_path, monkeypatch):
    """A crash after steps 4-6 were logged but before step 6's checkpoint: the rerun resumes at step 3 and
    metrics.jsonl holds each step once, with the re-run values. And the converse: rows are written one logged
    step late (timing), yet every row up to step N is on disk before checkpoint N is saved, so a kill -9 just
    after that checkpoint commits loses no row (the resume re-runs only later steps)."""
    from bajax.train import checkpoint

    on_disk_at_save, save = {}, checkpoint.Checkpointer.save

    def recording_save(self, step, *args, **kwargs):
        on_disk_at_save[step] = [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")]
        return save(self, step, *args, **kwargs)

    monkeypatch.setattr(checkpoint.Checkpointer, "save", recording_save)
    cfg = load(TINY, FAST + ["train.steps=6", "checkpoint.every=3"])
    train(cfg, str(tmp_path), quiet=True)
    assert on_disk_at_save == {3: [1, 2, 3], 6: [1, 2, 3, 4, 5, 6]}
    monkeypatch.undo()
    import shutil

    shutil.rmtree(tmp_path / "checkpoints" / "6")            # as if killed before step 6 was saved
    rerun = train(cfg, str(tmp_path), quiet=True)
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_array_equal([r["loss"] for r in rows[3:]], [m["loss"] for m in rerun.metrics])
    assert json.loads((tmp_path / "config.json").read_text())["kind"] == "lm"


@pytest.mark.parametrize("flag", ["workdir", "checkpoint"])
def test_run_loader_names_mismatched_parameters(tmp_path, flag):
    cfg = load(TINY, FAST + ["train.steps=1"])
    train(cfg, str(tmp_path), quiet=True)
    with pytest.raises(runs.ShapeMismatch, match=r"audio_head/.*checkpoint .* this config"):
        runs.load(str(tmp_path), "lm", model_overrides={"audio_head_layers": 2}, flag=flag)


def _truncate_largest(step_dir: Path) -> None:
    largest = max((p for p in (step_dir / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])


DAMAGES = {
    "truncated data file": _truncate_largest,
    "no _METADATA": lambda d: (d / "state" / "_METADATA").unlink(),
    "no manifest.ocdbt": lambda d: (d / "state" / "manifest.ocdbt").unlink(),
    "no state item": lambda d: __import__("shutil").rmtree(d / "state"),
    "no data-iterator file": lambda d: (d / "data_iter" / "process_0-of-1.json").unlink(),
}


@pytest.fixture(scope="module")
def six_steps(tmp_path_factory):
    """A 6-step run with checkpoints at 3 and 6, and its per-step losses (the uninterrupted reference)."""
    root = tmp_path_factory.mktemp("six")
    cfg = load(TINY, FAST + ["train.steps=6", "checkpoint.every=3"])
    result = train(cfg, str(root), quiet=True)
    return cfg, root, [m["loss"] for m in result.metrics]


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_an_unreadable_newest_checkpoint_falls_back_to_the_newest_readable_one(six_steps, tmp_path, damage,
                                                                              capsys):
    import shutil

    cfg, original, losses = six_steps
    run = tmp_path / "run"
    shutil.copytree(original, run)
    DAMAGES[damage](run / "checkpoints" / "6")
    capsys.readouterr()
    rerun = train(cfg, str(run))
    out = capsys.readouterr().out
    assert "checkpoint step 6" in out and "is unreadable" in out and "steps 4-6 will be re-run" in out, out
    np.testing.assert_array_equal([m["loss"] for m in rerun.metrics], losses[3:])   # the reference losses
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert (run / "checkpoints.unreadable" / "6" / "WHY.txt").read_text().startswith("step 6 unreadable: ")
    assert runs.steps(runs.Run(runs.as_path(run))) == [3, 6]   # step 6 saved anew


def test_no_fallback_makes_an_unreadable_checkpoint_an_error(six_steps, tmp_path, capsys):
    import shutil

    _, original, _ = six_steps
    run = tmp_path / "run"
    shutil.copytree(original, run)
    DAMAGES["no data-iterator file"](run / "checkpoints" / "6")
    capsys.readouterr()
    assert cli.main(["train", "--config", TINY, "--workdir", str(run), "--no-fallback",
                     *(f"--config.{o}" for o in FAST + ["train.steps=6", "checkpoint.every=3"])]) == 2
    err = capsys.readouterr().err
    assert "unreadable checkpoint(s): step 6: FileNotFoundError: its data-iterator state for process 0 of 1 " \
           "is missing" in err and "without --no-fallback" in err
    assert (run / "checkpoints" / "6").is_dir()             # nothing moved, nothing re-run


def test_a_changed_process_count_is_not_taken_for_damage(six_steps, tmp_path, capsys):
    """A data-iterator state saved by 2 processes: legitimate, the stream restarts (stated), no fallback."""
    import shutil

    cfg, original, _ = six_steps
    run = tmp_path / "run"
    shutil.copytree(original, run)
    it = run / "checkpoints" / "6" / "data_iter"
    (it / "process_0-of-1.json").rename(it / "process_0-of-2.json")
    capsys.readouterr()
    more = cfg.copy_and_resolve_references()
    more.train.steps = 7
    result = train(more, str(run))
    out = capsys.readouterr().out
    assert "resumed from step 6" in out and "different number of processes" in out and "unreadable" not in out
    assert [m["step"] for m in result.metrics] == [7]


def test_kill_9_at_three_random_moments_resumes_to_the_same_losses(tmp_path):
    """kill -9 twice at random moments and once while an asynchronous save is being written; each time the
    same command is rerun; in the end every step's loss equals an uninterrupted run's, bitwise, once each."""
    import random
    import signal
    import subprocess
    import sys
    import time

    from tests.test_multihost import child_env

    overrides = FAST + ["train.steps=12", "checkpoint.every=2", "checkpoint.async_save=true"]

    def start(workdir):
        cmd = [sys.executable, "-m", "bajax.cli", "train", "--config", TINY, "--workdir", str(workdir),
               *[f"--config.{o}" for o in overrides]]
        return subprocess.Popen(cmd, env=child_env(1), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)

    reference = start(tmp_path / "full")
    assert reference.wait(timeout=900) == 0, reference.stdout.read()[-3000:]
    want = [r["loss"] for r in read_jsonl(tmp_path / "full" / "metrics.jsonl")]
    assert len(want) == 12

    run, rng = tmp_path / "run", random.Random(0)
    kills = []
    for moment in ("random", "during an async save", "random"):
        proc = start(run)
        seen = 0
        for line in proc.stdout:            # wait until training is under way (a metrics line)
            if line.startswith("step"):
                seen += 1
                if moment == "random" and seen >= 1:
                    time.sleep(rng.uniform(0.0, 1.5))
                    break
                if moment != "random":
                    break
        if moment != "random":              # a step directory still being written: Orbax's tmp suffix
            deadline = time.time() + 120
            while time.time() < deadline and not any("tmp" in p.name for p in (run / "checkpoints").glob("*")):
                time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills.append(moment)
        proc.wait(timeout=60)
        proc.stdout.close()
    assert "during an async save" in kills
    final = start(run)
    out = final.communicate(timeout=900)[0]
    assert final.returncode == 0, out[-3000:]
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 13))
    np.testing.assert_array_equal([r["loss"] for r in rows], want)


def test_a_missing_data_source_is_one_line_and_exit_2(tmp_path, capsys):
    missing = tmp_path / "prepared"
    assert bajax_train(tmp_path / "run", "train.steps=1", f"data.source={missing}") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(missing) in err and "bajax prepare" in err, err

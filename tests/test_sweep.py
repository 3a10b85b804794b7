"""`bajax sweep`: print-launch runs nothing; a run trains each member, resumes finished ones, tabulates."""

import csv
from pathlib import Path

import pytest

from bajax import cli
from bajax.sweep import load_sweep

ROOT = Path(__file__).resolve().parents[1]


def write_sweep(tmp_path) -> str:
    path = tmp_path / "mini.py"
    path.write_text(
        f"CONFIG = {str(ROOT / 'configs/lm/tiny.py')!r}\n"
        "METRICS = ('loss', 'text_loss')\n"
        "def get_sweep():\n"
        "    return [('first', ['train.steps=2']),\n"
        "            ('second', ['train.steps=3', 'train.init_from={workdir}/first/checkpoints'])]\n")
    return str(path)


def test_print_launch_prints_one_command_per_member_and_runs_nothing(tmp_path, capsys):
    sweep = write_sweep(tmp_path)
    assert cli.main(["sweep", sweep, "--workdir", str(tmp_path / "w"), "--print-launch",
                     "--config.data.seq_len=64"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("bajax train --config ") and f"--workdir {tmp_path / 'w' / 'first'}" in lines[0]
    assert "--config.data.seq_len=64 --config.train.steps=2" in lines[0]
    assert f"--config.train.init_from={tmp_path / 'w'}/first/checkpoints" in lines[1]
    assert not (tmp_path / "w").exists()


def test_rvq_layers_sweep_prints_members(capsys):
    assert cli.main(["sweep", str(ROOT / "configs/sweeps/rvq_layers.py"), "--workdir", "/tmp/unused",
                     "--print-launch"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == len(
        load_sweep(str(ROOT / "configs/sweeps/rvq_layers.py")).members)


@pytest.mark.slow
def test_sweep_runs_members_resumes_and_tabulates(tmp_path, capsys):
    sweep, workdir = write_sweep(tmp_path), tmp_path / "w"
    args = ["sweep", sweep, "--workdir", str(workdir), "--config.data.seq_len=64",
            "--config.metrics.tensorboard=false", "--config.optim.warmup_steps=1"]
    assert cli.main(args) == 0
    rows = list(csv.DictReader((workdir / "results.csv").open()))
    assert [r["member"] for r in rows] == ["first", "second"]
    assert [int(r["step"]) for r in rows] == [2, 3]
    assert all(float(r["loss"]) > 0 and float(r["text_loss"]) > 0 for r in rows)
    assert (workdir / "results.png").stat().st_size > 1000
    assert "| member |" in (workdir / "results.md").read_text()
    capsys.readouterr()
    assert cli.main(args) == 0  # again: both finished, nothing retrains
    assert capsys.readouterr().out.count("finished earlier") == 2


def test_bad_sweep_file_is_explained(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def get_sweep():\n    return [('a b', ['x=1'])]\n")
    with pytest.raises(ValueError, match="member name 'a b'"):
        load_sweep(str(bad))

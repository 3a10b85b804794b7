"""Launchers' dry runs name the right config, workdir and process layout; the multi-host layout detection."""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bajax.train import distributed

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"


def sh(*cmd, env=None) -> str:
    r = subprocess.run(list(cmd), capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_tpu_pod_dry_run():
    out = sh("bash", str(LAUNCH / "tpu_pod.sh"), "--tpu", "pod-a", "--zone", "us-east5-a", "--project", "proj",
             "--type", "v5p-256", "--config", "configs/lm/7b.py:stage1", "--workdir", "gs://bkt/lm7b_s1",
             "--dry-run", "--", "--config.train.steps=10")
    layout, command = out.strip().splitlines()
    assert "128 chips on 32 workers" in layout and "32 processes" in layout
    argv = shlex.split(command)
    assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod-a"]
    assert "--worker=all" in argv and argv[argv.index("--zone") + 1] == "us-east5-a"
    remote = shlex.split(argv[argv.index("--command") + 1])
    assert remote[remote.index("--config") + 1] == "configs/lm/7b.py:stage1"
    assert remote[remote.index("--workdir") + 1] == "gs://bkt/lm7b_s1"
    assert "--cluster" in remote and remote[remote.index("--cluster") + 1] == "tpu"
    assert remote[-1] == "--config.train.steps=10"


def test_tpu_pod_needs_gcs_workdir():
    r = subprocess.run(["bash", str(LAUNCH / "tpu_pod.sh"), "--tpu", "p", "--zone", "z", "--config", "c.py",
                        "--workdir", "/tmp/x", "--dry-run"], capture_output=True, text=True)
    assert r.returncode == 2 and "gs://" in r.stderr


def test_gpu_slurm_dry_run():
    env = {"PATH": "/usr/bin:/bin", "DRY_RUN": "1", "BAJAX_PYTHON": sys.executable, "SLURM_JOB_ID": "4242",
           "SLURM_JOB_NODELIST": "gpu[007-014]", "SLURM_JOB_NUM_NODES": "8", "SLURM_GPUS_ON_NODE": "8",
           "PYTHONPATH": str(ROOT)}
    out = sh("bash", str(LAUNCH / "gpu_slurm.sbatch"), "configs/lm/7b.py:stage2", "/shared/runs/lm7b_s2",
             "--config.train.steps=10", env=env)
    layout, command = out.strip().splitlines()
    assert "8 nodes x 1 process x 8 GPUs = 64 devices" in layout and "gpu007:24242" in layout
    argv = shlex.split(command)
    assert argv[0] == "srun" and "--ntasks-per-node=1" in argv and "--nodes=8" in argv
    task = shlex.split(argv[-1])
    assert task[task.index("--config") + 1] == "configs/lm/7b.py:stage2"
    assert task[task.index("--workdir") + 1] == "/shared/runs/lm7b_s2"
    assert task[task.index("--coordinator") + 1] == "gpu007:24242"
    assert task[task.index("--num-processes") + 1] == "8"
    assert task[task.index("--process-id") + 1] == "$SLURM_PROCID"   # expanded by each task's shell
    # The sbatch header asks for one task per node and SIGTERM before the time limit.
    header = (LAUNCH / "gpu_slurm.sbatch").read_text()
    assert "#SBATCH --ntasks-per-node=1" in header and "#SBATCH --signal=TERM@" in header


def test_sweep_dry_run(tmp_path):
    sweep = tmp_path / "lr.py"
    sweep.write_text("CONFIG = 'configs/lm/tiny.py'\n\ndef get_sweep():\n"
                     "    return [('lr1', ['optim.lr=1e-3']), ('lr3', ['optim.lr=3e-3', 'train.steps=5'])]\n")
    out = sh(sys.executable, str(LAUNCH / "sweep.py"), str(sweep), "--root", "gs://b/sw", "--dry-run")
    lines = out.strip().splitlines()
    assert "2 members of configs/lm/tiny.py" in lines[0]
    cmds = [shlex.split(line) for line in lines[1:]]
    assert len(cmds) == 2
    for cmd, name in zip(cmds, ("lr1", "lr3")):
        assert cmd[cmd.index("--config") + 1] == "configs/lm/tiny.py"
        assert cmd[cmd.index("--workdir") + 1] == f"gs://b/sw/{name}"
    assert cmds[1][-2:] == ["--config.optim.lr=3e-3", "--config.train.steps=5"]
    # slurm: one sbatch job per member; tpu: the pod launcher per member.
    out = sh(sys.executable, str(LAUNCH / "sweep.py"), str(sweep), "--root", "/shared/sw", "--launcher", "slurm",
             "--dry-run", "--", "--nodes=2")
    slurm = [shlex.split(line) for line in out.strip().splitlines()[1:]]
    assert [c[0] for c in slurm] == ["sbatch", "sbatch"] and "--nodes=2" in slurm[0]
    assert slurm[0][slurm[0].index("--nodes=2") + 1:][1:3] == ["configs/lm/tiny.py", "/shared/sw/lr1"]
    out = sh(sys.executable, str(LAUNCH / "sweep.py"), str(sweep), "--root", "gs://b/sw", "--launcher", "tpu",
             "--dry-run", "--only", "lr3", "--", "--tpu", "pod-a", "--zone", "z")
    tpu = [shlex.split(line) for line in out.strip().splitlines()[1:]]
    assert len(tpu) == 1 and tpu[0][1].endswith("tpu_pod.sh") and "gs://b/sw/lr3" in tpu[0]


def test_sweep_files_in_repo_print_their_members(tmp_path):
    """Every configs/sweeps/*.py file loads, and its dry run gives one command per member."""
    files = sorted((ROOT / "configs" / "sweeps").glob("*.py"))
    assert files
    for f in files:
        out = sh(sys.executable, str(LAUNCH / "sweep.py"), str(f), "--root", str(tmp_path), "--dry-run")
        lines = out.strip().splitlines()
        n = int(lines[0].split(": ")[1].split()[0])
        assert n >= 1 and len(lines) == n + 1, out
        assert all(f"--workdir {tmp_path}/" in line for line in lines[1:])


def test_layout_detection():
    d = distributed.detect
    assert d(environ={}, tpu_vm=False).source == "single"
    explicit = d("127.0.0.1:1234", 2, 1, environ={}, tpu_vm=False)
    assert (explicit.coordinator, explicit.num_processes, explicit.process_id) == ("127.0.0.1:1234", 2, 1)
    with pytest.raises(distributed.DistributedError, match="--num-processes"):
        d("127.0.0.1:1234", None, 0, environ={})
    with pytest.raises(distributed.DistributedError, match="outside"):
        d("h:1", 2, 2, environ={})
    env = {"BAJAX_COORDINATOR": "head", "BAJAX_NUM_PROCESSES": "4", "BAJAX_PROCESS_ID": "3"}
    assert d(environ=env, tpu_vm=False) == distributed.Layout("env", f"head:{distributed.DEFAULT_PORT}", 4, 3)
    slurm = {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "16", "SLURM_PROCID": "5",
             "SLURM_JOB_NODELIST": "node[012-027],login1"}
    assert d(environ=slurm, tpu_vm=False) == distributed.Layout("slurm", "node012:20077", 16, 5)
    # A one-task SLURM job is a single process; a TPU VM leaves the layout to JAX.
    assert d(environ={**slurm, "SLURM_NTASKS": "1"}, tpu_vm=False).source == "single"
    assert d(environ={}, tpu_vm=True).source == "tpu"
    assert d("127.0.0.1:1", 2, 0, cluster="none", environ={}).source == "single"
    assert distributed.first_slurm_host("a1,a2") == "a1"
    assert distributed.first_slurm_host("gpu[3,7-9]") == "gpu3"

"""`bajax plan`: topologies, the 7B parameter layout on v5p-256 against its golden file, a compiled plan on
fake devices, the does-not-fit verdict with its knobs, and (opt-in) the full 7B AOT compile for v5p-256.

Regenerate the golden layout after an intended change of rules or model:
    BAJAX_UPDATE_GOLDEN=1 pytest tests/test_plan.py -k golden
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bajax.config import load
from bajax.train import plan

ROOT = Path(__file__).resolve().parents[1]
LM7B = str(ROOT / "configs" / "lm" / "7b.py")
TINY = str(ROOT / "configs" / "lm" / "tiny.py")
GOLDEN = ROOT / "tests" / "golden" / "lm7b_v5p-256_layout.txt"


def run_plan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bajax.cli", "plan", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=1800)


def test_topologies():
    v5p = plan.parse_topology("v5p-256")            # slice names count TensorCores: 2 per v5p chip
    assert (v5p.devices, v5p.hosts, v5p.accel.hbm_bytes) == (128, 32, 95e9)
    assert (plan.parse_topology("v5e-256").devices, plan.parse_topology("v5e-256").accel.hbm_bytes) == (256, 16e9)
    assert plan.parse_topology("v6e-256").hosts == 64
    h100 = plan.parse_topology("h100x64")
    assert (h100.devices, h100.hosts, h100.accel.hbm_bytes) == (64, 8, 80e9)
    with pytest.raises(ValueError, match="v5p-256"):
        plan.parse_topology("tpu-256")
    assert plan.resolve_mesh({"data": 2, "fsdp": -1}, 128) == {"data": 2, "fsdp": 64, "tensor": 1}
    with pytest.raises(ValueError, match="128"):
        plan.resolve_mesh({"data": 3, "fsdp": 5}, 128)


def test_golden_layout_7b_on_v5p_256():
    """The parameter layout of the 7B recipe on v5p-256, from logical axes + rules + mesh (no compile)."""
    cfg = load(LM7B)
    mesh = plan.resolve_mesh(dict(cfg.mesh), plan.parse_topology("v5p-256").devices)
    _, state = plan.abstract_state(cfg)
    text = plan.format_table(plan.param_table(state, cfg.sharding.rules, mesh)) + "\n"
    if os.environ.get("BAJAX_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "layout changed; if intended, regenerate with BAJAX_UPDATE_GOLDEN=1"
    # The big matrices are split over all 128 chips (fsdp on the embedding dimension).
    assert "layers/layers/mlp/gate_proj/kernel" in text and "28x28x18944" in text


def test_plan_compiles_the_targets_attention():
    """`auto` resolves for the TARGET (splash on TPU, cudnn on GPU), and a kernel the CPU host cannot compile
    is planned as blockwise, with a note for the report; an explicit CPU-compilable choice is kept."""
    cfg = load(LM7B, ["data.seq_len=16384"])
    if "attention" not in cfg.model:
        pytest.skip("model.attention not in the LM config")
    assert cfg.model.attention == "auto"
    for topology, kernel in (("v5p-256", "splash"), ("h100x64", "cudnn")):
        planned, notes = plan.target_config(cfg, plan.parse_topology(topology))
        assert planned.model.attention == "blockwise"
        assert kernel in notes[0] and "cannot be compiled" in notes[0], notes
    assert cfg.model.attention == "auto"                   # the caller's config is not changed
    planned, notes = plan.target_config(load(LM7B, ["model.attention=xla"]), plan.parse_topology("v5p-256"))
    assert planned.model.attention == "xla" and "cannot" not in notes[0]


@pytest.mark.slow
def test_compiled_plan_on_fake_devices(tmp_path):
    """The full path: re-exec with 8 fake devices, AOT compile, memory_analysis, verdict, JSON figures."""
    out = tmp_path / "plan.json"
    r = run_plan("--config", TINY, "--topology", "v5e-8", "--mesh", "data=2,fsdp=4", "--json", str(out),
                 "--config.data.seq_len=128")
    assert r.returncode == 0, r.stderr[-3000:]
    for text in ("8 devices", "data=2, fsdp=4, tensor=1", "memory_analysis", "temporaries", "caveat",
                 "FITS", "s per step", "layers/layers/self_attn/q_proj/kernel", "compute dtype float32"):
        assert text in r.stdout, text
    figures = json.loads(out.read_text())
    c = figures["compiled"]
    assert c["argument"] > 0 and c["temp"] > 0 and figures["fits"]
    # XLA's arguments hold at least the analytic parameters and optimizer moments of one device.
    assert c["argument"] >= figures["params_bytes"] + figures["opt_bytes"]


def test_plan_that_does_not_fit_names_the_knob():
    """7B stage 2 without FSDP on v5e-256: every chip would hold all 9B fp32 parameters (36 GB > 16 GB)."""
    r = run_plan("--config", LM7B + ":stage2", "--topology", "v5e-256", "--mesh", "data=-1,fsdp=1",
                 "--no-compile")
    assert r.returncode == 1, r.stderr[-2000:]
    assert "DOES NOT FIT" in r.stdout
    assert "raise the fsdp degree" in r.stdout


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("BAJAX_PLAN_7B"),
                    reason="opt-in (BAJAX_PLAN_7B=1): compiles the 9B-parameter step for 128 fake devices")
def test_7b_compiles_and_fits_v5p_256(tmp_path):
    out = tmp_path / "plan.json"
    for stage in ("stage1", "stage2"):
        r = run_plan("--config", f"{LM7B}:{stage}", "--topology", "v5p-256", "--json", str(out))
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        figures = json.loads(out.read_text())
        assert figures["compiled"] and figures["peak_bytes"] < 0.9 * 95e9, figures["peak_bytes"]


def test_micro_steps_cap_the_tokens_per_batch_shard():
    """train.max_tokens_per_device raises grad_accum to the smallest even split that fits, one row per shard
    at the least: 7B (8k tokens per shard) on 128 chips keeps one micro-step at 4k tokens per row and takes
    two at 16k."""
    from bajax.train.step import micro_steps

    seven = lambda seq: load(str(ROOT / "configs" / "lm" / "7b.py"), [f"data.seq_len={seq}"])  # noqa: E731
    assert micro_steps(seven(4096), 128) == 1
    assert micro_steps(seven(16384), 128) == 2
    assert micro_steps(seven(65536), 128) == 2          # the floor: one row per shard (the plan reports the rest)
    assert micro_steps(seven(4096), 64) == 2            # 4 rows per shard on 64 GPUs: 2 x 2 rows of 4k
    assert micro_steps(seven(16384), 64) == 4
    tiny = load(str(ROOT / "configs" / "lm" / "tiny.py"), ["train.grad_accum=2"])
    assert tiny.train.max_tokens_per_device == 0 and micro_steps(tiny, 1) == 2   # off: grad_accum as given

"""The notebooks execute end to end (nbclient, a fresh python3 kernel) on tiny settings in a temporary workdir.

Cells tagged "plot" must show a PNG and cells tagged "audio" an audio player. The kernel gets the test
environment minus conftest's 8-fake-device XLA flag (the notebooks train on one device, as a user's would).
"""

import os
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
FAKE_DEVICES = "--xla_force_host_platform_device_count=8"

pytestmark = pytest.mark.slow


@pytest.fixture
def kernel_env(monkeypatch, tmp_path):
    """The kernel inherits os.environ: tiny step counts, a tmp workdir, a shared compilation cache."""
    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if f != FAKE_DEVICES)
    if flags:
        monkeypatch.setenv("XLA_FLAGS", flags)
    else:
        monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("BAJAX_NB_STEPS", "4")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", os.environ["BAJAX_TEST_JAX_CACHE"])   # tests/conftest.py
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    return tmp_path


def execute(name: str, cwd: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(str(ROOT / "notebooks" / name), as_version=4)
    for cell in nb.cells:
        assert cell.cell_type != "code" or (not cell.outputs and cell.execution_count is None), \
            f"{name} is committed with outputs; regenerate it with notebooks/build_notebooks.py"
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def check_outputs(nb) -> None:
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, f"cell failed:\n{cell.source}\n{errors}"
        data = [o.get("data", {}) for o in cell.outputs if o.output_type in ("display_data", "execute_result")]
        tags = cell.metadata.get("tags", [])
        if "plot" in tags:
            assert any("image/png" in d for d in data), f"no figure from:\n{cell.source}"
        if "audio" in tags:
            assert any("<audio" in d.get("text/html", "") for d in data), f"no audio player from:\n{cell.source}"


def text_of(nb) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", "") + str(o.get("data", {}).get("text/markdown", "")))
    return "\n".join(out)


def test_quickstart_notebook_tokenises_decodes_and_plays_a_reply(kernel_env, monkeypatch):
    from bajax.audio import io as audio_io

    workdir = kernel_env / "qs"
    monkeypatch.setenv("BAJAX_NB_WORKDIR", str(workdir))
    # A stand-in generation result, so the reply cell's player and mel plot run too (stage 6 takes minutes).
    t = np.arange(24000) / 24000
    audio_io.write(str(workdir / "7_generate" / "reply.wav"), 0.3 * np.sin(2 * np.pi * 220 * t), 24000)
    nb = execute("quickstart.ipynb", kernel_env)
    check_outputs(nb)
    assert (workdir / "notebook_tokenizer" / "checkpoints").is_dir()
    assert "codes (" in text_of(nb)


def test_ablations_notebook_runs_a_demo_sweep_and_plots_it(kernel_env, monkeypatch):
    monkeypatch.setenv("BAJAX_NB_SWEEP", str(kernel_env / "no-such-sweep"))
    nb = execute("ablations.ipynb", kernel_env)
    check_outputs(nb)
    text = text_of(nb)
    assert "demonstration sweep" in text and "| lr_3e-4 |" in text and "| lr_3e-3 |" in text

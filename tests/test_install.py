"""A non-editable `pip install .` works from any directory: `bajax quickstart` and `--config configs/...` find
the configs shipped in the package (`bajax_configs`, see setup.py and bajax/config_files.py).

The fresh virtual environment reuses this one's dependencies through a .pth line (no network, no download)
and installs a copy of the source tree, so the build writes nothing into the checkout.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(cmd, cwd, **kw):
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=600, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "requirements.txt", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("bajax", "configs"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp)
    python = venv / "bin" / "python"
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp).strip()
    # This environment's packages (jax, flax, pip, setuptools, ...) after the new one's own: a path line in a
    # .pth file runs none of the .pth files there, so this checkout's editable install stays out.
    Path(site, "_bajax_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q", src], cwd=tmp)
    shutil.rmtree(src)  # nothing may still point at the source tree
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return venv, Path(site), elsewhere, env


def test_installed_package_holds_the_configs(installed):
    venv, site, elsewhere, env = installed
    out = run([venv / "bin" / "python", "-c",
               "import bajax, bajax_configs\n"
               "from bajax import config_files, quickstart\n"
               "from bajax.config import load_file\n"
               "print(bajax.__file__); print(config_files.root())\n"
               "q = quickstart.Quickstart(load_file(config_files.packaged('configs/quickstart.py')), 'w')\n"
               "print(q.tokenizer_codebook_sizes())  # reads configs/tokenizer/tiny.py from the package\n"],
              cwd=elsewhere, env=env).splitlines()
    assert out[0] == str(site / "bajax" / "__init__.py")
    assert out[1] == str(site / "bajax_configs")
    assert out[2].startswith("(") and len(out[2].split(",")) == 8
    for name in ("quickstart.py", "lm/tiny.py", "lm/7b.py", "tokenizer/tiny.py", "flow/tiny.py",
                 "sweeps/rvq_layers.py"):
        assert (site / "bajax_configs" / name).is_file(), name


def test_console_script_from_another_directory(installed):
    venv, site, elsewhere, env = installed
    bajax = venv / "bin" / "bajax"
    assert "--workdir" in run([bajax, "quickstart", "--help"], cwd=elsewhere, env=env)
    # `configs/...` as typed in the README resolves to the shipped file outside the repository.
    launch = run([bajax, "sweep", "configs/sweeps/rvq_layers.py", "--workdir", "w", "--print-launch"],
                 cwd=elsewhere, env=env)
    assert f"--config {site / 'bajax_configs' / 'tokenizer' / 'tiny.py'} --workdir w/" in launch
    plan = run([bajax, "plan", "--config", "configs/lm/tiny.py", "--topology", "v5p-8", "--no-compile"],
               cwd=elsewhere, env=env)
    assert "lm_head/kernel" in plan

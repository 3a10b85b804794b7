"""The config files shipped with bajax: the repository's `configs/`, installed as the package `bajax_configs`.

`pip install .` copies `configs/` into site-packages as `bajax_configs` (setup.py maps the one onto the other;
an editable install points it at the checkout), so `bajax quickstart` and `--config configs/...` work from
any directory:

    root()                           the installed configs directory (= the checkout's configs/ when editable)
    packaged("configs/lm/tiny.py:text")   -> "<root>/lm/tiny.py:text"
    resolve("configs/lm/tiny.py")    the path as given when it exists, else the packaged file of that name
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

PREFIX = "configs/"


def root() -> Path:
    """The directory of the shipped configs (quickstart.py, lm/, tokenizer/, flow/, sweeps/)."""
    try:
        return Path(str(importlib.resources.files("bajax_configs")))
    except ModuleNotFoundError:  # a source checkout installed before `bajax_configs` existed: re-run pip install
        checkout = Path(__file__).resolve().parents[1] / "configs"
        if checkout.is_dir():
            return checkout
        raise FileNotFoundError("bajax's configs are not installed (no package bajax_configs); reinstall bajax "
                                "with `pip install .` from the repository root") from None


def packaged(spec: str) -> str:
    """`configs/<file>[:arg]` -> the same file among the shipped configs (absolute path), keeping `:arg`."""
    if not spec.startswith(PREFIX):
        raise ValueError(f"{spec!r}: a shipped config is named configs/<file>.py[:arg]")
    return str(root() / spec[len(PREFIX):])


def resolve(spec: str) -> str:
    """A `--config` value as typed: unchanged when its file exists (relative to the working directory) or is
    not under `configs/`; otherwise the shipped config of that name, so `bajax train --config
    configs/lm/tiny.py` works outside the repository too. A missing file stays missing (the loader says so)."""
    path = spec.partition(":")[0]  # as bajax.config.load_file splits it
    if Path(path).exists() or not spec.startswith(PREFIX):
        return spec
    shipped = packaged(spec)
    return shipped if Path(shipped.partition(":")[0]).exists() else spec

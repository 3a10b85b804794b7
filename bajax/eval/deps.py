"""The evaluation extra's packages, imported on first use with one clear message when one is missing."""

from __future__ import annotations

import importlib

INSTALL = "pip install 'bajax[eval]'"


def require(module: str, purpose: str):
    """`import module` for `purpose` (e.g. "PESQ"); an ImportError that names the install command otherwise."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{purpose} needs the evaluation extra (importing {module!r} failed: {e}); "
                          f"install it with: {INSTALL}") from e

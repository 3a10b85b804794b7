"""Test set-up: 8 fake CPU devices (before JAX is imported), absl flags for Grain workers, torch marker."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import importlib.util  # noqa: E402

import absl.flags  # noqa: E402
import pytest  # noqa: E402

absl.flags.FLAGS.mark_as_parsed()

HAS_TORCH = importlib.util.find_spec("torch") is not None


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs the `torch` extra (pip install -e .[torch])")
    for item in items:
        if "torch" in item.keywords and not HAS_TORCH:
            item.add_marker(skip)

"""Test set-up: 8 fake CPU devices (before JAX is imported), absl flags for Grain workers, torch marker."""

import os

# 8 fake devices; a generous collective time-out because on a loaded 2-core machine one in-process collective
# of the 8 fake devices can wait past XLA's default 40 s and abort the test process.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
                           " --xla_cpu_collective_call_terminate_timeout_seconds=900").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import importlib.util  # noqa: E402
import tempfile  # noqa: E402

import absl.flags  # noqa: E402
import jax  # noqa: E402
import pytest  # noqa: E402

absl.flags.FLAGS.mark_as_parsed()

# Many tests compile the same tiny programs (model init, train steps) again; a persistent compilation
# cache shared by the xdist workers turns the repeats into cache hits.
jax.config.update("jax_compilation_cache_dir", os.environ.get(
    "BAJAX_TEST_JAX_CACHE", os.path.join(tempfile.gettempdir(), "bajax-test-jax-cache")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

HAS_TORCH = importlib.util.find_spec("torch") is not None


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs the `torch` extra (pip install -e .[torch])")
    for item in items:
        if "torch" in item.keywords and not HAS_TORCH:
            item.add_marker(skip)

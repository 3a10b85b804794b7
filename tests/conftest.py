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
# cache shared by the processes of ONE run turns the repeats into cache hits. The first process to load this
# file (pytest itself, or the xdist controller) names a fresh directory in BAJAX_TEST_JAX_CACHE, which its
# workers and the tests' child processes inherit, and removes it at the end. A directory kept across runs held
# an entry truncated by a worker killed mid-write, and reading it aborted a later run's worker.
OWN_JAX_CACHE = not os.environ.get("BAJAX_TEST_JAX_CACHE")
if OWN_JAX_CACHE:
    os.environ["BAJAX_TEST_JAX_CACHE"] = tempfile.mkdtemp(prefix="bajax-test-jax-cache-")
TEST_JAX_CACHE = os.environ["BAJAX_TEST_JAX_CACHE"]
# In-process, only programs of ONE device use it. On 2026-12-07 JAX 0.10.2 segfaulted serialising an 8-device
# train step into the cache (put_executable_and_time) and aborted deserialising another 8-device one (CI runs
# 30 and 31); both killed xdist workers. A worker crash is rerun once (pyproject.toml), but a rerun would read
# the same entry again, so multi-device programs never reach the cache: they are neither written nor read.
# BAJAX_TEST_IN_PROCESS_CACHE=0 turns the in-process cache off; child processes always get the directory.
if os.environ.get("BAJAX_TEST_IN_PROCESS_CACHE", "1") == "1":
    from jax._src import compilation_cache as _jax_cache

    _read, _write = _jax_cache.get_executable_and_time, _jax_cache.put_executable_and_time

    def _read_one_device(cache_key, compile_options, backend, executable_devices):
        if len(executable_devices) != 1:
            return None, None
        return _read(cache_key, compile_options, backend, executable_devices)

    def _write_one_device(cache_key, module_name, executable, backend, compile_time):
        if len(executable.local_devices()) == 1:
            _write(cache_key, module_name, executable, backend, compile_time)

    _jax_cache.get_executable_and_time = _read_one_device
    _jax_cache.put_executable_and_time = _write_one_device
    jax.config.update("jax_compilation_cache_dir", TEST_JAX_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

HAS_TORCH = importlib.util.find_spec("torch") is not None


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs the `torch` extra (pip install -e .[torch])")
    for item in items:
        if "torch" in item.keywords and not HAS_TORCH:
            item.add_marker(skip)


def pytest_sessionfinish(session, exitstatus):
    """The process that named this run's compilation cache removes it (not one named from outside)."""
    import shutil

    if OWN_JAX_CACHE:
        shutil.rmtree(TEST_JAX_CACHE, ignore_errors=True)

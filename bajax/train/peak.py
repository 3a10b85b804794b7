"""Peak FLOP/s per device, for MFU: a table for accelerators, a short matmul probe on CPU."""

from __future__ import annotations

import functools
import os
import time

import jax
import jax.numpy as jnp

# Dense bf16 peak per chip (vendor figures); fp32 matmuls on TPU run through bf16 passes.
PEAK_FLOPS = {
    "tpu v4": 275e12,
    "tpu v5 lite": 197e12,   # v5e
    "tpu v5e": 197e12,
    "tpu v5p": 459e12,
    "tpu v5": 459e12,
    "tpu v6 lite": 918e12,   # v6e (Trillium)
    "tpu v6e": 918e12,
    "nvidia h100": 989e12,
    "nvidia a100": 312e12,
    "nvidia h200": 989e12,
    "nvidia b200": 2250e12,
}


def table_peak(device_kind: str) -> float | None:
    device = device_kind.lower()
    for name, flops in sorted(PEAK_FLOPS.items(), key=lambda kv: -len(kv[0])):
        if device.startswith(name) or name in device:
            return flops
    return None


def _matmul_flops(n: int, repeats: int) -> float:
    """fp32 [n, n] @ [n, n] FLOP/s on the host CPU (all cores): the best of `repeats` timed runs after a
    warm-up run."""
    f, x = _matmul(n)
    f(x).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f(x).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


@functools.cache
def _matmul(n: int):
    """The compiled matmul and its operand, made once per size."""
    x = jax.device_put(jnp.ones((n, n), jnp.float32), jax.local_devices(backend="cpu")[0])
    return jax.jit(lambda a: a @ a), x


@functools.cache
def cpu_matmul_peak(n: int = 1024, repeats: int = 8) -> float:
    """fp32 matmul FLOP/s of this host (all cores), measured once per process (`__wrapped__` measures again)."""
    return _matmul_flops(n, repeats)


def device_peak(override: float = 0.0) -> float:
    """Peak FLOP/s of one device. On CPU the host peak is shared by all (fake) devices of the process."""
    if override > 0:
        return override
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return cpu_matmul_peak() / jax.local_device_count()
    return table_peak(dev.device_kind) or 0.0


def probe_peak(n: int = 1536, repeats: int = 3) -> float:
    """A fresh (uncached) fp32 matmul FLOP/s probe of a few short runs, for benchmarks on a shared host:
    calling it next to each timed step gives a peak measured under the same load as that step."""
    return _matmul_flops(n, repeats)


def usable_cores() -> int:
    """The CPU cores this process may use (its affinity mask): the size of XLA:CPU's intra-op pool, and the
    thread count benchmarks give a PyTorch reference timed beside it."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                           # not Linux
        return os.cpu_count() or 1

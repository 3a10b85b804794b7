"""The few computations that have a CPU-tuned form, behind one switch.

Model code calls the plain-named functions here (`linear`, `gelu`, `depth_map`, `depth_attention`,
`row_sq_norms`). Each one is written below as the plain jnp computation, which is what runs on TPU and GPU;
when the program is traced for XLA:CPU it runs the version in `bajax.kernels.cpu` instead: the same
function, laid out or differentiated by hand the way XLA:CPU runs fastest (each is explained there, and
measured in bench/RESULTS_lm.md). Both paths compute the same values and gradients up to summation order
(tests/test_kernels.py checks every pair in float64).

The switch is `cpu_tuned()`: it looks at the PLATFORM the program is traced for (the active mesh's
devices, or the default backend when no mesh is active), never at how many devices there are. It can be
overridden with `BAJAX_KERNELS=plain|cpu|auto` in the environment or, in code, `with kernels.use("plain"):`.
The choice is made while tracing, so a function already jitted keeps the path it was traced with.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp

from bajax import sharding
from bajax.kernels import cpu

MODES = ("auto", "plain", "cpu")
ENV = "BAJAX_KERNELS"
_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("bajax_kernels", default=None)


def mode() -> str:
    """The requested kernel family: `use(...)` if active, else $BAJAX_KERNELS, else "auto"."""
    chosen = _override.get()
    if chosen is None:
        chosen = os.environ.get(ENV, "auto").strip().lower() or "auto"
        if chosen not in MODES:
            raise ValueError(f"{ENV}={os.environ[ENV]!r}: use one of {', '.join(MODES)}")
    return chosen


@contextlib.contextmanager
def use(family: str) -> Iterator[None]:
    """Trace with kernel family `family` ("plain", "cpu" or "auto") inside the block, whatever $BAJAX_KERNELS
    says; tests use it to run both paths in one process."""
    if family not in MODES:
        raise ValueError(f"kernel family {family!r}: use one of {', '.join(MODES)}")
    token = _override.set(family)
    try:
        yield
    finally:
        _override.reset(token)


def platform() -> str:
    """Platform of the program being traced: that of the active mesh's devices, else the default backend."""
    mesh = jax.sharding.get_abstract_mesh()
    device = None if mesh is None or mesh.empty else getattr(mesh, "abstract_device", None)
    return device.platform if device is not None and device.platform else jax.default_backend()


def cpu_tuned() -> bool:
    """Whether the CPU-tuned kernels run: forced by `use`/$BAJAX_KERNELS, else when tracing for CPU."""
    chosen = mode()
    return chosen == "cpu" if chosen != "auto" else platform() == "cpu"


def linear(x: jax.Array, kernel: jax.Array, in_ndim: int) -> jax.Array:
    """x contracted over its last `in_ndim` dims with the first `in_ndim` dims of `kernel`
    (y[..., out] = sum_in x[..., in] * kernel[in, out], with multi-dimensional in and out)."""
    # The flat form is only used unpartitioned: on a multi-device CPU mesh its collectives deadlocked in
    # XLA:CPU's in-process communicator (see cpu.flat_linear).
    if cpu_tuned() and sharding.tracing_for_one_device():
        return cpu.flat_linear(x, kernel, in_ndim)
    contract = (tuple(range(x.ndim - in_ndim, x.ndim)), tuple(range(in_ndim)))
    return jax.lax.dot_general(x, kernel, (contract, ((), ())))


def gelu(x: jax.Array) -> jax.Array:
    """Exact GELU x * Phi(x) (the erf form of torch's default `nn.GELU()`)."""
    if cpu_tuned():
        return cpu.gelu(x)
    return jax.nn.gelu(x, approximate=False)


def depth_map(fn: Callable[[jax.Array, int | slice], jax.Array], xs: list[jax.Array]) -> list[jax.Array]:
    """[fn(xs[k], k) for every depth slice k], each xs[k] [N, ...].

    `fn(x, k)` must also accept the stacked slices x [n, N, ...] with k = slice(0, n) (then it returns
    the n outputs stacked, e.g. a batched matmul with weight set k): the plain path makes that one call,
    so every projection is one matmul over all n * N rows.
    """
    if cpu_tuned():
        return cpu.depth_map(fn, xs)
    y = fn(jnp.stack(xs), slice(0, len(xs)))  # a new leading axis: the (sharded) frame axis stays as it is
    return [y[k] for k in range(len(xs))]


def depth_attention(q: list[jax.Array], k: list[jax.Array], v: list[jax.Array],
                    scale: float) -> list[jax.Array]:
    """Causal softmax attention over n depth positions given as slices [N, heads, d]: position i attends
    positions j <= i with scores scale * q_i . k_j (scale is usually d ** -0.5). Returns the n output
    slices. Scores and probabilities are at least fp32 (float64 inputs stay float64)."""
    if cpu_tuned():
        return cpu.depth_attention(q, k, v, scale)
    n = len(q)
    q, k, v = jnp.stack(q), jnp.stack(k), jnp.stack(v)  # [n, N, heads, d]
    score_dtype = jnp.promote_types(q.dtype, jnp.float32)
    scores = jnp.einsum("qnhd,knhd->nhqk", q, k, preferred_element_type=score_dtype) * scale
    causal = jnp.tril(jnp.ones((n, n), bool))
    probs = jax.nn.softmax(jnp.where(causal, scores, -jnp.inf), axis=-1)
    out = jnp.einsum("nhqk,knhd->qnhd", probs.astype(v.dtype), v)
    return [out[i] for i in range(n)]


def row_sq_norms(e: jax.Array) -> jax.Array:
    """||e_k||^2 of every row of e [K, D], in e's dtype."""
    if cpu_tuned():
        return cpu.row_sq_norms(e)
    return jnp.sum(e * e, axis=-1)

"""The CPU-tuned forms of `bajax.kernels`: same values and gradients, laid out for XLA:CPU.

Nothing here is called directly by model code: `bajax.kernels` picks these when the program is traced for
CPU. Each one says what XLA:CPU does with the plain form and why this one avoids it; the measurements are in
bench/RESULTS_lm.md.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

# --- Linear ---------------------------------------------------------------------------------------------


def flat_linear(x: jax.Array, kernel: jax.Array, in_ndim: int) -> jax.Array:
    """`kernels.linear` as one 2-D matmul [rows, fan_in] x [fan_in, fan_out].

    With several leading (batch, length) dims the weight gradient of the plain dot_general contracts over
    two dims, and XLA:CPU materialises a transposed copy of the output gradient for it; flat, it is a plain
    matmul. Only for unpartitioned programs (the caller checks): on a multi-device CPU mesh the flattened
    program's collectives deadlocked in XLA:CPU's in-process communicator.
    """
    in_shape, out_shape = kernel.shape[:in_ndim], kernel.shape[in_ndim:]
    lead = x.shape[:x.ndim - in_ndim]
    fan_in, fan_out = math.prod(in_shape), math.prod(out_shape)
    y = jnp.matmul(x.reshape(math.prod(lead), fan_in), kernel.reshape(fan_in, fan_out))
    return y.reshape(lead + out_shape)


# --- GELU -----------------------------------------------------------------------------------------------


@jax.custom_vjp
def gelu(x: jax.Array) -> jax.Array:
    """Exact GELU with a hand-written backward: it saves only x and computes g * (Phi(x) + x * phi(x)) in
    one elementwise pass, where autodiff of `jax.nn.gelu(approximate=False)` differentiates an erfc
    expansion (exp + selects) in three passes over the activation, a visible share of the audio head's
    step on CPU."""
    return _gelu_fwd(x)[0]


def _gelu_fwd(x):
    return x * _normal_cdf(x), x


def _gelu_bwd(x, g):
    pdf = jnp.exp(-0.5 * x * x) * jnp.asarray(1.0 / math.sqrt(2.0 * math.pi), x.dtype)
    return (g * (_normal_cdf(x) + x * pdf),)


def _normal_cdf(x):
    return 0.5 * (1.0 + jax.lax.erf(x * jnp.asarray(1.0 / math.sqrt(2.0), x.dtype)))


gelu.defvjp(_gelu_fwd, _gelu_bwd)

# --- Per-depth-position weights over depth slices ---------------------------------------------------------

# Depth slices with at most this many rows in all run as one stacked call, longer ones a call per slice.
# XLA:CPU runs a tall stacked matmul such as [8 * 2048, 640] x [640, 640] at a lower rate than eight
# [2048, 640] ones, while a [64, 1024] slice (the reference-shape head) is too short a matmul to run alone
# (bench/RESULTS_lm.md, the audio head sections).
STACK_ROWS = 4096


def depth_map(fn: Callable[[jax.Array, int | slice], jax.Array], xs: list[jax.Array]) -> list[jax.Array]:
    """`kernels.depth_map`: one stacked call when the slices are short (see STACK_ROWS), else one per slice."""
    n = len(xs)
    if n * xs[0].shape[0] > STACK_ROWS:
        return [fn(x, k) for k, x in enumerate(xs)]
    y = fn(jnp.stack(xs), slice(0, n))
    return [y[k] for k in range(n)]


# --- Depth attention ------------------------------------------------------------------------------------
# Each frame attends over at most 8 depth positions, so as matmuls this is N * heads tiny [8, d] x [d, 8]
# products whose batch axes (frames, heads) are not leading when depth is: XLA:CPU runs those far below its
# matmul rate and transposes q, k, v and the probabilities around them. Here every score is a
# multiply-and-reduce of two slices [N, heads, d], every output a weighted sum of value slices, and the
# backward is written the same way by hand (autodiff of the pair form fused poorly), so all of it is
# elementwise work over contiguous slices. The score scale multiplies the [N, heads] scores, not the
# [N, heads, d] queries: d times less elementwise work, forward and backward.


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def depth_attention(q: list[jax.Array], k: list[jax.Array], v: list[jax.Array], scale: float) -> list[jax.Array]:
    """`kernels.depth_attention` per query/key pair, with a hand-written backward."""
    return _attention_fwd(q, k, v, scale)[0]


def _probabilities(q, k, scale: float) -> list[jax.Array]:
    """For each query position i, softmax over keys j <= i: a list of [i + 1, N, heads] arrays."""
    probs = []
    for i in range(len(q)):
        scores = jnp.stack([jnp.sum(q[i] * k[j], axis=-1, dtype=_score_dtype(q)) for j in range(i + 1)])
        probs.append(jax.nn.softmax(scores * scale, axis=0))
    return probs


def _score_dtype(q):
    return jnp.promote_types(q[0].dtype, jnp.float32)


def _weighted_sum(weights: jax.Array, x: list[jax.Array]) -> jax.Array:
    """sum_j weights[j][..., None] * x[j] over the len(weights) first slices of x."""
    out = weights[0][..., None].astype(x[0].dtype) * x[0]
    for j in range(1, weights.shape[0]):
        out = out + weights[j][..., None].astype(x[j].dtype) * x[j]
    return out


def _attention_fwd(q, k, v, scale):
    probs = _probabilities(q, k, scale)
    return [_weighted_sum(p, v) for p in probs], (q, k, v, probs)


def _attention_bwd(scale, residuals, d_out):
    q, k, v, probs = residuals
    n = len(q)
    dq, dk_terms, dv_terms = [], [[] for _ in range(n)], [[] for _ in range(n)]
    for i, p in enumerate(probs):
        dp = jnp.stack([jnp.sum(d_out[i] * v[j], axis=-1, dtype=_score_dtype(q)) for j in range(i + 1)])
        # softmax backward, times the score scale: the gradient of the raw products q_i . k_j
        d_scores = p * (dp - jnp.sum(p * dp, axis=0, keepdims=True)) * scale
        dq.append(_weighted_sum(d_scores, k))
        for j in range(i + 1):  # key/value j collects from every query i >= j
            dk_terms[j].append(d_scores[j][..., None].astype(q[i].dtype) * q[i])
            dv_terms[j].append(p[j][..., None].astype(d_out[i].dtype) * d_out[i])
    total = lambda terms, like: sum(terms[1:], terms[0]).astype(like.dtype)
    return ([t.astype(x.dtype) for t, x in zip(dq, q)], [total(t, x) for t, x in zip(dk_terms, k)],
            [total(t, x) for t, x in zip(dv_terms, v)])


depth_attention.defvjp(_attention_fwd, _attention_bwd)

# --- Row norms of a codebook ----------------------------------------------------------------------------


def row_sq_norms(e: jax.Array) -> jax.Array:
    """`kernels.row_sq_norms` behind a fusion barrier for big tables.

    XLA:CPU fuses a plain `sum(e * e, -1)` INTO the distance matmul that consumes it, and that fused kernel
    runs well below the bare matmul (RVQ codebooks of K = 8192). A loop over row chunks (`lax.map`) is a
    fusion boundary, so big tables take that path; small ones (tiny configs) use the plain sum.
    """
    k = e.shape[0]
    if k < 1024 or k % 512:
        return jnp.sum(e * e, axis=-1)
    return jax.lax.map(lambda c: jnp.sum(c * c, axis=-1), e.reshape(k // 512, 512, -1)).reshape(k)

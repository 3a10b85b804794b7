"""Causal softmax attention over the audio head's 8 depth positions, written per query/key pair.

Each frame attends over at most 8 positions, so as matmuls this is N * heads tiny [8, d] x [d, 8] products
whose batch axes (frames, heads) are not leading in the head's depth-major [8, N, heads, d] layout: XLA:CPU
ran them at 4-9 GFLOP/s and transposed q, k, v and the probabilities around them (~0.8 s of the small 4x512
LM step, bench/RESULTS_lm.md). Here every score is a multiply-and-reduce of two contiguous [N, heads, d]
slices, every output a weighted sum of value slices, and the backward is written the same way by hand
(autodiff of the pair form fused poorly), so all of it is elementwise work over depth-major slices.

Scores, probabilities and their gradients are fp32 whatever the compute dtype, as in `layers.attention`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_vjp
def depth_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """q, k, v [n, N, heads, d] (q already scaled), causal over the leading depth axis -> [n, N, heads, d]."""
    return _forward(q, k, v)[0]


def _probabilities(q, k) -> list[jax.Array]:
    """For each query position i, softmax over keys j <= i: a list of [i + 1, N, heads] fp32 arrays."""
    probs = []
    for i in range(q.shape[0]):
        scores = jnp.stack([jnp.sum(q[i] * k[j], axis=-1, dtype=jnp.float32) for j in range(i + 1)])
        probs.append(jax.nn.softmax(scores, axis=0))
    return probs


def _weighted_sum(weights: jax.Array, x: jax.Array) -> jax.Array:
    """sum_j weights[j][..., None] * x[j] over the len(weights) first positions of x."""
    out = weights[0][..., None].astype(x.dtype) * x[0]
    for j in range(1, weights.shape[0]):
        out = out + weights[j][..., None].astype(x.dtype) * x[j]
    return out


def _forward(q, k, v):
    probs = _probabilities(q, k)
    return jnp.stack([_weighted_sum(p, v) for p in probs]), (q, k, v, probs)


def _backward(residuals, d_out):
    q, k, v, probs = residuals
    n = q.shape[0]
    dq, dk_terms, dv_terms = [], [[] for _ in range(n)], [[] for _ in range(n)]
    for i, p in enumerate(probs):
        dp = jnp.stack([jnp.sum(d_out[i] * v[j], axis=-1, dtype=jnp.float32) for j in range(i + 1)])
        d_scores = p * (dp - jnp.sum(p * dp, axis=0, keepdims=True))  # softmax backward
        dq.append(_weighted_sum(d_scores, k))
        for j in range(i + 1):  # key/value j collects from every query i >= j
            dk_terms[j].append(d_scores[j][..., None].astype(q.dtype) * q[i])
            dv_terms[j].append(p[j][..., None].astype(v.dtype) * d_out[i])
    total = lambda terms: sum(terms[1:], terms[0])
    return (jnp.stack(dq), jnp.stack([total(t) for t in dk_terms]).astype(k.dtype),
            jnp.stack([total(t) for t in dv_terms]).astype(v.dtype))


depth_attention.defvjp(_forward, _backward)

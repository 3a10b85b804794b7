"""Causal softmax attention over the audio head's 8 depth positions, written per query/key pair.

Each frame attends over at most 8 positions, so as matmuls this is N * heads tiny [8, d] x [d, 8] products
whose batch axes (frames, heads) are not leading when depth is the leading axis: XLA:CPU ran them at 4-9
GFLOP/s and transposed q, k, v and the probabilities around them (bench/RESULTS_lm.md). Here q, k, v are
lists of depth slices [N, heads, d]; every score is a multiply-and-reduce of two slices, every output a
weighted sum of value slices, and the backward is written the same way by hand (autodiff of the pair form
fused poorly), so all of it is elementwise work over contiguous slices.

The 1/sqrt(d) query scale is applied to the scores [N, heads], not to the queries [N, heads, d]: d times
less elementwise work, forward and backward (scaling the query slices cost ~1% of the small LM step).

Scores, probabilities and their gradients are at least fp32 (bf16 inputs give fp32 scores, as in
`layers.attention`; float64 inputs stay float64).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def depth_attention(q: list[jax.Array], k: list[jax.Array], v: list[jax.Array], scale: float) -> list[jax.Array]:
    """q, k, v: n depth slices [N, heads, d] each; position i attends positions <= i with scores
    scale * q_i . k_j (scale is usually d ** -0.5). Returns the n output slices."""
    return _forward(q, k, v, scale)[0]


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


def _forward(q, k, v, scale):
    probs = _probabilities(q, k, scale)
    return [_weighted_sum(p, v) for p in probs], (q, k, v, probs)


def _backward(scale, residuals, d_out):
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


depth_attention.defvjp(_forward, _backward)

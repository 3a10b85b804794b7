"""Training loss of the audio LLM: weighted text CE plus the audio head's 8-codebook CE.

Weights come from the batch (the data pipeline alone decides what is trained, see bajax/lm/batch.py).
Text loss is the weighted mean CE over positions; audio loss is the weighted mean CE over all
(position, codebook) pairs, so a batch whose audio is only an end-of-audio target on codebook 0 is not
diluted by seven empty codebooks. Log-softmax is fp32. All-zero weights give a loss of 0, never NaN.

Additivity (gradient accumulation): the normalisers come from `loss_totals(full_batch)`; `lm_loss` on a
micro-batch divides its weighted SUMS by those totals, so losses, gradients and every metric (accuracies
and per-codebook losses included) of the micro-batches add up exactly to those of the full batch. Without
`totals` the micro-batch is its own full batch.

The audio head runs only where audio is predicted (`audio_capacity`): the positions whose audio weights
are not all zero are gathered into a static-capacity buffer and the depth transformer and classifiers run
on those frames only. The gather is per group of rows, one group per shard of the batch axis (one group on
one device), so it never crosses a shard and the frame axis stays sharded like the batch. The capacity C
per group is the smallest of a few buckets (fractions of the group's B / groups * T positions) that holds
the fullest group, picked on device by `lax.switch` (one compiled program, one branch executed per step);
when no bucket holds it the head runs everywhere, so no position is ever dropped. Per-position CE is scattered back into
[B, T] (zero where no audio weight) and reduced exactly as the full head's, so the loss is the same bits. Under
differentiation the taken branch computes the head's gradient in the forward pass (`_switched_sums`), so the
switch carries no branch's activations and nothing is recomputed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from bajax import sharding
from bajax.lm.audio_head import DEPTH
from bajax.lm.model import audio_head_logits, head_logits

# Default capacity buckets, as fractions of the packed row length (see `audio_capacities`).
AUDIO_CAPACITY = (0.125, 0.25, 0.5)
CAPACITY_MULTIPLE = 8   # capacities are rounded up to a multiple of this (capped at T)


@jax.custom_vjp
def _token_ce(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """logsumexp(logits) - logits[target], fp32: no log-softmax of the whole vocabulary is materialised."""
    return _token_ce_fwd(logits, targets)[0]


def _token_ce_fwd(logits, targets):
    x = logits.astype(jnp.float32)
    peak = jax.lax.stop_gradient(jnp.max(x, axis=-1, keepdims=True))
    lse = jnp.log(jnp.sum(jnp.exp(x - peak), axis=-1)) + peak[..., 0]
    picked = jnp.take_along_axis(x, targets[..., None], axis=-1)[..., 0]
    return lse - picked, (logits, targets, lse)


def _token_ce_bwd(res, g):
    # d CE / d logits = softmax - onehot(target): one fused elementwise pass over [..., V], nothing saved
    # from the forward but the logits and one logsumexp per row.
    logits, targets, lse = res
    x = logits.astype(jnp.float32)
    onehot = jnp.arange(x.shape[-1], dtype=targets.dtype) == targets[..., None]
    grad = g[..., None] * (jnp.exp(x - lse[..., None]) - onehot.astype(jnp.float32))
    return grad.astype(logits.dtype), None


_token_ce.defvjp(_token_ce_fwd, _token_ce_bwd)


def cross_entropy(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(CE, correct) per position, from logits [..., V] upcast to fp32 and int targets [...]."""
    ce = _token_ce(logits, targets)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    return ce, correct


def text_cross_entropy(model, h: jax.Array, targets: jax.Array, chunk: int = 0) -> tuple[jax.Array, jax.Array]:
    """(CE, correct) [B, T] of the text head, with fp32 logits straight from the last matmul.

    `chunk` > 0 (and < T): the positions go through the head `chunk` at a time in a rematerialised scan, so
    only [B, chunk, vocab] logits ever exist, in the forward and the backward alike; at 7B (152k vocabulary)
    and 16k tokens per row that is 10 GB of fp32 logits per row otherwise. Same CE, accuracy and gradients
    as the whole-sequence head (to fp32 rounding of the reordered gradient sum of the head's weight)."""
    t = h.shape[1]
    if not chunk or t <= chunk:
        return cross_entropy(model.text_logits(h, fp32=True), targets)
    # Only the head's parameters enter the scan (its gradient is the one carried across pieces).
    graphdef, state = nnx.split(model.text_head)
    dtype = model.dtype
    b, e = h.shape[0], h.shape[2]
    n = -(-t // chunk)
    h = jnp.pad(h, ((0, 0), (0, n * chunk - t), (0, 0))).reshape(b, n, chunk, e).swapaxes(0, 1)
    targets = jnp.pad(targets, ((0, 0), (0, n * chunk - t))).reshape(b, n, chunk).swapaxes(0, 1)

    @jax.checkpoint
    def piece(state, h_c, t_c):
        return cross_entropy(head_logits(nnx.merge(graphdef, state), h_c, dtype, fp32=True), t_c)

    _, (ce, ok) = jax.lax.scan(lambda carry, xs: (carry, piece(state, *xs)), None, (h, targets))
    unchunk = lambda a: a.swapaxes(0, 1).reshape(b, n * chunk)[:, :t]
    return unchunk(ce), unchunk(ok)


def loss_totals(batch: dict) -> dict:
    """Normalisers of a (global) batch: the text weight sum and the audio weight sum per codebook."""
    return {"text": jnp.sum(batch["text_weights"].astype(jnp.float32)),
            "audio_per_codebook": jnp.sum(batch["audio_weights"].astype(jnp.float32), axis=(0, 1))}


def audio_capacities(seq_len: int, fractions: Sequence[float] = AUDIO_CAPACITY) -> tuple[int, ...]:
    """The static per-row capacities for rows of `seq_len` positions: each fraction of seq_len rounded up to
    a multiple of CAPACITY_MULTIPLE, deduplicated, ascending, only those below seq_len (a batch that needs
    more runs the head at every position)."""
    caps = set()
    for f in fractions:
        if not 0.0 < float(f) <= 1.0:
            raise ValueError(f"model.audio_head_capacity: fractions must lie in (0, 1], got {tuple(fractions)}")
        c = min(seq_len, CAPACITY_MULTIPLE * math.ceil(float(f) * seq_len / CAPACITY_MULTIPLE))
        if c < seq_len:
            caps.add(c)
    return tuple(sorted(caps))


def audio_positions(audio_weights: jax.Array) -> jax.Array:
    """[B, T] bool: positions that carry any audio loss weight (the only ones the audio head must see)."""
    return jnp.any(audio_weights != 0, axis=-1)


def _masked_ce(logits, targets, mask):
    """Per-codebook (CE, correct) lists [.., T'] with zeros where `mask` is False."""
    out = []
    for k in range(DEPTH):
        ce_k, ok_k = cross_entropy(logits[k], targets[..., k])
        out.append((jnp.where(mask, ce_k, 0.0), jnp.where(mask, ok_k, 0.0)))
    return out


def _audio_ce_full(logits_fn, h, targets, mask):
    return _masked_ce(logits_fn(h, targets), targets, mask)


def batch_groups(rows: int) -> int:
    """How many shards the batch axis of the active mesh has (1 without a mesh), as a divisor of `rows`:
    the audio head gathers within each group of rows, so a gather never crosses a batch shard."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty:
        return 1
    entry = sharding.logical_to_spec(("batch",), None, mesh.axis_names)[0]
    names = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
    return math.gcd(rows, math.prod(mesh.shape[n] for n in names))


def _audio_ce_gathered(logits_fn, h, targets, mask, groups: int, capacity: int):
    """The audio head on the audio positions only: the B rows form `groups` groups of B / groups rows (one
    per batch shard); the first `capacity` audio positions of each group (the caller guarantees no group
    has more) are gathered into [groups, capacity], and per-position CE is scattered back to [B, T]."""
    b, t = mask.shape
    n = b // groups * t
    grouped = lambda x: sharding.constrain(x.reshape(groups, n, *x.shape[2:]), ("batch",) + (None,) * (x.ndim - 1))
    mask_g, h_g, targets_g = grouped(mask), grouped(h), grouped(targets)
    # A stable sort puts each group's audio positions first, in order; the rest of the permutation fills the
    # unused slots, so the gathered indices of a group are distinct and the scatter below has no collisions.
    idx = jnp.argsort(jnp.logical_not(mask_g).astype(jnp.int32), axis=1, stable=True)[:, :capacity]
    sel = jnp.take_along_axis(mask_g, idx, axis=1)                                         # [G, C]
    h_c = jnp.take_along_axis(h_g, idx[..., None], axis=1)                                 # [G, C, H]
    targets_c = jnp.take_along_axis(targets_g, idx[..., None], axis=1)                     # [G, C, 8]
    rows = jnp.arange(groups)[:, None]
    scatter = lambda v: jnp.zeros((groups, n), v.dtype).at[rows, idx].set(v, unique_indices=True).reshape(b, t)
    return [(scatter(ce_c), scatter(ok_c))
            for ce_c, ok_c in _masked_ce(logits_fn(h_c, targets_c), targets_c, sel)]


def _weighted_sums(per_codebook, audio_weights):
    """(sum over codebooks of sum(CE_k * w_k), [8] sum(CE_k * w_k), [8] sum(correct_k * w_k))."""
    aw = audio_weights.astype(jnp.float32)
    total, ce_sums, ok_sums = jnp.zeros((), jnp.float32), [], []
    for k, (ce_k, ok_k) in enumerate(per_codebook):
        ce_sums.append(jnp.sum(ce_k * aw[..., k]))
        ok_sums.append(jnp.sum(ok_k * aw[..., k]))
        total = total + ce_sums[-1]
    return total, jnp.stack(ce_sums), jnp.stack(ok_sums)


def audio_loss_sums(model, h: jax.Array, targets: jax.Array, audio_weights: jax.Array,
                    capacity: Sequence[float] = AUDIO_CAPACITY) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The audio head's weighted sums: (sum over (position, codebook) of w * CE, [8] per-codebook w * CE,
    [8] per-codebook w * correct). With capacity fractions the head runs only on the audio positions (see
    the module docstring); with `capacity=()` it runs at every position. Both give the same values (to matmul
    rounding). Only the first is differentiable (the per-codebook sums are metrics)."""
    mask = audio_positions(audio_weights)
    b, t = mask.shape
    groups = batch_groups(b)
    caps = audio_capacities(b // groups * t, capacity) if capacity else ()
    # The head's own modules, split so that only they (and h) are differentiated in `_switched_sums`.
    graphdef, params, rest = nnx.split((model.audio_head, model.audio_embed), nnx.Param, ...)

    def sums(capacity, params, h):
        head, embed = nnx.merge(graphdef, params, rest)
        logits_fn = lambda x, y: audio_head_logits(head, embed, x, y)  # noqa: E731
        per_codebook = (_audio_ce_full(logits_fn, h, targets, mask) if capacity is None else
                        _audio_ce_gathered(logits_fn, h, targets, mask, groups, capacity))
        return _weighted_sums(per_codebook, audio_weights)

    if not caps:
        return sums(None, params, h)
    needed = jnp.max(jnp.sum(mask.reshape(groups, -1), axis=1))   # the fullest group's audio positions
    branch = jnp.searchsorted(jnp.asarray(caps, needed.dtype), needed, side="left")  # len(caps): none fits
    total, ce_sums, ok_sums = _switched_sums(tuple(caps) + (None,), sums, branch, params, h)
    return total, jax.lax.stop_gradient(ce_sums), jax.lax.stop_gradient(ok_sums)


def _switched_sums(branches, sums, branch, params, h):
    """`sums` of the bucket `branches[branch]`, with a gradient that needs no residual of the head.

    Differentiating a `lax.switch` makes each branch return the residuals of ALL branches, zeros for those
    not taken: the gathered step would write the full head's activations as zeros and hold every bucket's.
    Rematerialising the branches avoids that at the price of the taken branch's forward again in the
    backward. Here the taken branch computes its gradient at once instead (the loss is linear in the
    weighted sum, so its cotangent is one scalar): the residuals are that gradient, whose shapes (the head's
    parameters, h) are the same in every branch, and the backward is one multiplication."""

    @jax.custom_vjp
    def switched(params, h, branch):
        return jax.lax.switch(branch, [functools.partial(sums, c) for c in branches], params, h)

    def with_grad(capacity):
        def total_and_metrics(params, h):
            total, ce_sums, ok_sums = sums(capacity, params, h)
            return total, (ce_sums, ok_sums)

        def run(params, h):
            (total, metrics), grads = jax.value_and_grad(total_and_metrics, argnums=(0, 1), has_aux=True)(params, h)
            return (total, *metrics), grads
        return run

    def forward(params, h, branch):
        return jax.lax.switch(branch, [with_grad(c) for c in branches], params, h)

    def backward(grads, cotangents):
        g = cotangents[0]                      # the per-codebook sums leave through stop_gradient
        scale = lambda x: (g * x).astype(x.dtype)  # noqa: E731
        return jax.tree.map(scale, grads[0]), scale(grads[1]), None

    switched.defvjp(forward, backward)
    return switched(params, h, branch)


def lm_loss(model, batch: dict, totals: dict | None = None, text_loss_weight: float = 1.0,
            audio_loss_weight: float = 1.0, audio_capacity: Sequence[float] = AUDIO_CAPACITY,
            text_chunk: int = 0):
    """(loss, metrics) for one batch; metrics are scalars (losses, accuracies, token counts).

    Sums are divided by `totals` (default: this batch's own, see `loss_totals`). Passing the totals of a
    whole global batch makes loss and metrics ADDITIVE over its micro-batches, so gradient accumulation
    equals one large batch exactly. `audio_capacity`: the audio head's capacity buckets (fractions of the
    row length; `()` runs it at every position), see `audio_loss_sums`. `text_chunk`: positions per
    piece of the text head (`text_cross_entropy`; 0 = all at once).
    """
    totals = loss_totals(batch) if totals is None else totals
    safe = lambda n: jnp.maximum(n, 1e-8)
    h = model.hidden(batch)
    tw = batch["text_weights"].astype(jnp.float32)
    aw = batch["audio_weights"].astype(jnp.float32)

    text_ce, text_ok = text_cross_entropy(model, h, batch["text_targets"], text_chunk)
    text_loss = jnp.sum(text_ce * tw) / safe(totals["text"])
    metrics = {"text_loss": text_loss, "text_acc": jnp.sum(text_ok * tw) / safe(totals["text"]),
               "text_tokens": jnp.sum(tw)}
    audio_sum, ce_sums, ok_sums = audio_loss_sums(model, h, batch["audio_targets"], batch["audio_weights"],
                                                  audio_capacity)
    for k in range(DEPTH):
        n_k = safe(totals["audio_per_codebook"][k])
        metrics[f"audio_loss_{k}"] = ce_sums[k] / n_k
        metrics[f"audio_acc_{k}"] = ok_sums[k] / n_k
    audio_loss = audio_sum / safe(jnp.sum(totals["audio_per_codebook"]))
    loss = text_loss_weight * text_loss + audio_loss_weight * audio_loss
    metrics.update(audio_loss=audio_loss, audio_codes=jnp.sum(aw),
                   audio_frames=jnp.sum((aw[..., 0] > 0).astype(jnp.float32)), loss=loss)
    return loss, metrics

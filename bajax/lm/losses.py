"""Training loss of the audio LLM: weighted text CE plus the audio head's 8-codebook CE.

Weights come from the batch (the data pipeline alone decides what is trained, see bajax/lm/batch.py).
Text loss is the weighted mean CE over positions; audio loss is the weighted mean CE over all
(position, codebook) pairs, so a batch whose audio is only an end-of-audio target on codebook 0 is not
diluted by seven empty codebooks. Log-softmax is fp32. All-zero weights give a loss of 0, never NaN.

Additivity (gradient accumulation): the normalisers come from `loss_totals(full_batch)`; `lm_loss` on a
micro-batch divides its weighted SUMS by those totals, so losses, gradients and every metric (accuracies
and per-codebook losses included) of the micro-batches add up exactly to those of the full batch. Without
`totals` the micro-batch is its own full batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bajax.lm.audio_head import DEPTH


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


def loss_totals(batch: dict) -> dict:
    """Normalisers of a (global) batch: the text weight sum and the audio weight sum per codebook."""
    return {"text": jnp.sum(batch["text_weights"].astype(jnp.float32)),
            "audio_per_codebook": jnp.sum(batch["audio_weights"].astype(jnp.float32), axis=(0, 1))}


def lm_loss(model, batch: dict, totals: dict | None = None, text_loss_weight: float = 1.0,
            audio_loss_weight: float = 1.0):
    """(loss, metrics) for one batch; metrics are scalars (losses, accuracies, token counts).

    Sums are divided by `totals` (default: this batch's own, see `loss_totals`). Passing the totals of a
    whole global batch makes loss and metrics ADDITIVE over its micro-batches, so gradient accumulation
    equals one large batch exactly.
    """
    totals = loss_totals(batch) if totals is None else totals
    safe = lambda n: jnp.maximum(n, 1e-8)
    h = model.hidden(batch)
    tw = batch["text_weights"].astype(jnp.float32)
    aw = batch["audio_weights"].astype(jnp.float32)

    text_ce, text_ok = cross_entropy(model.text_logits(h), batch["text_targets"])
    text_loss = jnp.sum(text_ce * tw) / safe(totals["text"])
    metrics = {"text_loss": text_loss, "text_acc": jnp.sum(text_ok * tw) / safe(totals["text"]),
               "text_tokens": jnp.sum(tw)}
    audio_sum = jnp.zeros((), jnp.float32)
    audio_logits = model.audio_logits(h, batch["audio_targets"])
    for k in range(DEPTH):
        ce_k, ok_k = cross_entropy(audio_logits[k], batch["audio_targets"][..., k])
        w_k, n_k = aw[..., k], safe(totals["audio_per_codebook"][k])
        audio_sum = audio_sum + jnp.sum(ce_k * w_k)
        metrics[f"audio_loss_{k}"] = jnp.sum(ce_k * w_k) / n_k
        metrics[f"audio_acc_{k}"] = jnp.sum(ok_k * w_k) / n_k
    audio_loss = audio_sum / safe(jnp.sum(totals["audio_per_codebook"]))
    loss = text_loss_weight * text_loss + audio_loss_weight * audio_loss
    metrics.update(audio_loss=audio_loss, audio_codes=jnp.sum(aw),
                   audio_frames=jnp.sum((aw[..., 0] > 0).astype(jnp.float32)), loss=loss)
    return loss, metrics

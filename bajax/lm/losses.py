"""Training loss of the audio LLM: weighted text CE plus the audio head's 8-codebook CE.

Weights come from the batch (the data pipeline alone decides what is trained, see bajax/lm/batch.py).
Text loss is the weighted mean CE over positions; audio loss is the weighted mean CE over all
(position, codebook) pairs, so a batch whose audio is only an end-of-audio target on codebook 0 is not
diluted by seven empty codebooks. Log-softmax is fp32. All-zero weights give a loss of 0, never NaN.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bajax.lm.audio_head import DEPTH


def cross_entropy(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(CE, correct) per position, from logits [..., V] upcast to fp32 and int targets [...]."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    ce = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    return ce, correct


def _weighted_mean(x: jax.Array, w: jax.Array, total: jax.Array) -> jax.Array:
    return jnp.sum(x * w) / jnp.maximum(total, 1e-8)


def lm_loss(model, batch: dict, text_loss_weight: float = 1.0, audio_loss_weight: float = 1.0):
    """(loss, metrics) for one batch; metrics are scalars (losses, accuracies, token counts)."""
    h = model.hidden(batch)
    tw = batch["text_weights"].astype(jnp.float32)
    aw = batch["audio_weights"].astype(jnp.float32)

    text_ce, text_ok = cross_entropy(model.text_logits(h), batch["text_targets"])
    text_n = jnp.sum(tw)
    text_loss = _weighted_mean(text_ce, tw, text_n)

    metrics = {"text_loss": text_loss, "text_acc": _weighted_mean(text_ok, tw, text_n), "text_tokens": text_n}
    audio_sum = jnp.zeros((), jnp.float32)
    audio_logits = model.audio_logits(h, batch["audio_targets"])
    for k in range(DEPTH):
        ce_k, ok_k = cross_entropy(audio_logits[k], batch["audio_targets"][..., k])
        w_k = aw[..., k]
        n_k = jnp.sum(w_k)
        audio_sum = audio_sum + jnp.sum(ce_k * w_k)
        metrics[f"audio_loss_{k}"] = _weighted_mean(ce_k, w_k, n_k)
        metrics[f"audio_acc_{k}"] = _weighted_mean(ok_k, w_k, n_k)
    audio_n = jnp.sum(aw)
    audio_loss = audio_sum / jnp.maximum(audio_n, 1e-8)
    loss = text_loss_weight * text_loss + audio_loss_weight * audio_loss
    metrics.update(audio_loss=audio_loss, audio_codes=audio_n,
                   audio_frames=jnp.sum((aw[..., 0] > 0).astype(jnp.float32)), loss=loss)
    return loss, metrics

"""Text-alignment loss of the tokenizer (paper eq. 2): quantised features -> a trainable projection -> a
FROZEN language model, whose cross-entropy on the transcript is minimised.

The frozen LM is the audio LLM (`bajax.lm.model.AudioLLM`) and its sequence is
    [proj(q_1) ... proj(q_T')] [audio_end] [t_1 ... t_{L-1}]    ->  predicts t_1 ... t_L
so the LM reads the speech as a prefix and must continue it with its transcript (ASR through a frozen LM):
the only way to lower the loss is to put the transcript's content into the codes.

Frozen = its weights are `FrozenWeight` variables, not `nnx.Param`: the trainer's trainable filter selects
Params only, so the LM gets no gradient and no optimizer state whatever `train.freeze` says, while it is
still sharded by its logical axes and saved in the run's checkpoint (a resumed run needs no LM path).
Its weights come from `align_lm_checkpoint` (a `bajax train` LM run, loaded by the tokenizer kind's
`load_frozen` through `bajax.runs`) or, when that is empty, from the random initialisation of
`model.align_lm` (see configs/tokenizer/tiny.py for when that is sensible).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from bajax.layers.linear import Linear
from bajax.lm import special_tokens
from bajax.lm.model import AudioLLM


class FrozenWeight(nnx.Variable):
    """A weight of a frozen module: read by the forward pass, never trained, never in the optimizer."""


def freeze_params(module: nnx.Module) -> nnx.Module:
    """Retypes every `nnx.Param` of `module` (in place) as a `FrozenWeight` with the same metadata."""
    for _, node in list(nnx.iter_graph(module)):
        if not isinstance(node, nnx.Module):
            continue
        for name, value in list(vars(node).items()):
            if isinstance(value, nnx.Param):
                setattr(node, name, FrozenWeight(value.get_value(), **value.get_metadata()))
    return module


class TextAlignment(nnx.Module):
    """Trainable `proj` (code dim -> LM hidden) + the frozen `lm`; `ce_sums` gives additive CE sums."""

    def __init__(self, width: int, cfg, weights=None, *, rngs: nnx.Rngs):
        """`cfg`: the frozen LM's model config; `weights`: its Params (an nnx.State), or None for random."""
        self.proj = Linear(width, cfg.hidden, axes=("code_dim", "embed"), use_bias=True, rngs=rngs)
        lm = AudioLLM(cfg, rngs=rngs)
        if weights is not None:
            # Under jit these arrays become inputs of the INIT program only (train steps read the weights
            # from the state); for a 1.5B LM prefer `train.init_from` of a run that already has them.
            nnx.update(lm, weights)
        self.lm = freeze_params(lm)
        self.start_id = special_tokens.ids_of(cfg)["audio_end"]
        self.vocab_size = int(cfg.vocab_size)

    def ce_sums(self, q: jax.Array, code_lengths: jax.Array, text_tokens: jax.Array,
                text_weights: jax.Array) -> dict:
        """q [B, T', W] quantised features, code_lengths [B], transcript [B, L] with weights [B, L] ->
        {'align_ce', 'align_correct'}: sums over weighted transcript tokens (fp32)."""
        b, t = q.shape[:2]
        length = text_tokens.shape[1]
        valid = jnp.arange(t)[None, :] < code_lengths[:, None]
        audio = jnp.where(valid[..., None], self.proj(q.astype(jnp.float32)), 0.0)
        prev = jnp.concatenate([jnp.full((b, 1), self.start_id, jnp.int32), text_tokens[:, :-1]], axis=1)
        text = self.lm.embed_tokens(jnp.clip(prev, 0, self.vocab_size - 1))
        x = jnp.concatenate([audio.astype(text.dtype), text], axis=1)
        # Padded code frames get segment 0, so the transcript (segment 1) never attends to them, and its
        # positions continue right after the last real frame: padding changes nothing.
        segments = jnp.concatenate([valid.astype(jnp.int32), jnp.ones((b, length), jnp.int32)], axis=1)
        positions = jnp.concatenate([jnp.broadcast_to(jnp.arange(t), (b, t)),
                                     code_lengths[:, None] + jnp.arange(length)[None, :]], axis=1)
        h = self.lm.hidden_from_embeddings(x, positions, segments)[:, t:]
        logits = self.lm.text_logits(h).astype(jnp.float32)
        logp = jax.nn.log_softmax(logits, axis=-1)
        target = jnp.clip(text_tokens, 0, self.vocab_size - 1)
        ce = -jnp.take_along_axis(logp, target[..., None], axis=-1)[..., 0]
        w = text_weights.astype(jnp.float32)
        correct = (jnp.argmax(logits, -1) == target).astype(jnp.float32)
        return {"align_ce": jnp.sum(ce * w), "align_correct": jnp.sum(correct * w)}

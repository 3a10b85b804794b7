"""What other parts of bajax call on a trained tokenizer (loaded by `bajax.runs.load`):

  encode_fn(tokenizer, ...)   -> `wave16k float32 [n] -> int32 [frames, n_codebooks]`   (bajax prepare)
  frozen_decoder(tokenizer)   -> `(codes [B, L, 8], code_lengths [B]) -> (hidden [B, 4L-1, d], lengths)`
                                 jit-traceable, parameters closed over as constants     (flow conditioning)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bajax.tokenizer.model import Tokenizer

BUCKET = 1280 * 16  # encode pads waves to multiples of 1.28 s, so a corpus compiles only a few shapes


def encode_fn(tok: Tokenizer, *, name: str):
    """`wave16k [n] -> codes [n_codes, n_codebooks]` (int32) for data preparation. `name` identifies the
    quantiser in prepared shards (which run and step made their codes)."""
    graphdef, state = nnx.split(tok)
    norms = jax.jit(lambda s: nnx.merge(graphdef, s).bridge.rvq.codebook_norms())(state)

    @jax.jit
    def encode(state, wave, length):
        return nnx.merge(graphdef, state).encode(wave[None], length[None], norms=norms)

    def fn(wave: np.ndarray) -> np.ndarray:
        wave = np.asarray(wave, np.float32)
        if wave.ndim != 1 or not np.isfinite(wave).all():
            raise ValueError(f"encode: expected a finite mono 16 kHz waveform [n], got shape {wave.shape}")
        padded = np.zeros(max(BUCKET, -(-len(wave) // BUCKET) * BUCKET), np.float32)
        padded[: len(wave)] = wave
        codes, n = encode(state, jnp.asarray(padded), jnp.asarray(len(wave), jnp.int32))
        return np.asarray(codes[0, : int(n[0])])

    # Prepared shards record which quantiser made their codes and its codebook sizes; the LM pipeline checks
    # them against the model config, and a changed tokenizer invalidates finished shards.
    fn.codebook_sizes = tuple(int(c) for c in tok.bridge.rvq.codebook_sizes)
    fn.name = name
    # The longest wave one call encodes: the encoder sees at most its `max_source_positions` frames (2 mel
    # hops each: 30 s at full size) of the wave padded to a multiple of BUCKET. Callers split longer waves.
    positions = tok.encoder.positional_embedding[...].shape[0]
    fn.max_samples = positions * 2 * int(tok.mel_hop) // BUCKET * BUCKET
    return fn


class FrozenDecoder:
    """Codes -> `hidden_states_before_dconv2`, the flow decoder's conditioning; never trained by the caller.

    `decoder(codes, code_lengths)` reads the weights it holds. A jitted caller should pass them in instead,
    `decoder.apply(decoder.state, codes, code_lengths)`: weights a traced function merely closes over
    become constants of the compiled program, which XLA copies while compiling (the base tokenizer's
    0.6 GB of decoder weights then ran a 24 GB host out of memory in every compiled shape)."""

    def __init__(self, tok: Tokenizer):
        self.graphdef, self.state = nnx.split(tok)

    def apply(self, state, codes, code_lengths):
        tok = nnx.merge(self.graphdef, state)
        x = tok.bridge.decode(jnp.asarray(codes))
        hidden, lengths = tok.decoder.hidden(x, jnp.asarray(code_lengths))
        return jax.lax.stop_gradient(hidden), lengths

    def __call__(self, codes, code_lengths):
        return self.apply(self.state, codes, code_lengths)

    def with_state(self, state) -> FrozenDecoder:
        """This decoder reading `state` (e.g. the traced argument of a jitted caller) instead of its own."""
        other = object.__new__(FrozenDecoder)
        other.graphdef, other.state = self.graphdef, state
        return other


def frozen_decoder(tok: Tokenizer) -> FrozenDecoder:
    """The tokenizer's decoder as the flow decoder's conditioning (see `FrozenDecoder`)."""
    return FrozenDecoder(tok)

"""The tokenizer's audio encoder: Whisper-large-v3-shaped (SPEC section 2), 100 Hz log-mel -> 50 Hz features.

    conv1 n_mels -> d (k3, p1) + GELU;  conv2 d -> d (k3, s2, p1) + GELU;  + sinusoidal table [:T]
    N pre-LN layers (bidirectional within an utterance, k without bias);  final LayerNorm.

Lengths: `enc_len = (mel_len - 1) // 2 + 1`. Unlike the reference (which lets conv2 see conv1's output on
batch padding), every stage zeroes frames past the utterance's length, so an utterance encodes the same in
any batch: that is exactly what an unbatched conv's zero padding shows it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from bajax.layers.conv import Conv1d
from bajax.layers.mlp import gelu_exact
from bajax.layers.sinusoidal import FixedTable, whisper_sinusoids
from bajax.sharding import constrain
from bajax.tokenizer.transformer import WhisperStack


def encoder_lengths(mel_lengths: jax.Array) -> jax.Array:
    return (mel_lengths - 1) // 2 + 1


def _valid(lengths: jax.Array, t: int) -> jax.Array:
    return jnp.arange(t)[None, :] < lengths[:, None]


class AudioEncoder(nnx.Module):
    def __init__(self, n_mels: int, d: int, heads: int, ffn: int, layers: int, max_positions: int, *,
                 dtype=jnp.float32, scan_layers: bool = True, remat: str = "none", rngs: nnx.Rngs):
        self.dtype = dtype
        self.conv1 = Conv1d(n_mels, d, 3, padding=1, dtype=dtype, rngs=rngs)
        self.conv2 = Conv1d(d, d, 3, stride=2, padding=1, dtype=dtype, rngs=rngs)
        table = jnp.asarray(whisper_sinusoids(max_positions, d))
        self.positional_embedding = FixedTable(table, logical_axes=(None, "embed"))
        self.transformer = WhisperStack(d, heads, ffn, layers, causal=False, dtype=dtype,
                                        scan_layers=scan_layers, remat=remat, rngs=rngs)

    @classmethod
    def from_config(cls, m, *, rngs: nnx.Rngs) -> AudioEncoder:
        """From the tokenizer `model` config section."""
        return cls(m.n_mels, m.d_model, m.encoder_heads, m.encoder_ffn, m.encoder_layers,
                   m.max_source_positions, dtype=jnp.dtype(m.dtype), scan_layers=m.scan_layers,
                   remat=m.remat, rngs=rngs)

    def __call__(self, mel: jax.Array, mel_lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
        """mel [B, T, n_mels] (zeros past each length) -> (features [B, ceil(T/2), d] fp32, enc_lengths)."""
        b, t, _ = mel.shape
        mel = jnp.where(_valid(mel_lengths, t)[..., None], mel, 0.0)
        h = gelu_exact(self.conv1(mel))
        h = jnp.where(_valid(mel_lengths, t)[..., None], h, 0.0)
        h = gelu_exact(self.conv2(h)).astype(jnp.float32)
        lengths = encoder_lengths(mel_lengths)
        t2 = h.shape[1]
        table = self.positional_embedding[...]
        if t2 > table.shape[0]:
            raise ValueError(f"encoder input of {t2} frames exceeds the {table.shape[0]} positions "
                             f"({table.shape[0] * 2 // 100} s of audio); split the audio or raise "
                             "model.max_source_positions")
        h = constrain(h + table[:t2], ("batch", "length", "embed"))
        return self.transformer(h, _valid(lengths, t2)), lengths

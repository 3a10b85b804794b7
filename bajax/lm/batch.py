"""The batch contract between the data pipeline and the audio LLM.

A batch is a dict of arrays with a leading batch dimension B and a packed length T. The data pipeline
alone decides what is trained (INTLV / ITTS masking lives in the loss weights); the model never looks at
task names. Targets are already shifted: row b, position t holds what the model must predict from the
prefix ending at t, so packing can restart every segment without the model knowing where segments end.

| key            | dtype   | shape       | meaning |
|----------------|---------|-------------|---------|
| tokens         | int32   | [B, T]      | input text ids; audio frames carry the id `audio_pad` |
| audio_codes    | int32   | [B, T, 8]   | input codes of the frame at t (valid where tokens == audio_pad, else 0) |
| positions      | int32   | [B, T]      | RoPE positions, restarting at 0 in each packed segment |
| segment_ids    | int32   | [B, T]      | 1, 2, ... per packed sample; 0 marks padding. Attention stays in a segment |
| text_targets   | int32   | [B, T]      | next text id predicted at t |
| text_weights   | float32 | [B, T]      | loss weight of text_targets (0 = no loss) |
| audio_targets  | int32   | [B, T, 8]   | next frame's codes; codebook 0 = cb_0 means end-of-audio |
| audio_weights  | float32 | [B, T, 8]   | loss weight per codebook (an end-of-audio target weighs codebook 0 only) |

`audio_targets` also feed the depth transformer of the audio head (teacher forcing); targets under a zero
weight may hold any valid code (the pipeline writes 0).
"""

from __future__ import annotations

import numpy as np

NUM_CODEBOOKS = 8

FIELDS: dict[str, tuple[type, tuple[str, ...]]] = {
    "tokens": (np.int32, ("batch", "length")),
    "audio_codes": (np.int32, ("batch", "length", None)),
    "positions": (np.int32, ("batch", "length")),
    "segment_ids": (np.int32, ("batch", "length")),
    "text_targets": (np.int32, ("batch", "length")),
    "text_weights": (np.float32, ("batch", "length")),
    "audio_targets": (np.int32, ("batch", "length", None)),
    "audio_weights": (np.float32, ("batch", "length", None)),
}


def shapes(batch_size: int, seq_len: int, num_codebooks: int = NUM_CODEBOOKS) -> dict[str, tuple[int, ...]]:
    """Shapes of every field for a batch of `batch_size` rows of `seq_len` tokens."""
    out = {}
    for key, (_, axes) in FIELDS.items():
        out[key] = (batch_size, seq_len) + ((num_codebooks,) if len(axes) == 3 else ())
    return out


def empty(batch_size: int, seq_len: int, num_codebooks: int = NUM_CODEBOOKS) -> dict[str, np.ndarray]:
    """An all-padding batch (segment 0 everywhere, zero weights)."""
    return {k: np.zeros(s, FIELDS[k][0]) for k, s in shapes(batch_size, seq_len, num_codebooks).items()}


def check(batch: dict, num_codebooks: int = NUM_CODEBOOKS) -> None:
    """Raises a ValueError naming the field when a batch breaks the contract."""
    missing = set(FIELDS) - set(batch)
    if missing:
        raise ValueError(f"LM batch lacks fields {sorted(missing)}; expected {sorted(FIELDS)}")
    b, t = np.shape(batch["tokens"])
    for key, want in shapes(b, t, num_codebooks).items():
        if tuple(np.shape(batch[key])) != want:
            raise ValueError(f"LM batch field {key!r} has shape {np.shape(batch[key])}, expected {want}")

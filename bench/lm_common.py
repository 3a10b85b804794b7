"""Shared pieces of the LM benchmarks: the synthetic batch, timing, and the matmul peak probe.

The synthetic batch follows the contract of `bajax.lm.batch` and looks like packed pre-training data:
each row holds two segments (so the segment mask matters), the first ~40% of each segment is text and
the rest audio frames, text positions carry text loss and audio positions audio loss on all 8 codebooks.
The same numpy arrays feed the JAX and the PyTorch runs.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from bajax.lm import special_tokens


def synthetic_batch(batch_size: int, seq_len: int, vocab: str, vocab_size: int, codebook_sizes, seed: int = 0):
    rng = np.random.default_rng(seed)
    audio_pad = special_tokens.ids_for(vocab, vocab_size)["audio_pad"]
    b, t = batch_size, seq_len
    cuts = seq_len // 2 + rng.integers(-seq_len // 8, seq_len // 8 + 1, size=b)
    idx = np.arange(t)[None, :]
    seg = np.where(idx < cuts[:, None], 1, 2).astype(np.int32)
    start = np.where(seg == 1, 0, cuts[:, None])
    pos = (idx - start).astype(np.int32)
    seg_len = np.where(seg == 1, cuts[:, None], t - cuts[:, None])
    is_audio = pos >= (0.4 * seg_len).astype(np.int32)
    tokens = rng.integers(0, min(256, vocab_size), size=(b, t)).astype(np.int32)
    tokens = np.where(is_audio, audio_pad, tokens).astype(np.int32)
    cb = np.asarray(codebook_sizes)[None, None, :]
    codes = (rng.integers(0, 1 << 30, size=(b, t, len(codebook_sizes))) % cb).astype(np.int32)
    audio_codes = np.where(is_audio[..., None], codes, 0).astype(np.int32)
    targets = (rng.integers(0, 1 << 30, size=(b, t, len(codebook_sizes))) % cb).astype(np.int32)
    return {
        "tokens": tokens,
        "audio_codes": audio_codes,
        "positions": pos,
        "segment_ids": seg,
        "text_targets": rng.integers(0, min(256, vocab_size), size=(b, t)).astype(np.int32),
        "text_weights": (~is_audio).astype(np.float32),
        "audio_targets": np.where(is_audio[..., None], targets, 0).astype(np.int32),
        "audio_weights": np.broadcast_to(is_audio[..., None], (b, t, len(codebook_sizes))).astype(np.float32),
    }


def time_calls(fn, repeats: int, warmup: int = 1) -> dict:
    """Wall times of `fn()` (which must block until done): best and median of `repeats` after warm-up."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"best_s": min(times), "median_s": statistics.median(times), "times_s": [round(x, 4) for x in times]}

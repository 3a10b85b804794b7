"""Bootstrap quantiser: residual k-means codes for the embedded corpus before any tokenizer is trained.

NOT the Baichuan tokenizer. It gives the LM real, speech-derived 8-codebook codes at the tokenizer's frame
rate (12.5 Hz) so the tiny LM run trains out of the box; a trained tokenizer replaces it (re-run
`bajax prepare --tokenizer ...`). Features: the Whisper log-mel (128 bins, 100 Hz; bajax.audio.mel),
8 frames per code frame averaged in pairs -> 4 x 128 = 512 numbers, standardised per dimension. Codes:
8 levels of k-means (seeded, numpy), each on the residual of the previous levels. Frame count follows
the tokenizer: `mel_len = n // 160`, `enc_len = (mel_len - 1) // 2 + 1`, `frames = ceil(enc_len / 4)`.
"""

from __future__ import annotations

import io

import numpy as np

from bajax.audio import mel as mel_lib

NAME = "bootstrap-rkmeans-v1"
SAMPLES_PER_FRAME = 1280  # 16 kHz / 12.5 Hz


def num_frames(num_samples: int) -> int:
    mel_len = num_samples // 160
    enc_len = (mel_len - 1) // 2 + 1 if mel_len > 0 else 0
    return -(-enc_len // 4)


def features(wave16: np.ndarray) -> np.ndarray:
    """[frames, 512] float32 log-mel features of a 16 kHz waveform, one row per 12.5 Hz frame."""
    frames = num_frames(len(wave16))
    if frames == 0:
        return np.zeros((0, 512), np.float32)
    logmel = np.asarray(mel_lib.whisper_log_mel(np.asarray(wave16, np.float32)), np.float32)  # [T, 128]
    need = frames * 8
    if len(logmel) < need:  # pad by repeating the last frame, as the tokenizer pads to whole frames
        logmel = np.concatenate([logmel, np.repeat(logmel[-1:], need - len(logmel), axis=0)])
    x = logmel[:need].reshape(frames, 4, 2, 128).mean(axis=2)
    return x.reshape(frames, 512)


def _sqdist(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    return (x * x).sum(1, keepdims=True) - 2.0 * x @ c.T + (c * c).sum(1)[None]


def _kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iters: int) -> np.ndarray:
    centres = x[rng.choice(len(x), size=k, replace=len(x) < k)].copy()
    for _ in range(iters):
        assign = _sqdist(x, centres).argmin(1)
        counts = np.bincount(assign, minlength=k)
        sums = np.zeros_like(centres)
        np.add.at(sums, assign, x)
        empty = counts == 0
        centres[~empty] = sums[~empty] / counts[~empty, None]
        # A dead centre restarts on a random point so every code gets used.
        centres[empty] = x[rng.choice(len(x), size=int(empty.sum()))]
    return centres


class BootstrapQuantiser:
    """Residual k-means over `features`; `encode(wave16) -> int32 [frames, 8]`."""

    def __init__(self, codebooks: list[np.ndarray], mean: np.ndarray, std: np.ndarray):
        self.codebooks = [np.asarray(c, np.float32) for c in codebooks]
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        self.codebook_sizes = tuple(len(c) for c in self.codebooks)
        self.name = NAME

    @classmethod
    def fit(cls, feats: np.ndarray, codebook_sizes=(64,) * 8, *, seed: int = 0, iters: int = 15):
        """Fits on stacked features [N, 512] (concatenate `features(w)` over a training set)."""
        rng = np.random.default_rng(seed)
        mean, std = feats.mean(0), feats.std(0) + 1e-3
        r = (feats - mean) / std
        books = []
        for k in codebook_sizes:
            c = _kmeans(r, int(k), rng, iters)
            r = r - c[_sqdist(r, c).argmin(1)]
            books.append(c)
        return cls(books, mean, std)

    def encode(self, wave16: np.ndarray) -> np.ndarray:
        r = (features(wave16) - self.mean) / self.std
        codes = np.zeros((len(r), len(self.codebooks)), np.int32)
        for i, c in enumerate(self.codebooks):
            codes[:, i] = _sqdist(r, c).argmin(1)
            r = r - c[codes[:, i]]
        return codes

    __call__ = encode

    def residual_error(self, wave16: np.ndarray, levels: int) -> float:
        """Mean squared standardised residual after `levels` levels (falls as levels grow)."""
        r = (features(wave16) - self.mean) / self.std
        for c in self.codebooks[:levels]:
            r = r - c[_sqdist(r, c).argmin(1)]
        return float((r * r).mean())

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        arrays = {f"codebook_{i}": c.astype(np.float16) for i, c in enumerate(self.codebooks)}
        np.savez_compressed(buf, mean=self.mean, std=self.std, name=np.array(NAME), **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> BootstrapQuantiser:
        with np.load(io.BytesIO(data)) as z:
            if str(z["name"]) != NAME:
                raise ValueError(f"quantiser file holds {z['name']!r}, expected {NAME!r}")
            n = sum(1 for k in z.files if k.startswith("codebook_"))
            return cls([z[f"codebook_{i}"] for i in range(n)], z["mean"], z["std"])

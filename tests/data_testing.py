"""Tiny synthetic manifests and encoders for the tests (no synthesiser, milliseconds to build)."""

from __future__ import annotations

import json

import numpy as np

from bajax.audio import io as audio_io

CODEBOOK_SIZES = (16,) * 8


class FakeEncoder:
    """Deterministic stand-in for a tokenizer: codes from per-frame energies, `frames = ceil(n / 1280)`."""

    name = "fake-energy-codes"
    codebook_sizes = CODEBOOK_SIZES

    def __call__(self, wave16: np.ndarray) -> np.ndarray:
        frames = -(-len(wave16) // 1280)
        x = np.pad(wave16, (0, frames * 1280 - len(wave16))).reshape(frames, 8, 160)
        e = np.sqrt((x * x).mean(-1) + 1e-9)
        return (np.floor(e * 997 * np.arange(1, 9)) % np.asarray(self.codebook_sizes)).astype(np.int32)


def tone(seconds: float, freq: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    return (
        0.3 * np.sin(2 * np.pi * freq * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
        + 0.01 * rng.standard_normal(len(t))
    ).astype(np.float32)


def write_manifest(root: str, *, per_task: int = 3, valid: int = 1, seg_seconds=(0.6, 0.9, 0.7)) -> str:
    """Writes audio files and a manifest with `per_task` train (+ `valid`) samples of every task."""
    lines = []
    k = 0
    for task in ("asr", "aqa", "s2tt", "intlv", "tts", "itts", "audio"):
        for j in range(per_task + valid):
            k += 1
            n = 3 if task in ("intlv", "itts") else 1
            durs = seg_seconds[:n] if n > 1 else seg_seconds[j % len(seg_seconds) :][:1]
            waves, segs, t = [], [], 0.0
            for i, d in enumerate(durs):
                waves += [tone(d, 200 + 40 * i + 7 * k, seed=k), np.zeros(1600, np.float32)]
                segs.append(
                    {
                        "audio": 0,
                        "start": round(t, 4),
                        "end": round(t + d, 4),
                        "text": f"{task} sample {j} part {i}.",
                    }
                )
                t += d + 0.1
            sr = 22050 if k % 2 else 16000  # exercise resampling
            wave = np.concatenate(waves)
            if sr != 16000:
                from bajax.audio.resample import resample

                wave = resample(wave, 16000, sr)
            name = f"audio/{task}-{j}.{'wav' if k % 3 else 'flac'}"
            audio_io.write(f"{root}/{name}", wave, sr)
            row = {
                "id": f"{task}-{j}",
                "task": task,
                "language": "en",
                "audio": name,
                "segments": segs,
                "split": "valid" if j >= per_task else "train",
            }
            if task in ("aqa", "s2tt"):
                row["response"] = f"answer {j}"
            lines.append(json.dumps(row))
    path = f"{root}/manifest.jsonl"
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path

"""Many files through the tokenizer: audio -> RVQ codes .npy (`encode_files`) and codes -> mel .npy + PNG
(`decode_files`), the cores of `bajax encode` / `bajax decode` (bajax/cli/tokenizer.py).

Each returns one `FileResult` per input: a bad file (unreadable audio, codes of the wrong shape or out of
range) gets its error, named with the file, and the others go on. Other outputs (e.g. a vocoder's wav next
to the mel) can be added around them.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Sequence

import numpy as np


@dataclasses.dataclass
class FileResult:
    source: str
    outputs: dict[str, str] = dataclasses.field(default_factory=dict)   # kind ('codes', 'mel', 'png') -> path
    error: str | None = None
    frames: int = 0


def _out_path(out_dir: str, source: str, suffix: str) -> str:
    return os.path.join(out_dir, os.path.splitext(os.path.basename(source))[0] + suffix)


def _progress(items, desc: str, show: bool):
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="file", disable=not show, file=sys.stderr)


def encode_files(paths: Sequence[str], checkpoint: str, out_dir: str, *, progress: bool = True) -> list[FileResult]:
    """Each audio file -> OUT_DIR/<stem>.npy, int32 codes [frames, n_codebooks] (12.5 Hz)."""
    from bajax.audio import io
    from bajax.models.tokenizer import load_encode_fn

    encode = load_encode_fn(checkpoint)
    os.makedirs(out_dir, exist_ok=True)
    results = []
    for path in _progress(paths, "encode", progress):
        r = FileResult(path)
        try:
            codes = encode(io.load(path, 16000))
        except (io.AudioError, ValueError) as e:
            r.error = str(e) if path in str(e) else f"{path}: {e}"
        else:
            r.outputs["codes"] = _out_path(out_dir, path, ".npy")
            np.save(r.outputs["codes"], codes.astype(np.int32))
            r.frames = int(codes.shape[0])
        results.append(r)
    return results


def read_codes(path: str, codebook_sizes: Sequence[int]) -> np.ndarray:
    """A codes .npy as int32 [frames, m] (m <= n codebooks), or a ValueError naming the file and the fix."""
    try:
        codes = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path}: cannot read a codes .npy file ({e}); pass the output of `bajax encode`") from e
    if codes.ndim != 2 or not 1 <= codes.shape[1] <= len(codebook_sizes) or codes.shape[0] == 0:
        raise ValueError(f"{path}: codes must have shape [frames, <= {len(codebook_sizes)}] with frames >= 1, "
                         f"got {codes.shape}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"{path}: codes must be integers, got dtype {codes.dtype}")
    for i in range(codes.shape[1]):
        lo, hi = int(codes[:, i].min()), int(codes[:, i].max())
        if lo < 0 or hi >= codebook_sizes[i]:
            raise ValueError(f"{path}: codebook {i} holds ids in [{lo}, {hi}] but has {codebook_sizes[i]} codes; "
                             "were these codes made by a different tokenizer?")
    return codes.astype(np.int32)


def save_mel_png(mel: np.ndarray, path: str, title: str = "") -> None:
    """mel [frames, bins] as an image (time right, frequency up), Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, min(16.0, mel.shape[0] / 40)), 3), dpi=100)
    im = ax.imshow(mel.T, origin="lower", aspect="auto", interpolation="nearest", cmap="magma")
    ax.set(xlabel="frame (16 ms)", ylabel="mel bin", title=title)
    fig.colorbar(im, ax=ax, label="log magnitude")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def load_decoder(checkpoint: str) -> tuple[Callable[[np.ndarray], np.ndarray], tuple[int, ...]]:
    """(codes [frames, m] -> refined mel [mel frames, 80] numpy, codebook sizes) of a tokenizer run."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from bajax import runs

    tok = runs.load(checkpoint, "tokenizer", model_overrides={"loss.align_weight": 0.0}, flag="tokenizer").model
    graphdef, state = nnx.split(tok)

    @jax.jit
    def decode(state, codes):
        # One utterance, unpadded: the decoder's GroupNorm then sees exactly this utterance.
        out = nnx.merge(graphdef, state).decode(codes[None], jnp.array([codes.shape[0]], jnp.int32))
        return out["refined_mel"][0], out["mel_lengths"][0]

    def run(codes: np.ndarray) -> np.ndarray:
        mel, n = decode(state, jnp.asarray(codes))
        return np.asarray(mel[: int(n)])

    return run, tok.bridge.rvq.codebook_sizes


def decode_files(paths: Sequence[str], checkpoint: str, out_dir: str, *, png: bool = True,
                 progress: bool = True, decoder=None) -> list[FileResult]:
    """Each codes .npy -> OUT_DIR/<stem>.npy (refined mel [frames, 80], 62.5 Hz) and <stem>.png.
    `decoder`: a `load_decoder(checkpoint)` result to reuse."""
    decode, sizes = decoder or load_decoder(checkpoint)
    os.makedirs(out_dir, exist_ok=True)
    results = []
    for path in _progress(paths, "decode", progress):
        r = FileResult(path)
        try:
            codes = read_codes(path, sizes)
        except ValueError as e:
            r.error = str(e)
            results.append(r)
            continue
        mel = decode(codes)
        r.frames = int(mel.shape[0])
        r.outputs["mel"] = _out_path(out_dir, path, ".npy")
        np.save(r.outputs["mel"], mel.astype(np.float32))
        if png:
            r.outputs["png"] = _out_path(out_dir, path, ".png")
            save_mel_png(mel, r.outputs["png"], title=os.path.basename(path))
        results.append(r)
    return results


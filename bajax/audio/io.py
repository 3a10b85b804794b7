"""Waveform I/O: soundfile (wav, flac, ogg, mp3) through `etils.epath` (local, gs://, s3://) and fsspec
for the other URL schemes epath does not know (memory:// in tests).

`load(path, sr)` returns a mono float32 waveform at the requested rate (stereo is averaged; other rates
are resampled with soxr). Problems raise `AudioError` with a `reason` the data preparation counts:
'missing', 'corrupt', 'truncated', 'empty', 'nan'.
"""

from __future__ import annotations

import io
import re

import fsspec
import numpy as np
import soundfile as sf
from etils import epath

from bajax.audio.resample import resample


class AudioError(ValueError):
    """An unusable audio file; `reason` is a short key used in rejection counts."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _is_fsspec_only(path: str) -> bool:
    scheme = path.split("://", 1)[0] + "://" if "://" in path else ""
    return bool(scheme) and scheme not in ("gs://", "s3://", "file://")


def read_bytes(path: str | epath.Path) -> bytes:
    """Bytes of a local, gs://, s3:// or other fsspec URL."""
    path = str(path)
    if _is_fsspec_only(path):
        with fsspec.open(path, "rb") as f:
            return f.read()
    return epath.Path(path).read_bytes()


def write_bytes(path: str | epath.Path, data: bytes) -> None:
    path = str(path)
    if _is_fsspec_only(path):
        with fsspec.open(path, "wb") as f:
            f.write(data)
        return
    p = epath.Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


def _wav_shortfall(data: bytes) -> int:
    """Bytes missing from a RIFF/WAVE data chunk (libsndfile silently reads a cut-off wav as shorter)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return 0
    pos = 12
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if data[pos : pos + 4] == b"data":
            return max(0, size - (len(data) - pos - 8)) if size != 0xFFFFFFFF else 0
        pos += 8 + size + (size & 1)
    return 0


def read(path: str | epath.Path) -> tuple[np.ndarray, int]:
    """Reads a file as (mono float32 waveform [n], sample rate). Validates length and values."""
    p = str(path)
    try:
        data = read_bytes(p)
    except FileNotFoundError as e:
        raise AudioError("missing", f"audio file not found: {p}") from e
    except OSError as e:
        raise AudioError("missing", f"cannot read audio file {p}: {e}") from e
    if _wav_shortfall(data):
        raise AudioError(
            "truncated",
            f"audio file {p} is truncated: its wav data chunk lacks "
            f"{_wav_shortfall(data)} bytes; re-export the file",
        )
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            declared = f.frames
            sr = f.samplerate
            wave = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, EOFError) as e:
        # libsndfile's message names the in-memory buffer (`<_io.BytesIO object at 0x...>`): use its bare
        # error string, or put the file's path in the buffer's place.
        detail = getattr(e, "error_string", None) or re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", p, str(e))
        raise AudioError(
            "corrupt",
            f"cannot decode audio file {p} (corrupt or truncated): {detail}; re-encode it as wav or flac",
        ) from e
    # libsndfile returns what it could decode from a cut-off file; a short read means truncation.
    if declared > 0 and wave.shape[0] < declared:
        raise AudioError(
            "truncated",
            f"audio file {p} is truncated: header says {declared} frames, only {wave.shape[0]} decode",
        )
    if wave.shape[0] == 0:
        raise AudioError("empty", f"audio file {p} has no samples")
    if not np.all(np.isfinite(wave)):
        raise AudioError("nan", f"audio file {p} contains NaN or infinite samples")
    return wave.mean(axis=1).astype(np.float32), int(sr)


def load(path: str | epath.Path, sr: int) -> np.ndarray:
    """Mono float32 waveform of `path` at `sr` Hz."""
    wave, sr_in = read(path)
    return resample(wave, sr_in, sr)


def write(path: str | epath.Path, wave: np.ndarray, sr: int, *, subtype: str | None = None) -> None:
    """Writes a mono waveform; the format follows the suffix (.wav, .flac, .ogg, .mp3)."""
    suffix = str(path).rsplit(".", 1)[-1] if "." in str(path).rsplit("/", 1)[-1] else "wav"
    buf = io.BytesIO()
    sf.write(buf, np.asarray(wave, dtype=np.float32), sr, format=suffix.upper(), subtype=subtype)
    write_bytes(path, buf.getvalue())

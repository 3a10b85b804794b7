"""Streaming safetensors I/O without torch: one tensor in memory at a time.

Writer: the names, shapes and dtypes of every tensor are known before any data is produced (layouts compute
torch shapes from checkpoint metadata), so shards and byte offsets are planned up front, each shard's
header is written first and the tensors are then appended in plan order as they are produced. Above
`max_shard_bytes` the output is split into `model-0000i-of-0000n.safetensors` plus
`model.safetensors.index.json` (the Hugging Face convention); otherwise one `model.safetensors`.

Reader: a directory (with or without an index) or a file; `get(name)` seeks to that tensor and reads its
bytes only. bf16/f16 tensors are upcast to float32 (bajax parameters are fp32).
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

import ml_dtypes
import numpy as np

DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
          "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
CODES = {np.dtype(v): k for k, v in DTYPES.items()}
INDEX = "model.safetensors.index.json"


class ShardedWriter:
    """`plan` = [(name, shape, dtype)] in write order; call `write(name, array)` in that same order."""

    def __init__(self, out_dir: str | Path, plan: Sequence[tuple[str, tuple[int, ...], np.dtype]], *,
                 max_shard_bytes: int, metadata: dict[str, str] | None = None):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        names = [p[0] for p in plan]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"duplicate tensor names in the export plan: {dup}")
        sizes = [math.prod(shape) * np.dtype(dtype).itemsize for _, shape, dtype in plan]
        shards, cur, cur_bytes = [], [], 0
        for item, size in zip(plan, sizes, strict=True):
            if cur and cur_bytes + size > max_shard_bytes:   # a tensor larger than the limit gets its own shard
                shards.append(cur)
                cur, cur_bytes = [], 0
            cur.append((item, size))
            cur_bytes += size
        if cur:
            shards.append(cur)
        n = len(shards)
        self.files = (["model.safetensors"] if n == 1 else
                      [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)])
        self.total_bytes = sum(sizes)
        self.metadata = {"format": "pt", **(metadata or {})}
        self._shards = shards
        self._order = [(i, item) for i, shard in enumerate(shards) for item, _ in shard]
        self._pos = 0
        self._handle = None
        self._shard = -1
        self.weight_map = {item[0]: self.files[i] for i, item in self._order}

    def _open(self, i: int) -> None:
        if self._handle is not None:
            self._handle.close()
        header, offset = {"__metadata__": self.metadata}, 0
        for (name, shape, dtype), size in self._shards[i]:
            header[name] = {"dtype": CODES[np.dtype(dtype)], "shape": list(shape),
                            "data_offsets": [offset, offset + size]}
            offset += size
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)                     # 8-byte aligned data, as safetensors writes it
        self._handle = open(self.out_dir / self.files[i], "wb")  # noqa: SIM115  (closed by close())
        self._handle.write(struct.pack("<Q", len(blob)) + blob)
        self._shard = i

    def write(self, name: str, array: np.ndarray) -> None:
        if self._pos >= len(self._order):
            raise ValueError(f"tensor {name!r} was not in the export plan")
        shard, (want, shape, dtype) = self._order[self._pos]
        if name != want or tuple(array.shape) != tuple(shape) or array.dtype != np.dtype(dtype):
            raise ValueError(f"export wrote {name} {array.shape} {array.dtype}, the plan expected "
                             f"{want} {tuple(shape)} {np.dtype(dtype)}")
        if shard != self._shard:
            self._open(shard)
        # Row blocks: a transposed view is copied ~64 MB at a time, never as a whole second tensor.
        rows = np.atleast_1d(array)
        step = max(1, (64 << 20) // max(1, rows[:1].nbytes))
        for start in range(0, len(rows), step):
            # Bytes via a uint8 view: the buffer protocol has no code for bfloat16.
            self._handle.write(memoryview(np.ascontiguousarray(rows[start:start + step]).reshape(-1).view(np.uint8)))
        self._pos += 1

    def close(self) -> list[str]:
        if self._handle is not None:
            self._handle.close()
        if self._pos != len(self._order):
            missing = [item[0] for _, item in self._order[self._pos:]][:5]
            raise ValueError(f"export stopped before writing {len(self._order) - self._pos} tensors, e.g. {missing}")
        if len(self.files) > 1:
            index = {"metadata": {"total_size": self.total_bytes}, "weight_map": self.weight_map}
            (self.out_dir / INDEX).write_text(json.dumps(index, indent=2))
        return self.files


def _header(path: Path) -> tuple[dict, int]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)), 8 + n


class Reader:
    """Lazy access to the tensors of a safetensors file or directory (`model.safetensors.index.json`
    when present, else every `*.safetensors` in it), and of the `extra` files (an export's companions)."""

    def __init__(self, src: str | Path, extra: Sequence[Path] = ()):
        src = Path(src)
        files = safetensors_files(src)
        if not files or not all(f.is_file() for f in files):
            raise FileNotFoundError(f"{src}: no safetensors files (expected model.safetensors, or shards with "
                                    f"{INDEX})")
        self.src = src
        self._where: dict[str, tuple[Path, dict, int]] = {}
        for f in [*files, *extra]:
            header, start = _header(f)
            for name, info in header.items():
                if name != "__metadata__":
                    self._where[name] = (f, info, start)

    def keys(self) -> list[str]:
        return list(self._where)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._where[name][1]["shape"])

    def dtype_code(self, name: str) -> str:
        """The stored dtype ('BF16', 'F32', ...), without reading the tensor."""
        return self._where[name][1]["dtype"]

    def get(self, name: str, dtype=np.float32) -> np.ndarray:
        if name not in self._where:
            close = [k for k in self._where if k.rsplit(".", 2)[-2:] == name.rsplit(".", 2)[-2:]][:3]
            raise KeyError(f"tensor {name!r} is not in {self.src}" + (f" (similar: {close})" if close else ""))
        path, info, start = self._where[name]
        begin, end = info["data_offsets"]
        with open(path, "rb") as f:
            f.seek(start + begin)
            data = f.read(end - begin)
        a = np.frombuffer(data, DTYPES[info["dtype"]]).reshape(info["shape"])
        return a.astype(dtype) if dtype is not None and a.dtype != dtype else a.copy()

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)


def safetensors_files(src: Path) -> list[Path]:
    """A file, or a directory's files: those its index names, else every `*.safetensors` in it."""
    if not src.is_dir():
        return [src]
    if (src / INDEX).is_file():
        return sorted({src / f for f in json.loads((src / INDEX).read_text())["weight_map"].values()})
    return sorted(src.glob("*.safetensors"))


def total_bytes(out_dir: str | Path) -> int:
    return sum(os.path.getsize(p) for p in Path(out_dir).glob("*.safetensors"))


TORCH_SUFFIXES = (".pt", ".pth", ".bin")


class TorchFileReader:
    """The tensors of a PyTorch state-dict file (`torch.save(model.state_dict())`, e.g. CosyVoice's hift.pt),
    read with `torch.load(weights_only=True)`: plain tensors only, never arbitrary pickled objects. The
    file is read whole (state dicts saved this way are not lazily readable); same interface as `Reader`."""

    def __init__(self, src: str | Path):
        src = Path(src)
        if not src.is_file():
            raise FileNotFoundError(f"{src}: no such file")
        try:
            import torch
        except ImportError:
            raise ValueError(f"{src}: reading a PyTorch .pt file needs torch (pip install 'bajax[torch]'), or "
                             "convert it to safetensors first") from None
        try:
            state = torch.load(src, map_location="cpu", weights_only=True)
        except Exception as e:   # an unpickling refusal or a damaged file: one line naming it
            raise ValueError(f"{src}: not a PyTorch state dict of plain tensors ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200]})") from e
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{src}: expected a state dict {{name: tensor}}, got {type(state).__name__}")
        self.src = src
        self._tensors = {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy()
                         for k, v in state.items()}

    def keys(self) -> list[str]:
        return list(self._tensors)

    def __contains__(self, name: str) -> bool:
        return name in self._tensors

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._tensors[name].shape)

    def get(self, name: str, dtype=np.float32) -> np.ndarray:
        if name not in self._tensors:
            raise KeyError(f"tensor {name!r} is not in {self.src}")
        a = self._tensors[name]
        return a.astype(dtype) if dtype is not None and a.dtype != dtype else a.copy()

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)


def open_reader(src: str | Path) -> Reader | TorchFileReader:
    """A safetensors file or directory, or a PyTorch state-dict file (by its suffix)."""
    return TorchFileReader(src) if str(src).endswith(TORCH_SUFFIXES) else Reader(src)

"""Binary record format of the prepared ArrayRecord shards: a JSON header followed by raw numpy buffers.

Layout: 4-byte little-endian header length, UTF-8 JSON header `{"meta": {...}, "arrays": {name: [dtype,
shape, offset, nbytes]}}`, then the concatenated array bytes. No pickle (records may come from anywhere),
no compression (ArrayRecord reads are the hot path), zero-copy decoding with `np.frombuffer`.
"""

from __future__ import annotations

import json

import numpy as np


def encode(meta: dict, arrays: dict[str, np.ndarray] | None = None) -> bytes:
    """Serialises JSON-able `meta` plus named numpy arrays into one record."""
    arrays = arrays or {}
    table, chunks, offset = {}, [], 0
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        table[name] = [arr.dtype.str, list(arr.shape), offset, arr.nbytes]
        chunks.append(arr.tobytes())
        offset += arr.nbytes
    header = json.dumps({"meta": meta, "arrays": table}, ensure_ascii=False).encode("utf-8")
    return len(header).to_bytes(4, "little") + header + b"".join(chunks)


def decode(record: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """Inverse of `encode`: (meta, arrays). Arrays are read-only views of the record bytes."""
    n = int.from_bytes(record[:4], "little")
    header = json.loads(record[4 : 4 + n].decode("utf-8"))
    body = memoryview(record)[4 + n :]
    arrays = {}
    for name, (dtype, shape, offset, nbytes) in header["arrays"].items():
        arrays[name] = np.frombuffer(body[offset : offset + nbytes], dtype=np.dtype(dtype)).reshape(shape)
    return header["meta"], arrays

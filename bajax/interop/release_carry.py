"""What a run imported from a release carries beside its checkpoint, so that its export is bitwise the release.

RUN/release/ holds
  carried.safetensors   the tensors bajax does not compute with, exactly as the release stored them: the
                        audio head's six FFN biases (never added by the reference) and the flow Pre-Net's
                        position table (registered, never added; bajax would regenerate it 2.4e-4 away)
  dtypes.json           {tensor name: safetensors dtype} of every tensor of this component in the release,
                        so a bf16 release is written back in bf16 (exact: the fp32 values came from bf16)
  config.json           the release's config.json, verbatim (fields bajax does not map come back unchanged)
  files/                (LM run only) the release's other files: text tokenizer, generation config, remote code

`bajax export` of such a run (and `bajax export-release`) uses them through `Carried.of(run)`: a carried
tensor is written instead of the layout's constant (in the release's shape); every tensor takes the
release's dtype. A run started from an imported one (`train.init_from`) uses that run's RUN/release/.
Runs trained from scratch have none and export as before.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bajax.interop.entries import Const
from bajax.interop.safetensors_io import CODES, DTYPES, Reader, ShardedWriter

DIR = "release"
TENSORS = "carried.safetensors"


def carried_entries(entries) -> list:
    """The entries whose tensor bajax does not compute with (the layout writes a constant for them)."""
    return [e for e in entries if isinstance(e.rule, Const)]


def save(run_dir: str, reader, entries, *, config: dict | None = None) -> dict:
    """RUN/release/{carried.safetensors, dtypes.json[, config.json]} from the release `reader`; returns
    {carried tensor name: shape}."""
    out = Path(run_dir) / DIR
    out.mkdir(parents=True, exist_ok=True)
    consts = [e.name for e in carried_entries(entries) if e.name in reader]
    plan = [(n, reader.shape(n), DTYPES[_code(reader, n)]) for n in consts]
    if plan:
        writer = ShardedWriter(out / "tmp", plan, max_shard_bytes=1 << 62, metadata={"bajax": "carried"})
        for n in consts:
            writer.write(n, reader.get(n, dtype=None))
        writer.close()
        (out / "tmp" / "model.safetensors").replace(out / TENSORS)
        (out / "tmp").rmdir()
    dtypes = {e.name: _code(reader, e.name) for e in entries if e.name in reader}
    (out / "dtypes.json").write_text(json.dumps(dtypes, indent=0))
    if config is not None:
        (out / "config.json").write_text(json.dumps(config, indent=2))
    return {n: reader.shape(n) for n in consts}


def _code(reader, name: str) -> str:
    return reader.dtype_code(name) if hasattr(reader, "dtype_code") else CODES[np.dtype(reader.get(name, None).dtype)]


class Carried:
    """The carried tensors and dtypes of one run (`of` returns None for a run not imported from a release)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.reader = Reader(folder / TENSORS) if (folder / TENSORS).is_file() else None
        path = folder / "dtypes.json"
        self.dtypes = json.loads(path.read_text()) if path.is_file() else {}

    @classmethod
    def of(cls, run_dir, depth: int = 8) -> Carried | None:
        """The run's RUN/release/, else that of the run its `train.init_from` started from (a fine-tune of an
        imported release exports like the release), following init_from up to `depth` runs."""
        run = Path(str(run_dir))
        if "://" in str(run_dir) or depth <= 0:
            return None
        if (run / DIR).is_dir():
            return cls(run / DIR)
        try:
            init_from = json.loads((run / "config.json").read_text())["train"]["init_from"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not init_from:
            return None
        parent = Path(init_from)
        return cls.of(parent.parent if parent.name == "checkpoints" else parent, depth - 1)

    def config(self) -> dict | None:
        path = self.folder / "config.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def dtype(self, name: str, default):
        """The release's dtype of `name` (default: the exported checkpoint's own)."""
        return np.dtype(DTYPES[self.dtypes[name]]) if name in self.dtypes else np.dtype(default)

    def _has(self, entry) -> bool:
        return self.reader is not None and isinstance(entry.rule, Const) and entry.name in self.reader

    def shape(self, entry, default) -> tuple[int, ...]:
        """A carried constant keeps the release's shape (e.g. a Pre-Net table of prenet_max_source_positions)."""
        return self.reader.shape(entry.name) if self._has(entry) else tuple(default)

    def tensor(self, entry, computed: np.ndarray, dtype) -> np.ndarray:
        """The tensor to write for `entry`: the carried one for a carried constant, else `computed`; in `dtype`."""
        if self._has(entry):
            computed = self.reader.get(entry.name, dtype=None)
        return computed if computed.dtype == dtype else computed.astype(dtype)

"""Where prepared data lives: the `data.source` directory, or the embedded corpus prepared into a cache."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from importlib import resources

from etils import epath

from bajax.data import manifest as manifest_lib

CORPUS_MANIFEST = "manifest.jsonl"
# The chat SFT example (bajax/data/chat_corpus.py): dialogues over the corpus audio, data.source='embedded-chat'.
CHAT_MANIFEST = "chat.jsonl"
EMBEDDED = {"embedded": CORPUS_MANIFEST, "embedded-chat": CHAT_MANIFEST}
CORPUS_QUANTISER = "bootstrap_quantiser.npz"


class DataSourceError(FileNotFoundError):
    """`data.source` names no prepared directory; the one-line message names the path and the fix."""


def corpus_dir() -> epath.Path:
    """The embedded corpus inside the installed package."""
    return epath.Path(str(resources.files("bajax.data") / "corpus"))


def _cache_root(cache_dir: str) -> epath.Path:
    if cache_dir:
        return epath.Path(cache_dir)
    return epath.Path(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))) / "bajax"


def prepare_embedded(cache_dir: str = "", *, workers: int = 2, progress: bool = False,
                     manifest_name: str = CORPUS_MANIFEST) -> epath.Path:
    """Prepares the embedded corpus (with its bootstrap-quantiser codes) once; returns the shard directory.
    `manifest_name`: the corpus manifest, or CHAT_MANIFEST for the chat SFT example (same audio, same codes).

    The cache key hashes the manifest, the quantiser and the record format, so a changed corpus (or a bajax
    that writes other records) is prepared afresh.
    """
    from bajax.data import prepare as prepare_lib
    from bajax.data.bootstrap_codes import BootstrapQuantiser

    src = corpus_dir()
    manifest = src / manifest_name
    if not manifest.exists():
        raise FileNotFoundError(
            f"the embedded corpus is missing ({manifest}); reinstall bajax or run "
            "scripts/make_corpus.py, or set data.source to a prepared directory"
        )
    qbytes = (src / CORPUS_QUANTISER).read_bytes()
    key = hashlib.sha256(manifest.read_bytes() + qbytes + f"v{prepare_lib.FORMAT_VERSION}".encode()).hexdigest()[:16]
    out = _cache_root(cache_dir) / f"{'corpus' if manifest_name == CORPUS_MANIFEST else 'chat'}-{key}"
    if (out / "summary.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # Several processes (pytest-xdist workers, the hosts of a pod sharing a disk) may start at once: one
    # prepares, the others wait on the lock and then find the finished directory.
    with open(f"{out}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "summary.json").exists():
            prepare_lib.prepare(
                str(manifest),
                str(out),
                encode_fn=BootstrapQuantiser.from_bytes(qbytes),
                workers=workers,
                progress=progress,
            )
    return out


def resolve(data_cfg) -> epath.Path:
    """The prepared directory for `data.source` ('embedded', 'embedded-chat' or a path)."""
    if data_cfg.source in EMBEDDED:
        return prepare_embedded(data_cfg.cache_dir, manifest_name=EMBEDDED[data_cfg.source])
    root = epath.Path(data_cfg.source)
    if not root.exists():
        raise DataSourceError(
            f"data.source={data_cfg.source!r}: no such directory; prepare it with `bajax prepare --manifest "
            f"M.jsonl --out {data_cfg.source}`, fix the path, or use --config.data.source=embedded"
        )
    if not (root / "prepared.json").exists():
        raise DataSourceError(
            f"data.source={data_cfg.source!r} has no prepared.json; run "
            f"`bajax prepare --manifest M.jsonl --out {data_cfg.source}` first"
        )
    return root


def info(root: epath.Path) -> dict:
    return json.loads((root / "prepared.json").read_text())


def shard_paths(root: epath.Path, split: str, task: str, kind: str) -> list[str]:
    """Sorted shard files of one split/task; kind is 'lm' or 'audio'."""
    d = root / split / task
    if not d.exists():
        return []
    return sorted(str(p) for p in d.glob(f"shard-*.{kind}.array_record"))


def check_codebooks(root: epath.Path, codebook_sizes) -> None:
    """Raises a clear error unless the shards hold codes made for the model's codebook sizes."""
    codes = info(root).get("codes")
    if not codes:
        raise ValueError(
            f"{root} was prepared without codes; the LM needs them: re-run `bajax prepare "
            "--tokenizer CKPT` (or use data.source='embedded')"
        )
    want, have = [int(s) for s in codebook_sizes], codes["codebook_sizes"]
    if want != have:
        raise ValueError(
            f"codebook sizes differ: the model config has {want} but {root} holds codes of "
            f"{codes['quantiser']!r} with sizes {have}; set the model's codebook_sizes to {have} "
            "or re-prepare the data with a matching tokenizer"
        )


TASKS = manifest_lib.TASKS

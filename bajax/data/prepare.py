"""`bajax prepare`: manifest JSONL -> validated ArrayRecord shards (16 and 24 kHz waves, 24 kHz mels, text, codes).

Output directory layout:
    DIR/prepared.json                            format version, codes source (quantiser, codebook sizes)
    DIR/summary.json                             hours and sample counts per split/task, rejections by reason
    DIR/<split>/<task>/shard-00000.lm.array_record     one record per sample: texts + per-segment codes
    DIR/<split>/<task>/shard-00000.audio.array_record  one record per distinct audio span: wave16, wave24,
                                                       mel24, codes, text
    DIR/<split>/<task>/shard-00000.json          done marker: input hash, counts (written last)
LM records exist only when an encoder is given (LLM training never decodes audio). Workers (spawned
processes) decode, check and resample audio; the main process runs `encode_fn` (it may hold a model on an
accelerator) and writes the shards. A shard whose marker matches the hash of its inputs is skipped, so an
interrupted or repeated run does only the missing work. Rejected samples are counted by reason and the
first messages of each reason are printed and kept in summary.json.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import hashlib
import json
import multiprocessing
import os
import sys

import numpy as np
from etils import epath

from bajax.data import manifest as manifest_lib
from bajax.data import records

FORMAT_VERSION = 2   # 2: audio records hold wave24 (the vocoder's target)
MIN_SEGMENT_SAMPLES = 1280  # one 12.5 Hz code frame at 16 kHz


class PrepareInputError(ValueError):
    """A usage or input error (missing manifest, --out a file, bad --tokenizer): `bajax prepare` prints the
    one-line message and exits 2."""


def _int16(wave: np.ndarray) -> np.ndarray:
    return np.clip(np.round(wave * 32767), -32768, 32767).astype(np.int16)


def _process_entry(entry: manifest_lib.Entry, max_seconds: float, emit: tuple[bool, ...]):
    """Loads one sample's segments -> dict, or raises AudioError/ManifestError with a reason."""
    from bajax.audio import io as audio_io
    from bajax.audio import mel as mel_lib
    from bajax.audio.resample import resample

    waves = {}
    for idx in sorted({s.audio for s in entry.segments}):
        try:
            wave, sr = audio_io.read(entry.audio[idx])
        except audio_io.AudioError as e:
            raise audio_io.AudioError(
                e.reason, f"sample {entry.id!r} (manifest line {entry.line}): {e}"
            ) from e
        waves[idx] = (resample(wave, sr, 16000), resample(wave, sr, 24000))
    for i, s in enumerate(entry.segments):
        dur = len(waves[s.audio][0]) / 16000
        end = dur if s.end is None else s.end
        if end > dur + 0.05:
            raise manifest_lib.ManifestError(
                "bad_span",
                f"sample {entry.id!r} (line {entry.line}) segment {i} ends "
                f"at {end:.2f} s but {entry.audio[s.audio]} lasts {dur:.2f} s",
            )
    # After the span check: a span past the end of its file is `bad_span`, not `too_long`.
    total = sum(
        ((s.end if s.end is not None else len(waves[s.audio][0]) / 16000) - s.start) for s in entry.segments
    )
    if total > max_seconds:
        raise manifest_lib.ManifestError(
            "too_long",
            f"sample {entry.id!r} (line {entry.line}) has {total:.1f} s "
            f"of audio, over the limit {max_seconds} s "
            "(prepare --max-audio-seconds); split it",
        )
    segs = []
    for i, s in enumerate(entry.segments):
        w16, w24 = waves[s.audio]
        end = len(w16) / 16000 if s.end is None else s.end
        a16, b16 = round(s.start * 16000), min(round(end * 16000), len(w16))
        a24, b24 = round(s.start * 24000), min(round(end * 24000), len(w24))
        seg16, seg24 = w16[a16:b16], w24[a24:b24]
        if len(seg16) < MIN_SEGMENT_SAMPLES:
            raise manifest_lib.ManifestError(
                "empty_audio",
                f"sample {entry.id!r} (line {entry.line}) segment {i} has {len(seg16)} samples (< 80 ms)",
            )
        if not np.any(seg16):
            raise manifest_lib.ManifestError(
                "empty_audio", f"sample {entry.id!r} (line {entry.line}) segment {i} is all zeros"
            )
        segs.append(
            {
                "wave16": _int16(seg16),
                "wave24": _int16(seg24) if emit[i] else None,   # the vocoder's target waveform
                "mel24": mel_lib.flow_mel_24k(seg24).astype(np.float32) if emit[i] else None,
                "seconds": len(seg16) / 16000,
            }
        )
    return segs


def segment_key(entry: manifest_lib.Entry, seg: manifest_lib.Segment) -> tuple:
    return (entry.audio[seg.audio], seg.start, seg.end)


def load_shard(entries: list[manifest_lib.Entry], max_seconds: float, emit):
    """Worker: [(entry, segments)] for good samples and [(reason, message)] for rejected ones.

    `emit[j][i]` says whether segment i of entry j gets an audio record here (its first use in the
    manifest); the 24 kHz mel is computed only for those.
    """
    from bajax.audio.io import AudioError

    good, bad = [], []
    for e, flags in zip(entries, emit, strict=True):
        try:
            good.append((e, _process_entry(e, max_seconds, flags)))
        except (AudioError, manifest_lib.ManifestError) as err:
            bad.append((err.reason, str(err)))
    return good, bad


def _shard_hash(entries, emit, encoder_id: str, max_seconds: float) -> str:
    h = hashlib.sha256(f"v{FORMAT_VERSION}|{encoder_id}|{max_seconds}|{emit}".encode())
    for e in entries:
        h.update(json.dumps(dataclasses.asdict(e), sort_keys=True).encode())
    return h.hexdigest()[:20]


def _write(path: epath.Path, recs: list[bytes]) -> None:
    from array_record.python.array_record_module import ArrayRecordWriter

    tmp = str(path) + ".tmp"
    writer = ArrayRecordWriter(tmp, "group_size:1")
    for r in recs:
        writer.write(r)
    writer.close()
    os.replace(tmp, str(path))


class EncodeError(ValueError):
    """One audio span the encoder could not turn into codes; its sample is rejected as `encode_failed`."""

    reason = "encode_failed"


def _encode(encode_fn, wave16: np.ndarray, sizes, where: str) -> np.ndarray:
    """Codes [frames, 8] of one span. A span longer than the encoder's window (`encode_fn.max_samples`,
    from the tokenizer's `max_source_positions`, see bajax/tokenizer/encode.py) is split into non-overlapping
    chunks of whole windows, each a multiple of 1280 samples (one 80 ms code frame), and their codes are
    concatenated: frame k of the result still covers samples [1280 k, 1280 (k + 1)), so a long span gets
    exactly the 12.5 Hz codes an unbounded encoder would count (only the encoder's attention context stops
    at chunk edges). Splitting keeps the usable long samples that --max-audio-seconds (default 120 s)
    admits, instead of rejecting everything over the 30 s Whisper window."""
    wave = wave16.astype(np.float32) / 32767.0
    window = getattr(encode_fn, "max_samples", None)
    if window is not None and window < MIN_SEGMENT_SAMPLES:
        raise EncodeError(f"the encoder's window ({window} samples) is shorter than one code frame; {where}")
    step = window or max(1, len(wave))  # the whole span at once unless the encoder has a window
    parts = []
    for a in range(0, len(wave), step):
        chunk = wave[a : a + step]
        try:
            codes = np.asarray(encode_fn(chunk))
        except (ValueError, RuntimeError, FloatingPointError) as e:
            raise EncodeError(f"cannot encode {where} ({len(wave) / 16000:.1f} s): {e}") from e
        if codes.ndim != 2 or codes.shape[1] != 8:
            raise EncodeError(f"encode_fn returned shape {codes.shape} for {where}; expected [frames, 8]")
        parts.append(codes)
    codes = np.concatenate(parts, axis=0)
    if sizes is not None and (codes.min() < 0 or np.any(codes.max(0) >= np.asarray(sizes))):
        raise EncodeError(f"encode_fn returned codes outside the codebook sizes {sizes} for {where}")
    return codes.astype(np.int16 if max(sizes or (1 << 15,)) <= 32767 else np.int32)


def _finish_shard(base: epath.Path, good, bad, encode_fn, sizes, codes_name, key, cache: dict) -> dict:
    """Encodes (each distinct audio segment once, via `cache`) and writes one shard's files + marker."""
    lm_recs, audio_recs = [], []
    counts = {"samples": 0, "segments": 0, "seconds": 0.0, "audio_records": 0}
    bad = list(bad)
    for entry, segs in good:
        codes = []
        try:
            for i, s in enumerate(segs):
                k = segment_key(entry, entry.segments[i])
                if encode_fn and k not in cache:
                    try:
                        cache[k] = _encode(encode_fn, s["wave16"], sizes, f"sample {entry.id!r} segment {i}")
                    except EncodeError as e:
                        cache[k] = e  # a span shared by later samples fails once
                if isinstance(cache.get(k), EncodeError):
                    raise cache[k]
                codes.append(cache.get(k))
        except EncodeError as e:  # one bad sample is counted and skipped; the run goes on
            bad.append((e.reason, f"{e} (manifest line {entry.line})"))
            continue
        texts = [s.text for s in entry.segments]
        meta = {
            "id": entry.id,
            "task": entry.task,
            "language": entry.language,
            "texts": texts,
            "prompt": entry.prompt,
            "response": entry.response,
            "response_language": entry.response_language,
            "quantiser": codes_name,
        }
        if entry.turns:   # chat: the turns, whose parts index this record's codes_<i>
            from bajax.data import chat

            meta["turns"] = chat.to_meta(entry.turns)
        if encode_fn:
            lm_recs.append(records.encode(meta, {f"codes_{i}": c for i, c in enumerate(codes)}))
        for i, s in enumerate(segs):
            counts["segments"] += 1
            counts["seconds"] += s["seconds"]
            if s["mel24"] is None:  # this span already has its audio record in an earlier shard
                continue
            arrays = {"wave16": s["wave16"], "wave24": s["wave24"], "mel24": s["mel24"]}
            if encode_fn:
                arrays["codes"] = codes[i]
            audio_recs.append(
                records.encode(
                    {
                        "id": f"{entry.id}/{i}",
                        "sample": entry.id,
                        "task": entry.task,
                        "language": entry.language,
                        "text": texts[i],
                        "quantiser": codes_name,
                    },
                    arrays,
                )
            )
            counts["audio_records"] += 1
        counts["samples"] += 1
    if encode_fn:
        _write(epath.Path(str(base) + ".lm.array_record"), lm_recs)
    _write(epath.Path(str(base) + ".audio.array_record"), audio_recs)
    marker = {"hash": key, **counts, "rejected": bad, "has_codes": bool(encode_fn)}
    epath.Path(str(base) + ".json").write_text(json.dumps(marker, ensure_ascii=False))
    return marker


def prepare(
    manifest: str,
    out: str,
    *,
    encode_fn=None,
    codes_name: str | None = None,
    codebook_sizes=None,
    workers: int = 2,
    samples_per_shard: int = 64,
    max_audio_seconds: float = 120.0,
    progress: bool = True,
) -> dict:
    """Prepares `manifest` into `out`; returns the summary dict (also written to out/summary.json).

    encode_fn: `wave16k float32 [n] -> int [frames, 8]` codes (a tokenizer or the bootstrap quantiser);
    its `name` and `codebook_sizes` attributes are used when `codes_name` / `codebook_sizes` are not given.
    """
    out_dir = epath.Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise PrepareInputError(f"--out {out} is an existing file, not a directory; pass a directory path")
    try:
        entries, manifest_rejects = manifest_lib.read(manifest)
    except manifest_lib.ManifestFileError as e:
        raise PrepareInputError(f"--manifest: {e}") from e
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PrepareInputError(f"--out {out}: cannot create the directory ({e}); pass a writable path") from e
    codes_name = codes_name or (getattr(encode_fn, "name", type(encode_fn).__name__) if encode_fn else None)
    sizes = codebook_sizes or getattr(encode_fn, "codebook_sizes", None)
    sizes = tuple(int(s) for s in sizes) if sizes is not None else None
    encoder_id = f"{codes_name}:{sizes}"
    groups = collections.defaultdict(list)
    for e in entries:
        groups[(e.split, e.task)].append(e)
    jobs, seen = [], set()  # (base path, entries, emit flags, hash)
    for (split, task), items in sorted(groups.items()):
        (out_dir / split / task).mkdir(parents=True, exist_ok=True)
        for n, start in enumerate(range(0, len(items), samples_per_shard)):
            chunk = items[start : start + samples_per_shard]
            # A span shared by several samples (one recording as asr, tts, ...) gets one audio record.
            emit = []
            for e in chunk:
                keys = [segment_key(e, s) for s in e.segments]
                emit.append(tuple(k not in seen for k in keys))
                seen.update(keys)
            jobs.append(
                (
                    out_dir / split / task / f"shard-{n:05d}",
                    chunk,
                    emit,
                    _shard_hash(chunk, emit, encoder_id, max_audio_seconds),
                )
            )
    markers, pending, cache = {}, [], {}
    for base, chunk, emit, key in jobs:
        marker_path = epath.Path(str(base) + ".json")
        if marker_path.exists() and json.loads(marker_path.read_text()).get("hash") == key:
            markers[str(base)] = json.loads(marker_path.read_text())
        else:
            pending.append((base, chunk, emit, key))
    bar = _progress(len(pending), progress)
    if workers > 0 and len(pending) > 1:
        ctx = multiprocessing.get_context("spawn")  # fork after JAX/threads is unsafe
        with cf.ProcessPoolExecutor(min(workers, len(pending)), mp_context=ctx) as pool:
            futures = {
                pool.submit(load_shard, chunk, max_audio_seconds, emit): (base, key)
                for base, chunk, emit, key in pending
            }
            for fut in cf.as_completed(futures):
                base, key = futures[fut]
                markers[str(base)] = _finish_shard(
                    base, *fut.result(), encode_fn, sizes, codes_name, key, cache
                )
                bar.update(1)
    else:
        for base, chunk, emit, key in pending:
            markers[str(base)] = _finish_shard(
                base, *load_shard(chunk, max_audio_seconds, emit), encode_fn, sizes, codes_name, key, cache
            )
            bar.update(1)
    bar.close()
    info = {
        "format_version": FORMAT_VERSION,
        "codes": {"quantiser": codes_name, "codebook_sizes": list(sizes) if sizes else None}
        if encode_fn
        else None,
    }
    (out_dir / "prepared.json").write_text(json.dumps(info, indent=1))
    summary = _summary(markers, manifest_rejects, len(jobs) - len(pending), len(jobs))
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    return summary


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total, desc="prepare shards", unit="shard", disable=not enabled or total == 0, file=sys.stderr
    )


def _summary(markers: dict, manifest_rejects, skipped: int, total: int) -> dict:
    tasks = collections.defaultdict(lambda: {"samples": 0, "segments": 0, "hours": 0.0})
    rejected = collections.Counter(r for r, _ in manifest_rejects)
    examples = collections.defaultdict(list)
    for reason, msg in manifest_rejects:
        examples[reason].append(msg)
    for base, m in markers.items():
        split, task = epath.Path(base).parent.parent.name, epath.Path(base).parent.name
        t = tasks[f"{split}/{task}"]
        t["samples"] += m["samples"]
        t["segments"] += m["segments"]
        t["hours"] += m["seconds"] / 3600
        for reason, msg in m["rejected"]:
            rejected[reason] += 1
            examples[reason].append(msg)
    return {
        "tasks": dict(sorted(tasks.items())),
        "rejected": dict(rejected),
        "rejected_examples": {k: v[:5] for k, v in examples.items()},
        "shards": {"total": total, "skipped_done": skipped, "written": total - skipped},
    }


def format_summary(summary: dict) -> str:
    lines = [f"{'split/task':<16}{'samples':>9}{'segments':>10}{'hours':>9}"]
    for name, t in summary["tasks"].items():
        lines.append(f"{name:<16}{t['samples']:>9}{t['segments']:>10}{t['hours']:>9.3f}")
    total_h = sum(t["hours"] for t in summary["tasks"].values())
    lines.append(
        f"{'total':<16}{sum(t['samples'] for t in summary['tasks'].values()):>9}{'':>10}{total_h:>9.3f}"
    )
    s = summary["shards"]
    lines.append(f"shards: {s['written']} written, {s['skipped_done']} already done (of {s['total']})")
    if summary["rejected"]:
        lines.append(
            "REJECTED samples by reason: " + ", ".join(f"{k}={v}" for k, v in summary["rejected"].items())
        )
        for reason, msgs in summary["rejected_examples"].items():
            lines.extend(f"  [{reason}] {m}" for m in msgs)
    else:
        lines.append("rejected: none")
    return "\n".join(lines)


def load_encoder(path: str):
    """`--tokenizer PATH` -> encode_fn: a bootstrap quantiser (.npz), or the run directory of a trained
    tokenizer (`bajax train --config configs/tokenizer/...`), loaded by `bajax.tokenizer.encode`."""
    if str(path).endswith(".npz"):
        from bajax.audio.io import read_bytes
        from bajax.data.bootstrap_codes import BootstrapQuantiser

        try:
            return BootstrapQuantiser.from_bytes(read_bytes(path))
        except (OSError, ValueError) as e:
            raise PrepareInputError(f"--tokenizer {path}: cannot load the bootstrap quantiser ({e})") from e
    from bajax.models.tokenizer import load_encode_fn

    try:
        return load_encode_fn(path)   # its `max_samples` is the encoder window `_encode` splits long spans at
    except (FileNotFoundError, ValueError) as e:
        raise PrepareInputError(f"--tokenizer {path}: {e}") from e


def add_prepare_args(parser) -> None:
    parser.add_argument("--manifest", required=True, help="JSONL manifest (schema: bajax/data/manifest.py)")
    parser.add_argument("--out", required=True, help="output directory for the ArrayRecord shards")
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer checkpoint (or bootstrap quantiser .npz) to pre-compute 8-codebook codes",
    )
    parser.add_argument("--workers", type=int, default=2, help="audio decoding processes (0 = in-process)")
    parser.add_argument("--samples-per-shard", type=int, default=64)
    parser.add_argument(
        "--max-audio-seconds",
        type=float,
        default=120.0,
        help="samples with more audio than this are rejected",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def kept_samples(summary: dict) -> int:
    return sum(t["samples"] for t in summary["tasks"].values())


def run_prepare(args) -> int:
    """`bajax prepare`; returns the exit code: 0 ok, 1 nothing usable written (every sample rejected or an
    empty manifest), 2 usage/input error (message on stderr, nothing written)."""
    try:
        encode_fn = load_encoder(args.tokenizer) if args.tokenizer else None
        summary = prepare(
            args.manifest,
            args.out,
            encode_fn=encode_fn,
            workers=args.workers,
            samples_per_shard=args.samples_per_shard,
            max_audio_seconds=args.max_audio_seconds,
            progress=not args.no_progress,
        )
    except PrepareInputError as e:
        print(f"bajax prepare: {e}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    if not kept_samples(summary):
        n = sum(summary["rejected"].values())
        print(
            f"bajax prepare: no usable sample was written to {args.out} ({n} rejected); fix the inputs "
            "named above and run it again",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    import argparse

    _parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_prepare_args(_parser)
    sys.exit(run_prepare(_parser.parse_args()))

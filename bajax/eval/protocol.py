"""The evaluation protocol shared by every `bajax eval` command: which utterances, how each row is scored, and
how bad input is accounted for.

Utterances. A manifest in the project's schema (`bajax.data.manifest`; default: the embedded corpus) is read,
the rows of one split are kept (default "valid": documents never trained on), and every distinct segment
(file, start, end, transcript) of their rows becomes one utterance, in manifest order, with the segment's transcript
and the row's language, prompt and response. The embedded corpus lists the same recording under several
tasks (asr, tts, ...); it is scored once. `limit` keeps the first N.

Rows. Each utterance is one row of the per-utterance table. A row whose input is unusable (its audio file
missing or undecodable, an empty span, an empty reference text where the command needs one) is an ERROR row:
listed with its reason and message, counted under `rows.failed` and `rows.failures` in results.json, and left
out of the means, which state how many rows they average. A manifest line that does not even parse is an
error row too (id "line N"). A metric that cannot be computed for an otherwise good row (PESQ finding no
utterance, F0 RMSE with no voiced frame in common) is NaN in that row, and the metric's `n` says how many rows
its mean covers. Audio at another sample rate than the protocol's is resampled (bajax.audio.resample) and
counted under `rows.resampled`, with the file's rate in the row's `source_sr` column.

Reproducibility. Every model call is seeded (--seed) and every metric deterministic up to floating-point
noise in the last digits (numpy's SIMD reductions depend on memory alignment); per-row values are rounded to
9 significant digits, so the same command gives the same results.json.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

SPLITS = ("valid", "train", "all")


class RowError(ValueError):
    """An unusable input row; `reason` is the key under which results.json counts it."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Utterance:
    id: str
    audio: str                 # the file
    start: float               # seconds
    end: float | None          # seconds; None = the end of the file
    text: str                  # the segment's transcript ("" when the manifest gives none)
    language: str
    task: str
    prompt: str = ""
    response: str = ""
    response_language: str = ""


def default_manifest() -> str:
    from bajax.data import sources

    return str(sources.corpus_dir() / sources.CORPUS_MANIFEST)


def read_utterances(manifest: str | None = None, split: str = "valid", limit: int = 0,
                    language: str = "") -> tuple[list[Utterance], list[dict]]:
    """(utterances, error rows of manifest lines that do not parse). `split` "all" keeps every split;
    `language` (e.g. "en") keeps only rows of that language; `limit` > 0 keeps the first `limit`."""
    from bajax.data import manifest as manifest_lib

    if split not in SPLITS:
        raise ValueError(f"--split {split!r}: one of {SPLITS}")
    path = manifest or default_manifest()
    entries, rejects = manifest_lib.read(path)
    bad = [error_row(_line_id(message), reason, f"{path}: {message}") for reason, message in rejects]
    utterances, seen = [], set()
    for entry in entries:
        if split != "all" and entry.split != split or language and entry.language != language:
            continue
        many = len(entry.segments) > 1
        for i, seg in enumerate(entry.segments):
            key = (entry.audio[seg.audio], seg.start, seg.end, seg.text)
            if key in seen:
                continue
            seen.add(key)
            utterances.append(Utterance(
                id=f"{entry.id}#{i}" if many else entry.id, audio=entry.audio[seg.audio], start=seg.start,
                end=seg.end, text=seg.text, language=entry.language or "en", task=entry.task,
                prompt=entry.prompt, response=entry.response,
                response_language=entry.response_language or entry.language or "en"))
    if limit > 0:
        utterances = utterances[:limit]
    if not utterances and not bad:
        raise ValueError(f"manifest {path} has no {split!r} rows" + (f" in language {language!r}" if language
                                                                      else "") + "; pass --split or --manifest")
    return utterances, bad


def _line_id(message: str) -> str:
    """"line N" from a manifest reject message ("line 12 (id ...): ...")."""
    head = message.split(":", 1)[0]
    return head.split(" (", 1)[0] if head.startswith("line ") else "manifest"


def load_audio(utt: Utterance, sr: int) -> tuple[np.ndarray, int]:
    """(the utterance's span as mono float32 at `sr` Hz, the file's own rate); RowError when unusable."""
    from bajax.audio import io as audio_io
    from bajax.audio.resample import resample

    try:
        wave, source_sr = audio_io.read(utt.audio)
    except audio_io.AudioError as e:
        reason = "missing_audio" if getattr(e, "reason", "") == "missing" else "bad_audio"
        raise RowError(reason, str(e)) from None
    a = int(round(utt.start * source_sr))
    b = len(wave) if utt.end is None else min(len(wave), int(round(utt.end * source_sr)))
    if b - a < source_sr // 100:
        raise RowError("empty_audio", f"{utt.audio}: the span [{utt.start}, {utt.end}] s holds "
                                      f"{max(b - a, 0)} samples (file length {len(wave) / source_sr:.2f} s)")
    return np.asarray(resample(wave[a:b], source_sr, sr), np.float32), int(source_sr)


def need_text(utt: Utterance, field: str = "text") -> str:
    text = getattr(utt, field).strip()
    if not text:
        raise RowError("empty_text", f"{utt.id}: the reference {field} is empty; this command needs one "
                                     "(fix the manifest row or drop it)")
    return text


def error_row(uid: str, reason: str, message: str) -> dict:
    return {"id": uid, "status": "error", "reason": reason, "error": message}


def measure(row: dict, name: str, fn: Callable[[], float]) -> None:
    """row[name] = fn(), or NaN with the reason in row["notes"] when the metric cannot be computed here."""
    try:
        row[name] = float(fn())
    except ValueError as e:
        row[name] = math.nan
        row["notes"] = "; ".join(filter(None, [row.get("notes", ""), f"{name}: {e}"]))


def score_rows(utterances: list[Utterance], score: Callable[[Utterance], list[dict]], *,
               progress: Callable[[str], None] | None = None) -> list[dict]:
    """Rows of `score(utterance)` (one or more dicts of metrics and columns per utterance, each with "id"
    and "status": "ok" added), or one error row when it raises RowError."""
    rows = []
    for i, utt in enumerate(utterances):
        try:
            got = score(utt)
        except RowError as e:
            got = [error_row(utt.id, e.reason, str(e))]
        else:
            got = [{"id": utt.id, "status": "ok", **{k: _rounded(v) for k, v in r.items()}} for r in got]
        rows.extend(got)
        if progress:
            progress(f"[{i + 1}/{len(utterances)}] {utt.id}: " + ", ".join(
                f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in got[-1].items()
                if k not in ("id", "notes", "error", "text", "hypothesis", "reply_text")))
    return rows


def _rounded(value):
    """Floats to 9 significant digits. The metric libraries' numpy reductions pick SIMD paths by the memory
    alignment of their arrays, so the same input can differ in the 16th digit from call to call (pystoi's
    ESTOI does); 9 digits keep every meaningful one and make results.json identical from run to run."""
    return float(f"{value:.9g}") if isinstance(value, float) and math.isfinite(value) else value


# -- summaries -------------------------------------------------------------------------------------------

def t_quantile_975(dof: int) -> float:
    """The 97.5% quantile of Student's t with `dof` degrees of freedom (scipy)."""
    from scipy import stats

    return float(stats.t.ppf(0.975, dof))


def mean_ci(values) -> dict:
    """{"mean", "ci95": [lo, hi], "n"} of the finite values: the Student-t 95% confidence interval of the mean,
    mean +- t(0.975, n-1) * s / sqrt(n) with the sample standard deviation s; None where n < 2."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], np.float64)
    if x.size == 0:
        return {"mean": None, "ci95": None, "n": 0}
    mean = float(x.mean())
    if x.size < 2:
        return {"mean": mean, "ci95": None, "n": 1}
    half = t_quantile_975(x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": int(x.size)}


def metric_names(rows: list[dict], metrics: tuple[str, ...]) -> list[str]:
    return [m for m in metrics if any(m in r for r in rows)]


def summarise(rows: list[dict], metrics: tuple[str, ...], group: str = "") -> dict:
    """{metric: mean_ci} over the ok rows, or {group value: {metric: mean_ci}} when `group` names a column."""
    ok = [r for r in rows if r["status"] == "ok"]
    names = metric_names(ok, metrics)
    if not group:
        return {m: mean_ci(r.get(m) for r in ok) for m in names}
    groups = list(dict.fromkeys(r[group] for r in ok))
    return {str(g): {m: mean_ci(r.get(m) for r in ok if r[group] == g) for m in names} for g in groups}


def row_counts(utterances: int, manifest_errors: int, rows: list[dict], sample_rate: int) -> dict:
    """Rows asked for (utterances + unparsable manifest lines), scored, failed (by reason), and the scored
    utterances whose audio was resampled to the protocol's `sample_rate`."""
    failed = [r for r in rows if r["status"] == "error"]
    reasons: dict[str, int] = {}
    for r in failed:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    ok_ids = {r["id"] for r in rows if r["status"] == "ok"}
    resampled = {r["id"] for r in rows if r["status"] == "ok" and r.get("source_sr") not in (None, sample_rate)}
    return {"total": utterances + manifest_errors, "scored": len(ok_ids), "failed": len(failed),
            "failures": dict(sorted(reasons.items())), "resampled": len(resampled)}

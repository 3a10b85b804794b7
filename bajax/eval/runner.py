"""The frame of every `bajax eval` command: read the utterances, score each (bad input becomes a counted error
row), summarise, and write results.json / utterances.csv / results.md / results.png (bajax.eval.report).

A command supplies `score(utterance) -> [row dict]` and the names of its metrics; the protocol (which rows,
how failures count, the confidence intervals) is `bajax.eval.protocol`'s and the same for all of them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from bajax.eval import protocol, report
from bajax.eval.quality import estoi, pesq_wb, stoi
from bajax.eval.spectral import mel_l1, mr_stft_distance

# Intrusive reconstruction metrics of a 24 kHz estimate against its reference (codec and vocoder).
RECONSTRUCTION = ("mel_l1", "mr_stft", "pesq_wb", "stoi", "estoi")
DEFINITIONS = {
    "mel_l1": "mean |log-mel difference| on bajax.audio.mel.flow_mel_24k (80 bins, natural log); lower is better",
    "mr_stft": "multi-resolution STFT distance (spectral convergence + log-magnitude L1, Parallel WaveGAN's "
               "3 resolutions); lower is better",
    "pesq_wb": "wide-band PESQ (ITU-T P.862.2) at 16 kHz, 1.04-4.64; higher is better",
    "stoi": "STOI (Taal et al. 2011), ~0-1; higher is better",
    "estoi": "extended STOI (Jensen & Taal 2016), ~0-1; higher is better",
    "f0_rmse": "F0 RMSE in Hz over frames voiced in both (YIN, 20 ms grid); lower is better",
    "voicing_error": "fraction of frames whose voiced/unvoiced decision differs; lower is better",
    "tokenizer_mel_l1": "mean |refined mel - target mel| of the tokenizer's own decoder (its training target "
                        "mel, greedy codes of the first k layers): the eval_mel_mae of training",
    "wer": "word error rate of the recognised speech (per utterance; 'corpus' holds the corpus-level rate)",
    "cer": "character error rate of the recognised speech",
    "speaker_sim": "cosine of Resemblyzer d-vectors of the output and the reference utterance, 0-1",
    "dnsmos_ovrl": "DNSMOS P.835 overall quality, 1-5 (non-intrusive)",
    "dnsmos_sig": "DNSMOS P.835 speech signal quality, 1-5",
    "dnsmos_bak": "DNSMOS P.835 background noise quality, 1-5",
    "dnsmos_p808": "DNSMOS P.808 rating, 1-5",
    "seconds": "duration of the output audio",
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """The flags every `bajax eval` command shares."""
    out: str                          # directory for the four result files
    manifest: str | None = None       # default: the embedded corpus
    split: str = "valid"
    limit: int = 0                    # first N utterances (0 = all)
    language: str = ""                # keep rows of this language only ("" = all)
    seed: int = 0
    quiet: bool = False
    argv: tuple[str, ...] | None = None   # the command line to record (default: sys.argv)


def reconstruction(row: dict, ref, est, sr: int, *, f0: bool = False) -> None:
    """The RECONSTRUCTION metrics (and F0 RMSE / voicing error with `f0`) of est against ref into row."""
    protocol.measure(row, "mel_l1", lambda: mel_l1(ref, est))
    protocol.measure(row, "mr_stft", lambda: mr_stft_distance(ref, est))
    protocol.measure(row, "pesq_wb", lambda: pesq_wb(ref, est, sr))
    protocol.measure(row, "stoi", lambda: stoi(ref, est, sr))
    protocol.measure(row, "estoi", lambda: estoi(ref, est, sr))
    if f0:
        from bajax.eval.f0 import f0_rmse, voicing_error

        protocol.measure(row, "f0_rmse", lambda: f0_rmse(ref, est, sr))
        protocol.measure(row, "voicing_error", lambda: voicing_error(ref, est, sr))


def evaluate(task: str, settings: Settings, *, score: Callable[[protocol.Utterance], list[dict]],
             metrics: tuple[str, ...], models: dict, sample_rate: int, recognizer: str | None = None,
             group_by: str = "", corpus: Callable[[list[dict]], dict] | None = None,
             protocol_notes: dict | None = None) -> tuple[dict, dict]:
    """Runs `score` over the settings' utterances and writes the result files; (results, {file: path})."""
    t0 = time.perf_counter()
    utterances, manifest_errors = protocol.read_utterances(settings.manifest, settings.split, settings.limit,
                                                           settings.language)
    say = None if settings.quiet else (lambda line: print(line, flush=True))
    rows = manifest_errors + protocol.score_rows(utterances, score, progress=say)
    names = tuple(m for m in metrics if any(m in r for r in rows))
    results = {
        "task": task,
        "command": report.command_line(None if settings.argv is None else list(settings.argv)),
        "manifest": settings.manifest or protocol.default_manifest(),
        "split": settings.split,
        "language": settings.language or "all",
        "limit": settings.limit,
        "models": models,
        "recognizer": recognizer,
        "seeds": {"seed": settings.seed},
        "protocol": {"sample_rate": sample_rate, **(protocol_notes or {}),
                     "definitions": {m: DEFINITIONS[m] for m in names if m in DEFINITIONS},
                     "ci95": "Student-t interval of the mean over utterances (scipy.stats.t)"},
        "rows": protocol.row_counts(len(utterances), len(manifest_errors), rows, sample_rate),
        "metrics": None if group_by else protocol.summarise(rows, names),
        "group_by": group_by or None,
        "groups": protocol.summarise(rows, names, group_by) if group_by else None,
        "corpus": corpus(rows) if corpus else None,
        "errors": [{k: r[k] for k in ("id", "reason", "error")} for r in rows if r["status"] == "error"],
        "versions": report.versions(),
    }
    paths = report.write(settings.out, results, rows, seconds=time.perf_counter() - t0, metrics=names)
    return results, paths

"""Data pipeline throughput; prints one JSON object.

    python bench/data.py [--source embedded|DIR] [--batches 30] [--batch-size 8] [--seq-len 1024]

Figures: LM pipeline samples/s (packed rows/s and source samples/s) and tokens/s (non-padding tokens),
audio pipelines audio-seconds/s for the tokenizer and flow batches; all host-side, after a warm-up batch.
The train-step consumption rates (added by the trainer) tell whether the input pipeline can keep up.
"""

from __future__ import annotations

import argparse
import json
import time

import absl.flags
import numpy as np

from bajax.data import config, pipeline


def _time(it, n):
    next(it)  # warm-up: first read, thread start-up, lazy tokenizer
    t0, out = time.perf_counter(), []
    for _ in range(n):
        out.append(next(it))
    return time.perf_counter() - t0, out


def main() -> None:
    absl.flags.FLAGS.mark_as_parsed()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default="embedded")
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()
    c = config.default_data_config()
    c.source, c.worker_count = args.source, args.workers
    lm = pipeline.lm_dataset(
        c,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        vocab="bytes",
        vocab_size=512,
        codebook_sizes=(64,) * 8,
    )
    dt, batches = _time(iter(lm), args.batches)
    rows = args.batches * args.batch_size
    samples = sum(int(b["segment_ids"].max(axis=1).sum()) for b in batches)
    tokens = sum(int((b["segment_ids"] > 0).sum()) for b in batches)
    result = {
        "lm": {
            "rows_per_s": rows / dt,
            "samples_per_s": samples / dt,
            "tokens_per_s": tokens / dt,
            "padding_fraction": 1 - tokens / (rows * args.seq_len),
            "batch_size": args.batch_size,
            "seq_len": args.seq_len,
        },
    }
    for kind in ("tokenizer", "flow"):
        ds = pipeline.audio_dataset(c, batch_size=args.batch_size, kind=kind)
        dt, batches = _time(iter(ds), args.batches)
        key = "wave" if kind == "tokenizer" else "wave16"
        secs = sum(float(np.sum(b["wave_lengths"])) / 16000 for b in batches if key in b)
        result[kind] = {"audio_seconds_per_s": secs / dt, "batches_per_s": args.batches / dt}
    result["config"] = {"source": args.source, "num_threads": c.num_threads, "worker_count": c.worker_count}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

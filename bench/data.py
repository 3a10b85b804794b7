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
    ap.add_argument("--train-steps", type=int, default=3, help="timed train steps per consumer config")
    ap.add_argument("--skip-small", action="store_true", help="skip the ~100M LM (slow on CPU)")
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
    for name, view in (("tokenizer", pipeline.TokenizerView), ("flow", pipeline.FlowView)):
        ds = pipeline.audio_dataset(c, batch_size=args.batch_size, view=view)
        dt, batches = _time(iter(ds), args.batches)
        secs = sum(float(np.sum(b["wave_lengths"])) / 16000 for b in batches if view.wave_key in b)
        result[name] = {"audio_seconds_per_s": secs / dt, "batches_per_s": args.batches / dt}
    result["config"] = {"source": args.source, "num_threads": c.num_threads, "worker_count": c.worker_count}
    # What the train steps consume, measured in the same run: the pipeline must never be the bottleneck.
    pipeline_rate = {"tokens": result["lm"]["tokens_per_s"], "audio_seconds": None}
    result["consumption"] = {}
    for name, spec, overrides, source_key in (
        ("lm_tiny", "configs/lm/tiny.py", [f"data.seq_len={args.seq_len}"], "lm"),
        # The embedded corpus holds 64-entry bootstrap codes; the small model's 1024-entry classifiers are
        # <1% of its FLOPs, so matching the corpus does not change the rate.
        ("lm_small", "configs/lm/small.py", ["train.batch_size=4", "data.seq_len=512",
                                             "model.codebook_sizes=(64,64,64,64,64,64,64,64)"], "lm"),
        ("tokenizer_tiny", "configs/tokenizer/tiny.py", [], "tokenizer"),
        ("flow_tiny", "configs/flow/tiny.py", [], "flow"),
    ):
        if args.skip_small and name == "lm_small":
            continue
        unit, rate = _train_rate(spec, overrides + [f"data.source={args.source}"], steps=args.train_steps)
        have = pipeline_rate["tokens"] if unit == "tokens" else result[source_key]["audio_seconds_per_s"]
        result["consumption"][name] = {f"{unit}_per_s": rate, "pipeline_over_consumption": have / rate}
    print(json.dumps(result, indent=1))


def _train_rate(spec: str, overrides: list[str], steps: int) -> tuple[str, float]:
    """(unit, units/s) the real compiled train step of a config consumes on this host (batches prefetched
    first, so only the step is timed)."""
    import jax

    from bajax import sharding
    from bajax.config import load
    from bajax.train.trainer import Trainer

    trainer = Trainer(load(spec, overrides + ["metrics.tensorboard=false"]), "/tmp/bajax-bench-data")
    with trainer.scope():
        state, step = trainer.fresh_state(), trainer.compiled_step()
        it = iter(trainer.dataset())
        batches = [next(it) for _ in range(steps + 1)]
        state, m = step(state, sharding.to_global(batches[0], trainer.mesh))   # compile
        jax.block_until_ready(m)
        units, t0 = 0.0, time.perf_counter()
        for b in batches[1:]:
            unit, n = trainer.kind.work_units(b)
            units += n
            state, m = step(state, sharding.to_global(b, trainer.mesh))
        jax.block_until_ready(m)
        return unit, units / (time.perf_counter() - t0)


if __name__ == "__main__":
    main()

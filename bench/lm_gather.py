"""The audio head only at audio targets against the head everywhere (issue 21), for bench/lm_train.py --gather.

Both train steps are the trainer's real compiled step on one device; they differ in one key,
`model.audio_head_capacity` (the model default's buckets against `()`, the head at every position). They run
on the same batches of the config's DEFAULT DATA MIXTURE (the embedded corpus, through the LM pipeline), not on
the synthetic all-audio batch of bench/lm_common.py, because the speed-up depends on how much of a batch is
audio. Steps alternate (full, gathered, full, ...) so both see the same host load.

Predicted speed-up per batch: analytic FLOPs of the full step over those of the gathered one, where the gathered
step runs the head on the bucket the trainer picks for that batch (the smallest capacity that holds its audio
positions; the full head when none does) - the FLOPs the bucket really executes, not only the useful ones.
"""

from __future__ import annotations

import statistics
import tempfile
import time

import jax
import numpy as np

from bajax import config as bajax_config
from bajax.lm import flops as lm_flops
from bajax.lm.losses import audio_capacities
from bajax.models import registry
from bajax.train.peak import probe_peak
from bajax.train.trainer import Trainer


def _bucket(capacities, audio_positions: int, positions: int) -> float:
    """The fraction of positions the gathered head runs on: the trainer's choice on one device (one group)."""
    fitting = [c for c in audio_capacities(positions, capacities) if audio_positions <= c]
    return fitting[0] / positions if fitting else 1.0


def _real_batches(cfg, n: int, fields) -> list[dict]:
    it = iter(registry.get("lm").make_dataset(cfg, 0, 1, "train"))
    return [{k: np.asarray(v) for k, v in next(it).items() if k in fields} for _ in range(n)]


def run_gather(name: str, batch_size: int, seq_len: int, repeats: int, overrides) -> dict:
    base = [f"train.batch_size={batch_size}", f"data.seq_len={seq_len}", *overrides]
    # The config's buckets (or a --set of them); the model default's where the config runs the head everywhere.
    capacities = (tuple(bajax_config.load(f"configs/lm/{name}.py", base).model.audio_head_capacity)
                  or tuple(bajax_config.defaults("lm").model.audio_head_capacity))
    cfgs = {"full": bajax_config.load(f"configs/lm/{name}.py", [*base, "model.audio_head_capacity=()"]),
            "gathered": bajax_config.load(f"configs/lm/{name}.py",
                                          [*base, f"model.audio_head_capacity={capacities!r}"])}
    m = cfgs["full"].model
    batches = _real_batches(cfgs["full"], repeats, registry.get("lm").batch_fields)
    positions = batch_size * seq_len
    audio = [int((b["audio_weights"] != 0).any(-1).sum()) for b in batches]
    tokens = [int((b["segment_ids"] > 0).sum()) for b in batches]
    buckets = [_bucket(capacities, a, positions) for a in audio]

    def step_flops(head_fraction: float) -> float:
        return lm_flops.train_flops_per_token(m, seq_len, audio_fraction=head_fraction)["total"] * positions

    predicted = [step_flops(1.0) / step_flops(b) for b in buckets]
    steps, states, compile_s, losses = {}, {}, {}, {"full": [], "gathered": []}
    for key, cfg in cfgs.items():
        trainer = Trainer(cfg, tempfile.mkdtemp(prefix="bajax-bench-"), devices=jax.devices()[:1])
        with trainer.scope():
            states[key] = trainer.fresh_state()
            t0 = time.perf_counter()
            steps[key] = trainer.compiled_step().lower(states[key], batches[0]).compile()
            compile_s[key] = round(time.perf_counter() - t0, 1)
    dev = [jax.device_put(b, jax.devices()[0]) for b in batches]
    times = {"full": [], "gathered": []}
    peaks = []

    def run(key, batch):
        t = time.perf_counter()
        states[key], metrics = steps[key](states[key], batch)
        jax.block_until_ready(metrics)
        times[key].append(time.perf_counter() - t)
        losses[key].append(float(metrics["loss"]))

    for key in steps:                        # warm-up, untimed
        run(key, dev[0])
        times[key].clear(), losses[key].clear()
    for batch in dev:
        p0 = probe_peak()
        for key in ("full", "gathered"):
            run(key, batch)
        peaks.append(max(p0, probe_peak()))
    ratios = [f / g for f, g in zip(times["full"], times["gathered"])]
    measured = statistics.median(ratios)
    expected = statistics.median(predicted)
    return {
        "batch": batch_size, "seq_len": seq_len, "capacities": list(capacities), "batches": len(batches),
        "audio_fraction_of_positions": round(sum(audio) / (positions * len(batches)), 4),
        "audio_fraction_of_tokens": round(sum(audio) / max(sum(tokens), 1), 4),
        "bucket_per_batch": buckets,
        "predicted_speedup_median": round(expected, 3),
        "measured_speedup_median": round(measured, 3),
        "measured_over_predicted": round(measured / expected, 3),
        "within_10_percent": abs(measured / expected - 1) <= 0.10,
        "measured_speedup_per_batch": [round(r, 3) for r in ratios],
        "step_time_median_s": {k: round(statistics.median(v), 4) for k, v in times.items()},
        "tokens_per_s_median": {k: round(positions / statistics.median(v), 1) for k, v in times.items()},
        "compile_s": compile_s,
        "temp_memory_mb": {k: round(step.memory_analysis().temp_size_in_bytes / 2**20, 1)
                           for k, step in steps.items()},
        # Same batches, same initial weights: the two steps' losses must agree (the gather is exact).
        "loss_max_abs_diff": max(abs(a - b) for a, b in zip(losses["full"], losses["gathered"])),
        "peak_gflops_median": round(statistics.median(peaks) / 1e9, 1),
    }

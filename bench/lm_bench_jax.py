"""One config of bench/lm_train.py: the JAX train step, optionally interleaved with the PyTorch step."""

from __future__ import annotations

import statistics
import tempfile
import time

import jax
from lm_common import synthetic_batch

from bajax import config as bajax_config
from bajax.lm import flops as lm_flops
from bajax.train.peak import probe_peak
from bajax.train.trainer import Trainer


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _summary(times, peaks, flops, tokens) -> dict:
    mfu = [flops / dt / p for dt, p in zip(times, peaks)]
    best = min(times)
    return {"step_time_best_s": round(best, 4), "step_time_median_s": round(statistics.median(times), 4),
            "tokens_per_s_best": round(tokens / best, 1), "gflops_per_s_best": round(flops / best / 1e9, 2),
            "mfu_median": round(statistics.median(mfu), 3), "mfu_max": round(max(mfu), 3),
            "step_times_s": [round(x, 3) for x in times]}


def run_config(name: str, batch_size: int, seq_len: int, repeats: int, overrides, *, with_torch: bool) -> dict:
    cfg = bajax_config.load(f"configs/lm/{name}.py",
                            [f"train.batch_size={batch_size}", f"data.seq_len={seq_len}", *overrides])
    m = cfg.model
    batch = synthetic_batch(batch_size, seq_len, m.vocab, m.vocab_size, m.codebook_sizes)
    per_token = lm_flops.train_flops_per_token(m, seq_len)
    tokens = batch_size * seq_len
    flops = per_token["total"] * tokens
    trainer = Trainer(cfg, tempfile.mkdtemp(prefix="bajax-bench-"), devices=jax.devices()[:1])
    with trainer.scope():
        state = trainer.fresh_state()
        t0 = time.perf_counter()
        step = trainer.compiled_step().lower(state, batch).compile()
        compile_s = time.perf_counter() - t0
        dev_batch = jax.device_put(batch, jax.devices()[0])
        box = {"state": state}

        def jax_step():
            box["state"], metrics = step(box["state"], dev_batch)
            jax.block_until_ready(metrics)
            box["loss"] = float(metrics["loss"])

        jax_step()  # warm-up
        torch_step = None
        if with_torch:
            from torch_lm import make_torch_step

            torch_step = make_torch_step(m, batch, lr=float(cfg.optim.lr))
            torch_step()
        # Each framework's steps back to back, not interleaved: a JAX step right after a PyTorch step ran
        # 1.5x slower (20 s vs 13 s for small 4x512, measured), as PyTorch's OpenMP threads and JAX's thread
        # pool contend while one of them winds down; interleaving measured that interference, not the step.
        jt, tt, jp, tp = [], [], [], []
        for fn, times, peaks in ((jax_step, jt, jp), (torch_step, tt, tp)):
            if fn is None:
                continue
            fn()  # warm-up after the other framework ran
            for _ in range(repeats):
                p0 = probe_peak()
                times.append(_timed(fn))
                peaks.append(max(p0, probe_peak()))
    out = {"batch": batch_size, "seq_len": seq_len, "tokens_per_step": tokens,
           "params_m": round(trainer.num_trainable()[1] / 1e6, 2),
           "flops_per_token": {k: round(v / 1e6, 2) for k, v in per_token.items()} | {"unit": "MFLOP"},
           "compile_s": round(compile_s, 1), "loss": box["loss"],
           "peak_gflops_median": round(statistics.median(jp) / 1e9, 1),
           "jax": _summary(jt, jp, flops, tokens)}
    if tt:
        out["torch"] = _summary(tt, tp, flops, tokens)
        out["jax_over_torch_tokens_per_s_median"] = round(statistics.median(tt) / statistics.median(jt), 3)
        out["jax_over_torch_tokens_per_s_best"] = round(min(tt) / min(jt), 3)
    return out

"""One config of bench/lm_train.py: the JAX train step here, alternating with the PyTorch step in its own process."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
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
        torch_worker = TorchWorker(name, batch_size, seq_len, overrides) if with_torch else None
        jax_times, torch_times, peaks = [], [], []
        try:
            for _ in range(repeats):  # alternating, so both frameworks see the same host load
                p0 = probe_peak()
                jax_times.append(_timed(jax_step))
                if torch_worker:
                    torch_times.append(torch_worker.step())
                peaks.append(max(p0, probe_peak()))
        finally:
            if torch_worker:
                torch_worker.close()
    out = {"batch": batch_size, "seq_len": seq_len, "tokens_per_step": tokens,
           "params_m": round(trainer.num_trainable()[1] / 1e6, 2),
           "flops_per_token": {k: round(v / 1e6, 2) for k, v in per_token.items()} | {"unit": "MFLOP"},
           "compile_s": round(compile_s, 1), "loss": box["loss"],
           "peak_gflops_median": round(statistics.median(peaks) / 1e9, 1),
           "jax": _summary(jax_times, peaks, flops, tokens)}
    if torch_times:
        out["torch"] = _summary(torch_times, peaks, flops, tokens)
        out["jax_over_torch_tokens_per_s_median"] = round(statistics.median(torch_times)
                                                          / statistics.median(jax_times), 3)
        out["jax_over_torch_tokens_per_s_best"] = round(min(torch_times) / min(jax_times), 3)
    return out


class TorchWorker:
    """The PyTorch eager step (bench/torch_lm.py) in a process of its own, run one step per request: in this
    process, next to the JAX runtime, both frameworks' steps ran 5-15% slower (bench/RESULTS_lm.md)."""

    def __init__(self, name: str, batch_size: int, seq_len: int, overrides):
        cmd = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_lm.py"),
               "--config", name, "--shape", f"{batch_size}x{seq_len}"]
        for o in overrides:
            cmd += ["--set", o]
        self.cmd = " ".join(cmd)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._reply()  # built and warmed up

    def step(self) -> float:
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        return float(self._reply()["step_time_s"])

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the PyTorch step process exited with {self.proc.wait()}: {self.cmd}")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)

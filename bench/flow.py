"""Flow decoder speed on this machine; prints one JSON object.

    python bench/flow.py [--seconds 10] [--steps 10] [--repeats 2] [--skip-base]

Figures (random weights: speed does not depend on them), for the tiny and base configs:
  synth_seconds / rtf   wall time of Pre-Net + N guided Euler steps (cond and uncond rows in one batch of 2)
                        for `--seconds` of 50 Hz mel, divided by the audio duration (target at base: <= 1.4)
  synth_mfu             analytic FLOPs (bajax/flow/flops.py) / time / the CPU fp32 matmul peak measured in
                        this run (`bajax.train.peak.cpu_matmul_peak`)
  train_step_seconds    one jitted AdamW step (forward + backward) on `--train-batch` x 4 s crops
  train_mfu             same, for the training step
  vs_official           21 s (the official PyTorch code on this CPU, issue 5) / base synth_seconds
Best of `--repeats` runs after a warm-up (compile) run. The machine may be shared: the measured peak in
the same run shows how much of it this process got.
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax_bench import best_seconds, split_jit

from bajax.config import load
from bajax.flow import flops
from bajax.flow.model import FlowDecoder
from bajax.models import flow as flow_kind
from bajax.train.peak import cpu_matmul_peak

OFFICIAL_SECONDS = 21.0   # Baichuan's PyTorch flow decoder, 10 s of mel, 10 guided steps, this CPU


def _synth(cfg, seconds, steps, repeats, peak):
    m = cfg.model
    model = FlowDecoder(m, rngs=nnx.Rngs(0))
    frames = int(seconds * 50)
    cond = jax.random.normal(jax.random.key(1), (1, frames, m.cond_dim), jnp.float32)
    lengths = jnp.array([frames])
    f = split_jit(model, lambda mod, c, key: mod.sample(c, lengths, lengths, frames, key, steps=steps, guidance=0.7))
    dt = best_seconds(lambda: f(cond, jax.random.key(0)), repeats)
    fl = flops.sample_flops(m, frames, steps, guided=True)
    return {"synth_seconds": dt, "rtf": dt / seconds, "synth_gflop": fl / 1e9, "synth_mfu": fl / dt / peak}


def _train_step(cfg, batch_size, repeats, peak):
    m = cfg.model
    model = FlowDecoder(m, rngs=nnx.Rngs(0))
    frames, r = 200, jax.random.key(2)
    batch = {"mel24": jax.random.normal(r, (batch_size, frames, m.n_mels)) - 5.0,
             "mel_lengths": jnp.full((batch_size,), frames),
             "cond": jax.random.normal(r, (batch_size, frames, m.cond_dim))}
    totals = flow_kind.loss_totals(batch)
    opt = nnx.Optimizer(model, optax.adamw(1e-4), wrt=nnx.Param)

    def loss(mod, key):
        sums = mod.loss_sums(batch["cond"], batch["mel_lengths"], batch["mel24"], batch["mel_lengths"], key)
        return (sums["cfm"] + sums["prior"]) / (totals["frames"] * m.n_mels)

    @nnx.jit
    def step(mod, opt, key):
        value, grads = nnx.value_and_grad(loss)(mod, key)
        opt.update(mod, grads)
        return value

    dt = best_seconds(lambda: step(model, opt, jax.random.key(0)), repeats)
    fl = flops.train_flops(m, frames) * batch_size
    return {"train_step_seconds": dt, "train_batch": f"{batch_size} x 4 s", "train_mfu": fl / dt / peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--train-batch", type=int, default=4)
    ap.add_argument("--skip-base", action="store_true")
    args = ap.parse_args()
    peak = cpu_matmul_peak()
    out = {"cpu_matmul_peak_gflops": peak / 1e9, "cpu_count": os.cpu_count(), "mel_seconds": args.seconds,
           "euler_steps": args.steps, "guidance": 0.7}
    sizes = ["tiny"] + ([] if args.skip_base else ["base"])
    for size in sizes:
        cfg = load(f"configs/flow/{size}.py")
        cfg.model.dtype = "float32"                  # bf16 matmuls are slower than fp32 on CPU
        out[size] = {**_synth(cfg, args.seconds, args.steps, args.repeats, peak),
                     **_train_step(cfg, args.train_batch if size == "tiny" else 1, args.repeats, peak)}
    if "base" in out:
        out["base"]["vs_official"] = OFFICIAL_SECONDS / out["base"]["synth_seconds"]
    out["cpu_matmul_peak_gflops_after"] = cpu_matmul_peak.__wrapped__() / 1e9
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

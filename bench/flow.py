"""Flow decoder speed on this machine; prints one JSON object.

    python bench/flow.py [--seconds 10] [--steps 10] [--repeats 2] [--skip-base] [--no-torch]

Figures (random weights: speed does not depend on them), for the tiny and base configs:
  synth_seconds / rtf   wall time of Pre-Net + N guided Euler steps (cond and uncond rows in one batch of 2)
                        for `--seconds` of 50 Hz mel, divided by the audio duration (target at base: <= 1.4)
  synth_mfu             analytic FLOPs (bajax/flow/flops.py) / time / the CPU fp32 matmul peak measured in
                        this run (`bajax.train.peak.cpu_matmul_peak`)
  train_step_seconds    one jitted AdamW step (forward + backward) on `--train-batch` x 4 s crops
  train_mfu             same, for the training step
  torch_synth_seconds   the same synthesis by a PyTorch eager implementation of the reference structure
                        (tests/torch_ref/flow.py: FlowmatchingPrenet + CosyVoice-2 ConditionalDecoder and its
                        guided Euler loop, cond and uncond estimator calls as the reference makes them; eval
                        mode, no_grad, fp32, same random-weight shape as the bajax config), timed in this run
  vs_official           torch_synth_seconds / synth_seconds (> 1: bajax is faster), for every size
Best of `--repeats` runs after a warm-up (compile) run, bajax and PyTorch alternating round by round so that
both see the same share of a shared machine; the measured peak in the same run shows how much of it this
process got. (Until 2026-12-07 `vs_official` divided a fixed 21 s, measured on another host, by the base
time: on a slower host that hid a 1.5x lead.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax_bench import best_seconds, split_jit

from bajax.config import load
from bajax.flow import flops
from bajax.flow.model import FlowDecoder
from bajax.models import flow as flow_kind
from bajax.train.peak import cpu_matmul_peak, usable_cores

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)                              # tests.torch_ref


def _release_flow_config(m) -> dict:
    """The release's `flow_matching_config` for the bajax flow model config `m` (as `bajax export` writes it)."""
    from bajax.interop import release_config as rc

    out = rc.template()
    for kind, key, path in rc.MAPS:
        if kind == "flow":
            rc._set(out, path, rc._plain(rc._get_cfg(m, key)))
    rc._set(out, "flow_matching_config.channels", [int(m.channels)])
    rc._set(out, "flow_matching_config.in_channels", int(m.n_mels))
    return out["flow_matching_config"]


def _torch_synth(m, cond_np, frames: int, steps: int):
    """A no-argument call of the PyTorch reference: Pre-Net prior, then `steps` guided Euler steps."""
    import torch

    from tests.torch_ref.flow import FlowDecoder as TorchFlow
    from tests.torch_ref.flow import euler

    torch.set_num_threads(usable_cores())
    torch.manual_seed(0)
    ref = TorchFlow(_release_flow_config(m)).eval()
    cond = torch.from_numpy(np.array(cond_np))
    mask = torch.ones(1, 1, frames)

    def run():
        with torch.no_grad():
            mu = ref.prenet(cond, frames).transpose(1, 2)
            z = torch.randn(1, m.n_mels, frames)
            return euler(ref.conditional_decoder, z, mu, mask, steps, 0.7)

    return run


def _timed(fn) -> float:
    t = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t


def _synth(cfg, seconds, steps, repeats, peak, with_torch):
    m = cfg.model
    model = FlowDecoder(m, rngs=nnx.Rngs(0))
    frames = int(seconds * 50)
    cond = jax.random.normal(jax.random.key(1), (1, frames, m.cond_dim), jnp.float32)
    lengths = jnp.array([frames])
    f = split_jit(model, lambda mod, c, key: mod.sample(c, lengths, lengths, frames, key, steps=steps, guidance=0.7))
    calls = {"jax": lambda: f(cond, jax.random.key(0))}
    if with_torch:
        calls["torch"] = _torch_synth(m, np.asarray(cond), frames, steps)
    for fn in calls.values():
        jax.block_until_ready(fn())                 # compile / warm up
    best = {k: float("inf") for k in calls}
    for _ in range(repeats):                        # alternate: both see the same share of a shared host
        for k, fn in calls.items():
            best[k] = min(best[k], _timed(fn))
    dt = best["jax"]
    fl = flops.sample_flops(m, frames, steps, guided=True)
    out = {"synth_seconds": dt, "rtf": dt / seconds, "synth_gflop": fl / 1e9, "synth_mfu": fl / dt / peak}
    if with_torch:
        out.update(torch_synth_seconds=best["torch"], vs_official=best["torch"] / dt)
    return out


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
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference (no vs_official)")
    args = ap.parse_args()
    peak = cpu_matmul_peak()
    out = {"cpu_matmul_peak_gflops": peak / 1e9, "cpu_count": os.cpu_count(), "threads": usable_cores(),
           "mel_seconds": args.seconds, "euler_steps": args.steps, "guidance": 0.7}
    sizes = ["tiny"] + ([] if args.skip_base else ["base"])
    for size in sizes:
        cfg = load(f"configs/flow/{size}.py")
        cfg.model.dtype = "float32"                  # bf16 matmuls are slower than fp32 on CPU
        out[size] = {**_synth(cfg, args.seconds, args.steps, args.repeats, peak, not args.no_torch),
                     **_train_step(cfg, args.train_batch if size == "tiny" else 1, args.repeats, peak)}
    out["cpu_matmul_peak_gflops_after"] = cpu_matmul_peak.__wrapped__() / 1e9
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

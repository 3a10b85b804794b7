"""The matmul-only bound of the audio-LLM train step on this host; prints one JSON object.

    python bench/lm_roofline.py [--config small] [--shape 4x512] [--repeats 5] [--set KEY=VALUE ...]

The question it answers: how fast could this step be if every matmul in it ran as fast as XLA runs that
same matmul ALONE, and nothing else (softmax, norms, cross-entropy, the optimizer, copies) cost anything?

It traces the real train step (`make_train_step`, as the trainer builds it) to a jaxpr and collects every
`dot_general` in it, forward and backward (through pjit / custom_vjp / remat bodies; a scan body counts
`length` times). Each distinct dot (operand shapes, dimension numbers, dtypes) is then compiled alone with
the task's CPU compile options and timed, best of `--repeats`, minus the dispatch cost of an empty call.
The sum over dots of count x time is the matmul-only step time; the analytic FLOPs of `bajax.lm.flops`
over it, and over the matmul peak probed in the same run, give the highest MFU any schedule of these
matmuls could reach (`mfu_bound`). The real step is timed in the same run (best of `--repeats`/2 >= 2) for
comparison.

The same GEMMs in PyTorch: each dot is also timed as a plain [batch, m, k] x [batch, k, n] GEMM (contiguous
operands, no transposes), by XLA here and by MKL in a PyTorch process of its own (bench/torch_dots.py),
and the PyTorch eager step of bench/torch_lm.py is timed too. That answers how fast a JAX step must be to
reach a given ratio over PyTorch eager (`jax_step_needed_for_1.2x_s`) against the least time either library
needs for the step's matmuls alone, and plus the parameter update alone (`optimizer_only_s`: clipping and
AdamW over every trainable parameter, timed by itself).
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np
from jax_bench import best_seconds
from lm_train import DEFAULT_SETS


def _args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="small")
    ap.add_argument("--shape", default="4x512", help="batch x seq_len")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--top", type=int, default=12, help="how many of the costliest dot kinds to list")
    ap.add_argument("--set", action="append", default=list(DEFAULT_SETS),
                    help="config override (as bench/lm_train.py)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch GEMMs and step")
    ap.add_argument("--malloc", choices=("tcmalloc", "glibc"), default="tcmalloc",
                    help="allocator of this process and the PyTorch ones (as bench/lm_train.py)")
    return ap.parse_args()


def collect_dots(jaxpr, times: int = 1, out=None) -> collections.Counter:
    """Counter of (lhs aval, rhs aval, dimension_numbers, preferred dtype) -> executions per step."""
    import jax

    out = collections.Counter() if out is None else out
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            lhs, rhs = (v.aval for v in eqn.invars)
            key = (lhs.shape, str(lhs.dtype), rhs.shape, str(rhs.dtype),
                   _freeze(eqn.params["dimension_numbers"]), str(eqn.params.get("preferred_element_type")))
            out[key] += times
        if eqn.primitive.name in ("while", "cond"):
            # Trip counts and taken branches are data-dependent: a bound needs them known.
            raise ValueError(f"the train step contains a `{eqn.primitive.name}`; its dots cannot be counted")
        inner = times * int(eqn.params["length"]) if eqn.primitive.name == "scan" else times
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    collect_dots(sub.jaxpr, inner, out)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    collect_dots(sub, inner, out)
    return out


def _freeze(x):
    return tuple(_freeze(v) for v in x) if isinstance(x, (tuple, list)) else x


def dot_flops(key) -> float:
    return 2.0 * math.prod(gemm_shape(key))


def gemm_shape(key) -> tuple[int, int, int, int]:
    """(batch, m, n, k) of a dot_general: the plain batched GEMM doing the same multiply-adds."""
    lhs, _, rhs, _, ((lc, rc), (lb, rb)), _ = key
    batch = math.prod(lhs[d] for d in lb)
    m = math.prod(s for d, s in enumerate(lhs) if d not in lc and d not in lb)
    n = math.prod(s for d, s in enumerate(rhs) if d not in rc and d not in rb)
    return batch, m, n, math.prod(lhs[d] for d in lc)


def plain_gemm_key(gemm) -> tuple:
    """The dot key of [batch, m, k] x [batch, k, n] fp32 with contiguous operands (no transposes)."""
    batch, m, n, k = gemm
    return (batch, m, k), "float32", (batch, k, n), "float32", (((2,), (1,)), ((0,), (0,))), "None"


def torch_gemm_seconds(gemms, repeats: int) -> list[float]:
    """Best wall times of these GEMMs in PyTorch (bench/torch_dots.py, its own process)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_dots.py")
    done = subprocess.run([sys.executable, script, str(repeats)], input=json.dumps(gemms), text=True,
                          capture_output=True, check=False)
    if done.returncode:
        raise RuntimeError(f"bench/torch_dots.py failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout)["seconds"]


def time_optimizer(trainer, state, compiler_options, repeats: int) -> float:
    """Best wall time of the step's parameter update alone: clipping, AdamW and the gradient-norm metric
    over every trainable parameter, as `make_train_step` applies them (memory-bound work that no schedule
    of the matmuls can hide on a CPU whose cores run the matmuls)."""
    import jax
    import optax
    from flax import nnx

    trainable, _ = nnx.split_state(state["model"], trainer.is_trainable, ...)
    grads = jax.tree.map(lambda p: p * 1e-3, trainable)

    def update(opt_state, params, grads):
        updates, opt_state = trainer.phases[0].tx.update(grads, opt_state, params)
        return opt_state, optax.apply_updates(params, updates), optax.global_norm(grads)

    f = jax.jit(update, donate_argnums=(0, 1), compiler_options=compiler_options)
    box = {"opt": jax.tree.map(lambda x: x.copy(), state["opt"]), "params": trainable}

    def run():
        box["opt"], box["params"], norm = f(box["opt"], box["params"], grads)
        return norm

    return best_seconds(run, repeats)


def time_dot(key, compiler_options, repeats: int) -> float:
    """Best wall time of this dot compiled alone (inputs resident, output waited for)."""
    import jax
    import jax.numpy as jnp

    lhs, ldt, rhs, rdt, dims, pet = key
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal(lhs).astype(ldt))
    b = jnp.asarray(rng.standard_normal(rhs).astype(rdt))
    preferred = None if pet == "None" else jnp.dtype(pet)
    f = jax.jit(lambda x, y: jax.lax.dot_general(x, y, dims, preferred_element_type=preferred),
                compiler_options=compiler_options)
    return best_seconds(lambda: f(a, b), repeats)


def main() -> None:
    args = _args()
    from bajax import malloc as bajax_malloc

    malloc = bajax_malloc.use(args.malloc)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import absl.flags

    absl.flags.FLAGS.mark_as_parsed()
    import jax
    import jax.numpy as jnp
    from lm_common import synthetic_batch

    from bajax import config as bajax_config
    from bajax.lm import flops as lm_flops
    from bajax.train.peak import probe_peak
    from bajax.train.step import make_train_step
    from bajax.train.trainer import Trainer

    jax.config.update("jax_platforms", "cpu")
    b, t = (int(s) for s in args.shape.split("x"))
    cfg = bajax_config.load(f"configs/lm/{args.config}.py",
                            [f"train.batch_size={b}", f"data.seq_len={t}", *args.set])
    m = cfg.model
    batch = synthetic_batch(b, t, m.vocab, m.vocab_size, m.codebook_sizes)
    analytic = lm_flops.train_flops_per_token(m, t)["total"] * b * t
    trainer = Trainer(cfg, tempfile.mkdtemp(prefix="bajax-roofline-"), devices=jax.devices()[:1])
    options = trainer.compiler_options()
    with trainer.scope():
        state = trainer.fresh_state()
        step_fn = make_train_step(trainer.phases, [trainer.loss_fn], trainer.kind.loss_totals, trainer.graphdef,
                                  seed=cfg.seed, grad_accum=cfg.train.grad_accum)
        dots = collect_dots(jax.make_jaxpr(step_fn)(state, batch).jaxpr)
        step = trainer.compiled_step().lower(state, batch).compile()
        dev_batch = jax.device_put(batch, jax.devices()[0])
        box = {"state": state}

        def run_step():
            box["state"], metrics = step(box["state"], dev_batch)
            return metrics

        step_s = best_seconds(run_step, max(2, args.repeats // 2))
        optimizer_s = time_optimizer(trainer, box["state"], options, args.repeats)
    torch_step_s = None
    if not args.no_torch:
        from lm_bench_jax import TorchWorker

        worker = TorchWorker(args.config, b, t, args.set)
        try:
            torch_step_s = min(worker.step() for _ in range(max(2, args.repeats // 2)))
        finally:
            worker.close()

    empty = jax.jit(lambda x: x + 1, compiler_options=options)
    dispatch = best_seconds(lambda: empty(jnp.zeros((8,), jnp.float32)), 20)
    peaks, rows = [probe_peak()], []
    for key, count in dots.items():
        gemm = gemm_shape(key)
        seconds = max(time_dot(key, options, args.repeats) - dispatch, 0.0)
        gemm_s = max(time_dot(plain_gemm_key(gemm), options, args.repeats) - dispatch, 0.0)
        rows.append({"lhs": list(key[0]), "rhs": list(key[2]), "dims": str(key[4]), "count": count,
                     "gemm": list(gemm),
                     "ms_each": round(seconds * 1e3, 3), "gflop_each": round(dot_flops(key) / 1e9, 3),
                     "gflops_per_s": round(dot_flops(key) / seconds / 1e9, 1) if seconds else None,
                     "_total": count * seconds, "_gemm_total": count * gemm_s})
    peaks.append(probe_peak())
    matmul_s = sum(r["_total"] for r in rows)
    gemm_s = sum(r["_gemm_total"] for r in rows)
    torch_gemm_s = None
    if not args.no_torch:
        torch_times = torch_gemm_seconds([r["gemm"] for r in rows], args.repeats)
        for r, seconds in zip(rows, torch_times):
            r["torch_ms_each"] = round(seconds * 1e3, 3)
        torch_gemm_s = sum(r["count"] * s for r, s in zip(rows, torch_times))
        peaks.append(probe_peak())
    dot_gflop = sum(r["count"] * r["gflop_each"] for r in rows)
    peak = statistics.median(peaks)
    rows.sort(key=lambda r: -r["_total"])
    out = {
        "config": args.config, "shape": args.shape, "compiler_options": options,
        "dots_per_step": sum(dots.values()), "distinct_dots": len(dots),
        "dot_gflop": round(dot_gflop, 1), "analytic_gflop": round(analytic / 1e9, 1),
        "peak_gflops": round(peak / 1e9, 1), "dispatch_ms": round(dispatch * 1e3, 3),
        "matmul_only_step_s": round(matmul_s, 3),
        "matmul_only_gflops_per_s": round(dot_gflop / matmul_s, 1),
        "mfu_bound": round(analytic / matmul_s / peak, 3),
        "step_time_s": round(step_s, 3), "step_mfu": round(analytic / step_s / peak, 3),
        "matmul_share_of_step": round(matmul_s / step_s, 3),
        "optimizer_only_s": round(optimizer_s, 3),
        "matmul_only_plus_optimizer_s": round(matmul_s + optimizer_s, 3),
        "gemm_only_step_s": {"xla": round(gemm_s, 3)},
        "malloc": malloc,
        "costliest_dots": [{k: v for k, v in r.items() if not k.startswith("_")}
                           | {"ms_total": round(r["_total"] * 1e3, 1)} for r in rows[:args.top]],
    }
    if torch_step_s is not None:
        out["gemm_only_step_s"]["torch"] = round(torch_gemm_s, 3)
        out["torch_step_time_s"] = round(torch_step_s, 3)
        out["torch_step_mfu"] = round(analytic / torch_step_s / peak, 3)
        # Same FLOPs and peak, so a tokens/s ratio is a step-time ratio: 1.2x needs this JAX step time.
        out["jax_step_needed_for_1.2x_s"] = round(torch_step_s / 1.2, 3)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

"""Audio-LLM training throughput on this host (fp32, one device); prints one JSON object.

    python bench/lm_train.py [--configs tiny,small] [--small-shape 4x512] [--repeats 5] [--no-torch]
                             [--head] [--gather | --gather-only] [--set model.remat=full ...]

For each config: the REAL train step (`Trainer(cfg).compiled_step()`, AdamW, text CE + 8-codebook audio
CE) on a synthetic packed batch (bench/lm_common.py), then the same model and step in PyTorch eager
(bench/torch_lm.py) on the same arrays. `--head` adds the audio head alone at the reference shape
(bench/audio_head.py). `--gather` adds, per config, the step with the audio head only at audio targets against
the head everywhere, on batches of the default data mixture (bench/lm_gather.py: audio fraction, predicted and
measured speed-ups).

Method (the host is shared, so absolute times drift with other users' load): every timed step is
bracketed by a short matmul peak probe (`bajax.train.peak.probe_peak`) and its MFU is the analytic FLOPs
(`bajax.lm.flops`) over step time over the best probe of that moment; we report the median of per-step
figures and the best step time. JAX steps (this process) alternate step by step with PyTorch steps served
by a process of their own (`bench/torch_lm.py`), so both see the same host load: side by side in one
process both frameworks ran 5-15% slower, their thread pools contending (bench/RESULTS_lm.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# XLA flags must be in the environment before jax is imported (see bench/RESULTS_lm.md for each flag).
XLA_FLAGS: list[str] = []
# Config overrides of the benchmark (measured, bench/RESULTS_lm.md): on CPU a Python loop over the stacked
# layers is ~1.4x faster than lax.scan (no residual stacking / dynamic-update-slice copies, no zeroed
# stacked buffers) and compiles faster at 12 layers.
DEFAULT_SETS = ["model.scan_layers=False"]


def _args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="tiny,small")
    ap.add_argument("--tiny-shape", default="8x256", help="batch x seq_len of the tiny run")
    ap.add_argument("--small-shape", default="4x512", help="batch x seq_len of the small run")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--head", action="store_true", help="also time the audio head alone")
    ap.add_argument("--head-repeats", type=int, default=5)
    ap.add_argument("--gather", action="store_true",
                    help="also time the gathered audio head against the head everywhere (bench/lm_gather.py)")
    ap.add_argument("--gather-only", action="store_true", help="--gather without the framework comparison")
    ap.add_argument("--set", action="append", default=list(DEFAULT_SETS),
                    help="config override, e.g. model.remat=full (adds to DEFAULT_SETS)")
    ap.add_argument("--xla-flags", default=" ".join(XLA_FLAGS))
    ap.add_argument("--malloc", choices=("tcmalloc", "glibc"), default="tcmalloc",
                    help="allocator of both frameworks' processes (bajax/malloc.py: tcmalloc avoids re-faulting "
                         "each step's memory; the PyTorch worker inherits it)")
    return ap.parse_args()


def main() -> None:
    args = _args()
    from bajax import malloc as bajax_malloc

    malloc = bajax_malloc.use(args.malloc)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import absl.flags

    absl.flags.FLAGS.mark_as_parsed()
    import jax
    from lm_bench_jax import run_config  # noqa: E402  (after XLA_FLAGS)

    jax.config.update("jax_platforms", "cpu")
    out = {"host": {"cpu_count": os.cpu_count(), "jax": jax.__version__, "xla_flags": os.environ["XLA_FLAGS"],
                    "malloc": malloc}}
    torch_ok = not args.no_torch and _has_torch()
    for name in args.configs.split(","):
        shape = args.tiny_shape if name == "tiny" else args.small_shape
        b, t = (int(s) for s in shape.split("x"))
        out[name] = {} if args.gather_only else run_config(name, b, t, args.repeats, args.set, with_torch=torch_ok)
        if args.gather or args.gather_only:
            from lm_gather import run_gather

            out[name]["gather"] = run_gather(name, b, t, args.repeats, args.set)
    if args.head:
        from audio_head import run_head

        out["audio_head"] = run_head(args.head_repeats, with_torch=torch_ok)
    print(json.dumps(out, indent=1))


def _has_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


if __name__ == "__main__":
    main()

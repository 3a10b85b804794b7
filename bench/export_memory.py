"""Peak host memory of `bajax export` on a multi-GB checkpoint vs the largest tensor it writes.

  python bench/export_memory.py                 # ~3 GB LM (random params), prints JSON, writes RESULTS_interop.md

1. Builds an LM run directory (config.json + Orbax step 0) with random fp32 parameters, created leaf by leaf
   on the host (never the whole model twice).
2. Runs the export in a FRESH subprocess and reads that process's peak RSS (VmHWM in /proc/self/status),
   and its RSS after imports / before exporting (the runtime's baseline: Python, JAX, Orbax, TensorStore).
3. Reports peak - baseline against the largest exported tensor and against the whole model.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import jax  # noqa: F401  (the export's own imports, so the baseline includes them)
import orbax.checkpoint  # noqa: F401
from bajax.interop import export as ex


def hwm():
    # VmHWM (peak RSS of this address space). ru_maxrss is not used: Linux carries the PARENT's peak into a
    # child across fork + exec, so it would report the benchmark's own model-building peak.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


base = hwm()
t = time.time()
summary = ex.export(sys.argv[1], sys.argv[2], max_shard_bytes=int(sys.argv[3]), log=None)
peak = hwm()
print(json.dumps({"baseline_rss": base, "peak_rss": peak, "export_seconds": time.time() - t, **summary}))
"""


def build_run(workdir: Path, args) -> int:
    import jax
    import numpy as np
    from flax import nnx

    from bajax.config import defaults
    from bajax.interop import rundir
    from bajax.lm.model import AudioLLM

    cfg = defaults("lm")
    m = cfg.model
    m.hidden, m.layers, m.heads, m.kv_heads, m.head_dim, m.mlp = (args.hidden, args.layers, args.hidden // 128,
                                                                   2, 128, args.mlp)
    m.vocab_size, m.codebook_sizes, m.audio_head_heads = args.vocab, (1024,) * 8, args.hidden // 128
    state = nnx.state(nnx.eval_shape(lambda: AudioLLM(m, rngs=nnx.Rngs(0))))
    rng = np.random.default_rng(0)
    total = 0
    for _, var in nnx.to_flat_state(state):
        spec = var.get_value()
        host = rng.standard_normal(spec.shape, dtype=np.float32) * np.float32(0.02)
        var.set_value(jax.device_put(host))
        total += host.nbytes
        del host
    rundir.write_run(workdir, cfg, state)
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="/tmp/bajax_export_bench")
    p.add_argument("--hidden", type=int, default=1536)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--mlp", type=int, default=8960)
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--shard-gb", type=float, default=1.0)
    p.add_argument("--keep", action="store_true", help="keep the run and export directories")
    p.add_argument("--results", default=str(Path(__file__).with_name("RESULTS_interop.md")))
    args = p.parse_args()
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    t = time.time()
    model_bytes = build_run(work / "run", args)
    build_s = time.time() - t
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", CHILD, str(work / "run"), str(work / "export"),
                          str(int(args.shard_gb * 1024**3))], capture_output=True, text=True, env=env,
                         cwd=Path(__file__).resolve().parents[1])
    if out.returncode:
        sys.exit(out.stderr[-3000:])
    r = json.loads(out.stdout.strip().splitlines()[-1])
    gb = 1024**3
    result = {
        "model_gb": round(model_bytes / gb, 3), "exported_gb": round(r["bytes"] / gb, 3), "files": len(r["files"]),
        "largest_tensor_gb": round(r["largest_tensor_bytes"] / gb, 3),
        "baseline_rss_gb": round(r["baseline_rss"] / gb, 3), "peak_rss_gb": round(r["peak_rss"] / gb, 3),
        "export_rss_gb": round((r["peak_rss"] - r["baseline_rss"]) / gb, 3),
        "export_rss_over_largest_tensor": round((r["peak_rss"] - r["baseline_rss"]) / r["largest_tensor_bytes"], 2),
        "export_rss_over_model": round((r["peak_rss"] - r["baseline_rss"]) / model_bytes, 3),
        "export_seconds": round(r["export_seconds"], 1), "build_seconds": round(build_s, 1),
        "config": {"hidden": args.hidden, "layers": args.layers, "mlp": args.mlp, "vocab": args.vocab},
    }
    print(json.dumps(result))
    Path(args.results).write_text(RESULTS.format(**result, json=json.dumps(result, indent=2)))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


RESULTS = """# Interop: export memory

`python bench/export_memory.py` (2 shared CPU cores). An LM run of {model_gb} GB fp32 (hidden {config[hidden]},
{config[layers]} layers, mlp {config[mlp]}, vocab {config[vocab]}, the audio head at full width) is exported to
{exported_gb} GB of safetensors in {files} shards (1 GiB limit) + index, in {export_seconds} s.

| | GB |
|---|---|
| whole model | {model_gb} |
| largest exported tensor | {largest_tensor_gb} |
| export process RSS after imports (baseline) | {baseline_rss_gb} |
| export process peak RSS | {peak_rss_gb} |
| **peak - baseline** | **{export_rss_gb}** |

Peak RSS above the baseline is {export_rss_over_largest_tensor}x the largest exported tensor and
{export_rss_over_model}x the whole model. Method: the export runs in a fresh subprocess; its peak RSS (VmHWM) is read
after the imports (baseline) and after the export (peak).

Why it stays near one tensor: checkpoints store stacked leaves ([layers, ...]) in per-layer chunks of at most
64 MiB (`per_layer_chunks` in bajax/train/checkpoint.py); the export reads each exported tensor's sources as
per-layer slices straight from TensorStore, one chunk decoded at a time (`LeafReader` in
bajax/interop/rundir.py), converts them and appends the result to the open safetensors shard in 64 MB row blocks
(a transposed view is never copied whole). What remains above 1x is a tensor built from several sources while
they are alive: the audio head's `linear1` [2h, 8h] concatenates 8 per-position kernels (2 x 0.14 GB here).
(Before per-layer chunks, a stacked leaf of all layers was restored at once: 3.0x the largest such leaf,
1.27 GB above the baseline for this model.)

```json
{json}
```
"""

if __name__ == "__main__":
    main()

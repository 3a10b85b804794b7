"""The audio head alone at the reference shape: forward + backward of its 8 cross-entropies, JAX vs PyTorch.

hidden 1024, 8 attention heads, 3 layers, codebooks [8192, 4096, 2048, 1024 x 5], 64 frames; gradients
of every head parameter, the 8 shared code-embedding tables and the input states (what a train step
needs). Both sides see the same random inputs; each timed call is bracketed by a matmul peak probe.

    python bench/audio_head.py [--repeats 5] [--no-torch] [--malloc tcmalloc|glibc]

Like bench/lm_train.py it restarts on tcmalloc when installed (`bajax.malloc`): on glibc malloc the JAX
head's calls ranged 0.90-1.68 s on this host, on tcmalloc 0.58-0.88 s in two runs (2026-12-01, bench/RESULTS_lm.md).
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bajax.layers.linear import Embedding
from bajax.lm.audio_head import DEPTH, AudioHead
from bajax.lm.losses import cross_entropy
from bajax.train.peak import probe_peak

HIDDEN, HEADS, LAYERS, FRAMES = 1024, 8, 3, 64
SIZES = (8192, 4096, 2048, 1024, 1024, 1024, 1024, 1024)


def head_flops(frames: int = FRAMES) -> float:
    """Training FLOPs (6 per weight MAC) of the head at this shape, as bajax.lm.flops counts them."""
    h = HIDDEN
    per_frame = LAYERS * DEPTH * (8 * h * h + h * (DEPTH + 1)) + sum(c + 1 for c in SIZES) * h
    return 6.0 * per_frame * frames


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((FRAMES, HIDDEN)).astype(np.float32)
    codes = np.stack([rng.integers(0, c + 1, FRAMES) for c in SIZES], 1).astype(np.int32)
    return h, codes


def jax_head_step(scan_layers: bool = False):
    rngs = nnx.Rngs(0)
    head = AudioHead(HIDDEN, HEADS, LAYERS, SIZES, eps=1e-6, scan_layers=scan_layers, rngs=rngs)
    tables = nnx.List([Embedding(c + 1, HIDDEN, axes=("codebook", "embed"), rngs=rngs) for c in SIZES])
    gd, params = nnx.split((head, tables))
    h_np, codes_np = _inputs()
    h, codes = jnp.asarray(h_np), jnp.asarray(codes_np)

    def loss(params, h):
        head, tables = nnx.merge(gd, params)
        logits = head(h, codes, tables)
        return sum(jnp.sum(cross_entropy(logits[k], codes[:, k])[0]) for k in range(DEPTH)) / (FRAMES * DEPTH)

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    return lambda: jax.block_until_ready(grad(params, h))


def torch_head_step():
    import torch
    import torch.nn.functional as F
    from torch_lm import AudioHead as TorchHead

    torch.manual_seed(0)
    head = TorchHead(HIDDEN, HEADS, LAYERS, SIZES, 1e-6)
    tables = torch.nn.ModuleList([torch.nn.Embedding(c + 1, HIDDEN) for c in SIZES])
    h_np, codes_np = _inputs()
    h = torch.from_numpy(h_np).requires_grad_(True)
    codes = torch.from_numpy(codes_np).long()
    params = list(head.parameters()) + list(tables.parameters())

    def step():
        for p in params:
            p.grad = None
        h.grad = None
        logits = head(h, codes, tables)
        loss = sum(F.cross_entropy(logits[k], codes[:, k], reduction="sum") for k in range(DEPTH)) / (FRAMES * DEPTH)
        loss.backward()

    return step


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run_head(repeats: int = 5, *, with_torch: bool = True) -> dict:
    flops = head_flops()
    steps = {"jax": jax_head_step(), "jax_scan": jax_head_step(scan_layers=True)}
    if with_torch:
        steps["torch"] = torch_head_step()
    for fn in steps.values():
        fn()  # compile / warm up
    times = {k: [] for k in steps}
    peaks = []
    for _ in range(repeats):
        for k, fn in steps.items():
            p = probe_peak()
            times[k].append(_timed(fn))
            peaks.append(p)
    peak = statistics.median(peaks)
    out = {"shape": {"hidden": HIDDEN, "heads": HEADS, "layers": LAYERS, "frames": FRAMES, "codebooks": SIZES},
           "gflop": round(flops / 1e9, 1), "peak_gflops_median": round(peak / 1e9, 1)}
    for k, ts in times.items():
        out[k] = {"best_s": round(min(ts), 4), "median_s": round(statistics.median(ts), 4),
                  "mfu_best_vs_median_peak": round(flops / min(ts) / peak, 3), "times_s": [round(t, 3) for t in ts]}
    if "torch" in times:
        out["torch_over_jax_time_median"] = round(
            statistics.median(t / j for j, t in zip(times["jax"], times["torch"])), 3)
    return out


if __name__ == "__main__":
    import argparse
    import json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--malloc", choices=("tcmalloc", "glibc"), default="tcmalloc")
    a = ap.parse_args()
    from bajax import malloc as bajax_malloc

    malloc = bajax_malloc.use(a.malloc)
    print(json.dumps(run_head(a.repeats, with_torch=not a.no_torch) | {"malloc": malloc}, indent=1))

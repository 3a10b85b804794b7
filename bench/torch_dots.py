"""Times GEMMs in PyTorch (MKL, CPU) for bench/lm_roofline.py, in a process of its own.

Reads one JSON list of [batch, m, n, k] on stdin and prints one JSON list of best wall times in seconds:
each GEMM as `torch.bmm` (or `torch.mm` when batch is 1) of contiguous [batch, m, k] x [batch, k, n]
fp32 operands, the layout that needs no copy, so the sum over a step's GEMMs is the least time MKL needs
for that step's matmuls. A process of its own because next to the JAX runtime both libraries ran slower
(bench/RESULTS_lm.md).
"""

from __future__ import annotations

import json
import sys
import time

import torch


def best_seconds(batch: int, m: int, n: int, k: int, repeats: int) -> float:
    a = torch.randn(batch, m, k)
    b = torch.randn(batch, k, n)
    run = (lambda: torch.mm(a[0], b[0])) if batch == 1 else (lambda: torch.bmm(a, b))
    run()  # warm-up (MKL's first call sets up its buffers)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    gemms = json.loads(sys.stdin.read())
    with torch.no_grad():
        times = [best_seconds(*g, repeats) for g in gemms]
    print(json.dumps({"threads": torch.get_num_threads(), "seconds": times}))


if __name__ == "__main__":
    main()

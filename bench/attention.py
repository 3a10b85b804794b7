"""Attention implementations (bajax.kernels.attention) at the small LM's attention shape: xla vs blockwise.

One row of T tokens packed with 4 segments, 10 query heads over 2 KV heads of dim 64 (configs/lm/small.py),
fp32, xla both plain and with `causal_blocks=4` (configs/lm/small.py's setting). The timed call is forward +
backward (gradients of q, k, v), what a train step runs. Peak memory is the compiled executable's
`memory_analysis()` (arguments + outputs + temporaries, one device); an implementation is only timed where
`--max-time-bytes` allows (the dense xla path at 16k needs tens of GB). All are compiled and timed in the
same run; prints one JSON object.

    python bench/attention.py [--lengths 1024,4096,16384] [--repeats 3] [--block 512]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from bajax.kernels import attention as attn

HEADS, KV_HEADS, HEAD_DIM, SEGMENTS = 10, 2, 64, 4


def _inputs(t: int, seed: int = 0):
    ks = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(ks[0], (1, t, HEADS, HEAD_DIM), jnp.float32)
    k = jax.random.normal(ks[1], (1, t, KV_HEADS, HEAD_DIM), jnp.float32)
    v = jax.random.normal(ks[2], (1, t, KV_HEADS, HEAD_DIM), jnp.float32)
    w = jax.random.normal(ks[3], q.shape, jnp.float32)
    seg = jnp.asarray(1 + np.arange(t) * SEGMENTS // t, jnp.int32)[None]
    return q, k, v, w, seg


def _step(impl: str, block: int):
    impl, causal_blocks = ("xla", 4) if impl == "xla_causal_blocks4" else (impl, 1)

    def loss(q, k, v, w, seg):
        return jnp.sum(attn.attention(q, k, v, seg, implementation=impl, block=block,
                                      causal_blocks=causal_blocks) * w)
    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def _peak_bytes(compiled) -> int:
    m = compiled.memory_analysis()
    peak = getattr(m, "peak_memory_in_bytes", 0) or 0
    return int(max(peak, m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                   - m.alias_size_in_bytes))


def measure(impl: str, t: int, repeats: int, block: int, max_time_bytes: int) -> dict:
    args = _inputs(t)
    t0 = time.perf_counter()
    compiled = _step(impl, block).lower(*args).compile()
    row = {"compile_s": round(time.perf_counter() - t0, 2), "peak_mib": round(_peak_bytes(compiled) / 2 ** 20, 1)}
    if _peak_bytes(compiled) > max_time_bytes:
        row["time_s"] = None
        return row
    jax.block_until_ready(compiled(*args))  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    row["time_s"] = round(statistics.median(times), 4)
    row["times_s"] = [round(x, 4) for x in times]
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", default="1024,4096,16384")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--block", type=int, default=attn.DEFAULT_BLOCK)
    p.add_argument("--max-time-bytes", type=float, default=8e9, help="skip timing above this peak memory")
    a = p.parse_args()
    out = {"bench": "attention", "shape": {"batch": 1, "heads": HEADS, "kv_heads": KV_HEADS,
                                           "head_dim": HEAD_DIM, "segments": SEGMENTS, "dtype": "float32"},
           "block": a.block, "step": "forward+backward (dq, dk, dv)", "backend": jax.default_backend(),
           "lengths": {}}
    for t in (int(x) for x in a.lengths.split(",")):
        xla = measure("xla", t, a.repeats, a.block, int(a.max_time_bytes))
        xla4 = measure("xla_causal_blocks4", t, a.repeats, a.block, int(a.max_time_bytes))
        blk = measure("blockwise", t, a.repeats, a.block, int(a.max_time_bytes))
        row = {"xla": xla, "xla_causal_blocks4": xla4, "blockwise": blk,
               "memory_ratio_blockwise_vs_xla": round(blk["peak_mib"] / xla["peak_mib"], 4)}
        if xla["time_s"] and blk["time_s"]:
            row["time_ratio_blockwise_vs_xla"] = round(blk["time_s"] / xla["time_s"], 3)
        out["lengths"][str(t)] = row
    print(json.dumps(out))


if __name__ == "__main__":
    main()

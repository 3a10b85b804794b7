"""Streaming speech synthesis latency on this host (issue 22), fp32; prints one JSON object.

    python bench/stream.py [--sizes tiny,base] [--seconds 10] [--steps 10] [--chunk-codes N] [--repeats 2]
                           [--vocoder hift|griffin-lim] [--flow RUN [--vocoder-run RUN]]

Models (random init: the cost does not depend on the weights):
  tiny  configs/tokenizer/tiny.py (its decoder and RVQ bridge only: the encoder is not on the synthesis path)
        + configs/flow/tiny.py with model.cond_source=tokenizer, model.cond_dim=<tokenizer d_model>
        + the HiFT generator of configs/vocoder/tiny.py
  base  configs/tokenizer/base.py + configs/flow/base.py (the reference sizes) + the HiFT generator of
        configs/vocoder/base.py; every dtype overridden to float32 (this is a CPU); capacity_seconds=12 (the
        estimator caches cost ~4.6 MB per mel frame at base with 10 Euler steps)
  --flow RUN  a trained flow run (Synthesizer.load: its tokenizer from its config), vocoder `--vocoder-run`
        (HiFTVocoder.load) or Griffin-Lim.
  On this 2-core / 24 GB shared host the base tokenizer decoder does not fit: the flow compile goes past 7-9 GB
  (OOM kill). `--tokenizer-size tiny` times base flow + base HiFT with the tiny decoder (4.6 GB peak at 6 s,
  capacity 6); see bench/RESULTS_stream.md.
Each size runs in its own child process, so `peak_rss_mb` (resource.getrusage) is that size's own.

Figures, for random codes of `--seconds` s (12.5 code frames per s), seed 0:
  compile_s             Streamer.warmup(): AOT compile of every flow bucket and both vocoder windows
  first_packet_s        ready_s of chunk 0 when its `chunk_codes` frames are pushed at once: the compute time of
                        the first chunk from the moment its frames exist (the goal: <= 1.0 s)
  chunk_s               each push's wall time (one chunk each; the last from finish()), median
  steady_rtf            median chunk_s / the chunk's audio seconds (the goal: < 1)
  stream_total_s, stream_rtf   all pushes back to back (frames arriving faster than real time), / audio seconds
  offline_s, offline_rtf       Synthesizer(codes, seed) on the whole reply, after a warm-up call (no compile)
  mel_diff              streamed vs offline mel, max and mean |diff| (offline mel std beside it): the
                        tokenizer decoder's GroupNorm statistics from the codes so far instead of the whole
                        reply (plus float rounding); only meaningful for trained weights
  audio_diff            streamed vs offline wave, max |diff| / offline RMS, over samples more than `overlap`
                        mel frames from a chunk join ("away") and within them ("joins"). Informational: the
                        vocoder runs per window with a per-call seed (HiFT's source phases / Griffin-Lim's
                        initial phases start at each window's first sample), so even an identical mel gives a
                        different waveform per window; compare the mel figures for fidelity.
  roofline              each chunk's FLOPs (flow decoder: analytic, its own frames given the caches; vocoder:
                        XLA's count of the compiled window) and the least time the first chunk and a steady
                        chunk can take on this host: FLOPs over the best peak probe of the run (a floor,
                        reached only at 100% of the matmul peak); tokenizer decoder analytic, on the codes so far
  peak_gflops_probe     fp32 matmul peak (bajax.train.peak.probe_peak) before and after the timed blocks:
                        the host is shared and its peak drifts, so absolute times are read against it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

import jax
import numpy as np
from flax import nnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bajax import config as config_lib  # noqa: E402
from bajax.train.peak import probe_peak, usable_cores  # noqa: E402

CAPACITY = {"tiny": 30.0, "base": 12.0}


def _decoder_only(tok_cfg):
    """frozen_decoder's view of a Tokenizer (bridge + decoder) without building the encoder."""
    from bajax.tokenizer.bridge import Bridge
    from bajax.tokenizer.decoder import AudioDecoder
    from bajax.tokenizer.encode import frozen_decoder

    class DecoderOnly(nnx.Module):        # an nnx module, so FrozenDecoder can split its weights out
        def __init__(self, m, rngs):
            self.bridge = Bridge(m.d_model, m.pool, m.rvq, replace=m.replace, dtype=np.dtype(m.dtype), rngs=rngs)
            self.decoder = AudioDecoder.from_config(m, rngs=rngs)

    return frozen_decoder(DecoderOnly(tok_cfg.model, nnx.Rngs(0)))


def _vocoder(kind: str, size: str, run: str | None):
    from bajax.flow.vocoder import GriffinLim
    from bajax.speech.hift import HiFTVocoder

    if run:
        return HiFTVocoder.load(run), f"HiFT run {run}"
    if kind == "griffin-lim":
        return GriffinLim(), "Griffin-Lim"
    from bajax.vocoder.generator import HiFTGenerator

    cfg = config_lib.load(f"configs/vocoder/{size}.py", ["model.dtype=float32"]).model
    return (HiFTVocoder(HiFTGenerator(cfg, rngs=nnx.Rngs(2)), sample_rate=int(cfg.sampling_rate)),
            f"HiFT configs/vocoder/{size}.py (random init)")


def build(size: str, args):
    from bajax.flow.model import FlowDecoder
    from bajax.speech.pipeline import Synthesizer

    if size == "trained":
        vocoder, vdesc = _vocoder(args.vocoder, "tiny", args.vocoder_run)
        from bajax import runs

        synth = Synthesizer.load(args.flow, steps=args.steps, vocoder=vocoder)
        models = (runs.read_config(runs.resolve(args.flow, "flow"), "flow").model,
                  runs.read_config(runs.resolve(synth.tokenizer_run, "tokenizer"), "tokenizer").model)
        return synth, models, {"flow": args.flow, "tokenizer": synth.tokenizer_run, "vocoder": vdesc}
    tok_size = args.tokenizer_size or size
    tok_cfg = config_lib.load(f"configs/tokenizer/{tok_size}.py", ["model.dtype=float32"])
    d = int(tok_cfg.model.d_model)
    flow_cfg = config_lib.load(f"configs/flow/{size}.py", [
        "model.cond_source=tokenizer", f"model.cond_dim={d}", "model.dtype=float32"]).model
    flow = FlowDecoder(flow_cfg, rngs=nnx.Rngs(1))
    vocoder, vdesc = _vocoder(args.vocoder, size, None)
    synth = Synthesizer(_decoder_only(tok_cfg), flow, tok_cfg, steps=args.steps, vocoder=vocoder)
    return synth, (flow_cfg, tok_cfg.model), {
        "tokenizer": f"configs/tokenizer/{tok_size}.py (decoder + bridge, random init)",
        "flow": f"configs/flow/{size}.py cond_source=tokenizer cond_dim={d} (random init)",
        "vocoder": vdesc, "dtype": "float32"}


def _stream_once(streamer, codes):
    """(chunks, per-push seconds, streamed mel): frames pushed chunk by chunk, back to back."""
    mels, push = [], streamer.vocoder.push

    def record(mel, final=False):
        mels.append(np.asarray(mel))
        return push(mel, final=final)

    streamer.vocoder.push = record
    cc = streamer.flow.chunk_codes
    chunks, times, pending = [], [], 0.0
    try:
        streamer.reset()
        for i in range(0, len(codes) + 1, cc):       # past the last frame: finish()
            t0 = time.perf_counter()
            got = streamer.push(codes[i:i + cc]) if i < len(codes) else streamer.finish()
            pending += time.perf_counter() - t0
            if got:                                  # a push that completes no chunk adds to the next one
                times.append(pending)
                pending = 0.0
            chunks += got
        if i < len(codes):                           # len(codes) a multiple of cc: finish() not yet called
            t0 = time.perf_counter()
            got = streamer.finish()
            times.append(pending + time.perf_counter() - t0)
            chunks += got
    finally:
        streamer.vocoder.push = push
    return chunks, times, np.concatenate(mels)


def _audio_diff(streamed, offline, hop, chunk_frames, overlap):
    n = min(len(streamed), len(offline))
    diff = np.abs(streamed[:n] - offline[:n])
    rms = float(np.sqrt(np.mean(offline[:n] ** 2))) or 1.0
    frame = np.arange(n) // hop
    joins = np.arange(chunk_frames, n // hop + 1, chunk_frames)
    near = np.zeros(n, bool)
    for j in joins:
        near |= np.abs(frame - j) <= overlap
    out = {"offline_rms": round(rms, 5), "length_samples": [len(streamed), len(offline)],
           "joins_at_frames": [int(j) for j in joins if j < n // hop]}
    out["max_rel_away_from_joins"] = round(float(diff[~near].max()) / rms, 4) if (~near).any() else None
    out["max_rel_at_joins"] = round(float(diff[near].max()) / rms, 4) if near.any() else None
    out["mean_rel_away_from_joins"] = round(float(diff[~near].mean()) / rms, 4) if (~near).any() else None
    return out


def _gflop(executable) -> float:
    cost = executable.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"]) / 1e9


def _roofline(streamer, flow_cfg, tok_cfg, n_chunks: int, chunk_audio_s: float, peak_gflops: float) -> dict:
    """The FLOPs of each chunk and the least time they take at the run's best matmul peak.

    Flow decoder: the analytic count (bajax/flow/flops.py) of the chunk's own frames, given the caches of the
    earlier ones: sample_flops of the reply so far minus that of the frames before (XLA's cost_analysis counts
    the Euler-step loop's body once, so it cannot be used here). Tokenizer decoder: analytic, on the codes so
    far (a chunk decodes them all again). Vocoder: XLA's count of the compiled window (HiFT has no loop)."""
    from bajax.flow import flops as flow_flops
    from bajax.tokenizer import flops as tok_flops

    voc, f, steps = streamer.vocoder, streamer.flow.frames, streamer.flow.synth.steps
    flow_gflop = [(flow_flops.sample_flops(flow_cfg, (i + 1) * f, steps)
                   - flow_flops.sample_flops(flow_cfg, i * f, steps)) / 1e9 for i in range(n_chunks)]
    cc = streamer.flow.chunk_codes
    decoder_gflop = [tok_flops.forward_flops(tok_cfg, (i + 1) * cc)["decoder"] / 1e9 for i in range(n_chunks)]
    out = {"flow_gflop_per_chunk": [round(g, 1) for g in flow_gflop],
           "tokenizer_decoder_gflop_per_chunk": [round(g, 1) for g in decoder_gflop]}
    windows = {}
    if hasattr(voc.vocoder, "_executables"):          # Griffin-Lim: no per-window executable to count
        windows = {n: _gflop(voc.vocoder._executables[voc.vocoder.padded_frames(n)])
                   for n in (voc.chunk_frames, voc.window)}
        out["vocoder_gflop_per_window"] = {str(n): round(g, 2) for n, g in windows.items()}
    chunk = [g + d + windows.get(voc.chunk_frames if i == 0 else voc.window, 0.0)
             for i, (g, d) in enumerate(zip(flow_gflop, decoder_gflop))]
    steady = statistics.median(chunk[1:] or chunk)
    return out | {
        "first_chunk_gflop": round(chunk[0], 1),
        "first_packet_floor_s": round(chunk[0] / peak_gflops, 3),
        "steady_chunk_gflop": round(steady, 1),
        "steady_rtf_floor": round(steady / peak_gflops / chunk_audio_s, 3),
        "peak_gflops_used": round(peak_gflops, 1)}


def _log(what: str) -> None:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"[{time.strftime('%H:%M:%S')}] {what} (peak RSS {rss:.0f} MB)", file=sys.stderr, flush=True)


def run_size(size: str, args) -> dict:
    from bajax.speech.stream import Streamer

    t0 = time.perf_counter()
    synth, (flow_cfg, tok_cfg), desc = build(size, args)
    build_s = time.perf_counter() - t0
    _log(f'{size}: built')
    capacity = args.capacity or CAPACITY.get(size, 30.0)
    streamer = Streamer(synth, chunk_codes=args.chunk_codes, seed=0, capacity_seconds=capacity,
                        overlap=args.overlap, context=args.context)
    cc, per_code, hop = streamer.flow.chunk_codes, synth.mel_per_code, synth.vocoder.hop
    n_codes = int(round(args.seconds * synth.code_rate))
    rng = np.random.default_rng(0)
    codes = np.stack([rng.integers(0, s, n_codes) for s in synth.codebook_sizes], axis=1).astype(np.int32)
    audio_s = n_codes * per_code * hop / synth.vocoder.sample_rate
    chunk_audio_s = cc * per_code * hop / synth.vocoder.sample_rate

    t0 = time.perf_counter()
    flow_compile = streamer.flow.warmup()
    _log('flow compiled')
    voc_compile = streamer.vocoder.warmup()
    compile_s = time.perf_counter() - t0
    peaks = [probe_peak()]
    _log('vocoder compiled')

    _stream_once(streamer, codes)                   # untimed pass: first-call allocations
    runs = []
    for _ in range(args.repeats):
        chunks, times, mel_st = _stream_once(streamer, codes)
        runs.append({"first_packet_s": chunks[0].ready_s, "chunk_s": times,
                     "total_s": chunks[-1].ready_s, "chunks": chunks, "mel": mel_st})
    peaks.append(probe_peak())
    _log('streamed')

    t0 = time.perf_counter()
    wave_off, mel_off = synth(codes, 0)             # warm-up: compiles the whole-reply shape
    offline_compile_s = time.perf_counter() - t0
    _log('offline compiled')
    off_t = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        wave_off, mel_off = synth(codes, 0)
        off_t.append(time.perf_counter() - t0)
    peaks.append(probe_peak())

    best = min(runs, key=lambda r: r["total_s"])
    chunk_med = [statistics.median(ts) for ts in zip(*[r["chunk_s"] for r in runs])]
    mel_st = best["mel"]
    wave_st = np.concatenate([c.pcm for c in best["chunks"]])
    d = np.abs(mel_st - mel_off) if mel_st.shape == mel_off.shape else None
    steady = statistics.median(chunk_med[1:-1] or chunk_med)
    return {
        "models": desc, "build_s": round(build_s, 1),
        "reply": {"seconds": round(audio_s, 3), "code_frames": n_codes, "mel_frames": int(n_codes * per_code)},
        "streamer": {"chunk_codes": cc, "chunk_mel_frames": cc * per_code, "chunk_audio_s": chunk_audio_s,
                     "capacity_seconds": capacity, "buckets_chunks": list(streamer.flow.buckets),
                     "overlap": args.overlap, "context": args.context, "steps": synth.steps,
                     "guidance": synth.guidance},
        "compile_s": {"total": round(compile_s, 1), "flow": round(flow_compile, 1),
                      "vocoder": round(voc_compile, 1), "offline_first_call": round(offline_compile_s, 1)},
        "first_packet_s": round(statistics.median(r["first_packet_s"] for r in runs), 3),
        "first_packet_s_runs": [round(r["first_packet_s"], 3) for r in runs],
        "chunk_s_median_over_repeats": [round(t, 3) for t in chunk_med],
        "chunk_s_median": round(steady, 3),
        "steady_rtf": round(steady / chunk_audio_s, 3),
        "steady_rtf_note": "median over the chunks between the first and the last (the last may be partial)",
        "stream_total_s": round(statistics.median(r["total_s"] for r in runs), 3),
        "stream_rtf": round(statistics.median(r["total_s"] for r in runs) / audio_s, 3),
        "offline_s": round(statistics.median(off_t), 3), "offline_s_runs": [round(t, 3) for t in off_t],
        "offline_rtf": round(statistics.median(off_t) / audio_s, 3),
        "mel_diff": None if d is None else {
            "max_abs": round(float(d.max()), 5), "mean_abs": round(float(d.mean()), 5),
            "offline_mel_std": round(float(mel_off.std()), 4),
            "max_abs_per_chunk": [round(float(d[i:i + cc * per_code].max()), 5)
                                  for i in range(0, len(d), cc * per_code)]},
        "mel_shapes": [list(mel_st.shape), list(mel_off.shape)],
        "audio_diff": _audio_diff(wave_st, np.asarray(wave_off, np.float32), hop, cc * per_code, args.overlap),
        "roofline": _roofline(streamer, flow_cfg, tok_cfg, math.ceil(n_codes / cc), chunk_audio_s, max(peaks) / 1e9),
        "peak_gflops_probe": [round(p / 1e9, 1) for p in peaks],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="tiny,base", help="comma list of tiny, base")
    p.add_argument("--flow", default=None, help="a trained flow run (cond_source=tokenizer) to time as well")
    p.add_argument("--vocoder-run", default=None, help="a trained HiFT run for --flow (default: --vocoder)")
    p.add_argument("--vocoder", default="hift", choices=("hift", "griffin-lim"))
    p.add_argument("--seconds", type=float, default=10.0, help="reply length (12.5 code frames per s)")
    p.add_argument("--steps", type=int, default=10, help="Euler steps")
    p.add_argument("--chunk-codes", type=int, default=None, help="default: the flow's attention chunk")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--overlap", type=int, default=8)
    p.add_argument("--context", type=int, default=8)
    p.add_argument("--capacity", type=float, default=None,
                   help="Streamer capacity_seconds for every size (default: tiny 30, base 12, --flow 30)")
    p.add_argument("--simplified-constants", action="store_true",
                   help="jax_use_simplified_jaxpr_constants=True (base: keeps compile memory bounded)")
    p.add_argument("--tokenizer-size", default=None, choices=("tiny", "base"),
                   help="the tokenizer decoder's size for every size (default: the same as the flow's)")
    p.add_argument("--only", default=None, help=argparse.SUPPRESS)     # one size in this process
    args = p.parse_args()

    if args.simplified_constants:
        # Closed-over arrays (the tokenizer decoder's weights, captured by `synth.decode`) become executable
        # arguments instead of HLO literals: one copy, not one per compiled bucket.
        jax.config.update("jax_use_simplified_jaxpr_constants", True)
    if args.only:
        print(json.dumps(run_size(args.only, args)))
        return
    out = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
           "jax": jax.__version__, "backend": jax.default_backend(), "usable_cores": usable_cores(),
           "argv": sys.argv[1:], "goal": {"first_packet_s_max": 1.0, "steady_rtf_max": 1.0}, "sizes": {}}
    sizes = [s for s in args.sizes.split(",") if s]
    if args.flow:
        sizes.append("trained")
    passthrough = [a for a in sys.argv[1:]]
    for size in sizes:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), *passthrough, "--only", size],
                              cwd=ROOT, capture_output=True, text=True)
        sys.stderr.write(proc.stderr[-2000:])
        if proc.returncode:
            out["sizes"][size] = {"error": f"exit status {proc.returncode} (-9: killed, e.g. out of memory)",
                                  "stderr": proc.stderr[-3000:]}
        else:
            out["sizes"][size] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"[{size}] done", file=sys.stderr, flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

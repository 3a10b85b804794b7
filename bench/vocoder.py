"""HiFT vocoder speed (and copy-synthesis quality) on this host, fp32; prints one JSON object.

    python bench/vocoder.py [--repeats 5] [--seconds 10] [--skip-torch] [--skip-synthesis]
                            [--skip-tiny-train] [--skip-base-train] [--train-steps 3] [--vocoder-run RUN]

Figures (random weights for speed: it does not depend on them):
  synthesis   the base generator (`reference_model_config()`, Baichuan's `Cosy24kVocoder`) on `--seconds` of
              50 Hz mel, batch 1, jitted the way bajax runs it (`jax.jit` over the split module state, as
              bajax/speech/hift.py does); compile timed apart. The same mel through the PyTorch reference
              structure (tests/torch_ref/hift.py, eager, eval mode, `torch.no_grad()`) in the same run, with
              as many threads as JAX's CPU client uses (the cores this process may run on). The two alternate
              run by run, a short pause between (so neither's spinning thread pool steals from the other), and
              `speedup_vs_torch_eager` is the ratio of medians (goal >= 1.5); `rtf` = seconds / audio seconds.
  train_step  the REAL GAN train step (`Trainer(cfg).compiled_step()`: discriminators' Adam update, then the
              generator's) of configs/vocoder/tiny.py and configs/vocoder/base.py (the reference widths) at
              `--base-batch` x `--base-crop` s (default 1 x 0.48 s), on one device, on batches of the
              embedded corpus; best / median of `--train-steps` steps after a warm-up step, each waited for.
              `gflops_per_s` uses the analytic `flops_per_step` (bajax/models/vocoder.py).
  quality     (with --vocoder-run RUN) held-out copy synthesis: the first `--quality-files` distinct audio
              files of the embedded corpus's `valid` split, first `--quality-seconds` s at 24 kHz, mel =
              `flow_mel_24k`, through HiFT (`HiFTVocoder.load(RUN)`) and Griffin-Lim (32 iterations);
              `mr_stft_distance` and `mel_l1` (bajax/eval/spectral.py) against the original, means.
The host is shared and its fp32 peak drifts (70-310 GFLOP/s hour to hour): every timed block is bracketed by
a matmul peak probe (`bajax.train.peak.probe_peak`), and ratios measured in the same run are the figures
to compare across runs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)                              # tests.torch_ref

from bajax.audio.mel import LOG_MEL_FLOOR  # noqa: E402
from bajax.train.peak import probe_peak, usable_cores  # noqa: E402
from bajax.vocoder.config import reference_model_config  # noqa: E402
from bajax.vocoder.flops import generator_flops  # noqa: E402


def _stats(times: list[float]) -> dict:
    return {"best_s": round(min(times), 4), "median_s": round(statistics.median(times), 4),
            "times_s": [round(t, 3) for t in times]}


def _random_mel(frames: int, seed: int = 0) -> np.ndarray:
    """A log-mel-like [1, frames, 80] float32 (values in the range of flow_mel_24k, floored at ln 1e-5)."""
    rng = np.random.default_rng(seed)
    return np.maximum(rng.normal(-5.0, 2.0, (1, frames, 80)), LOG_MEL_FLOOR).astype(np.float32)


# -- 1. synthesis ------------------------------------------------------------------------------------------

def synthesis(seconds: float, repeats: int, with_torch: bool, pause: float) -> dict:
    from bajax.vocoder.generator import HiFTGenerator

    m = reference_model_config()
    frames = int(round(seconds * 50))
    mel = _random_mel(frames)
    gen = HiFTGenerator(m, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(gen)
    key = jax.random.key(0)

    def synth(s, x, k):
        wave, f0 = nnx.merge(graphdef, s)(x, k)
        return wave, f0

    t0 = time.perf_counter()
    compiled = jax.jit(synth).lower(state, jax.ShapeDtypeStruct(mel.shape, jnp.float32), key).compile()
    compile_s = time.perf_counter() - t0
    mel_dev = jax.device_put(mel)

    def run_jax():
        jax.block_until_ready(compiled(state, mel_dev, key))

    run_torch = _torch_synth(m, mel) if with_torch else None
    run_jax()                                         # warm-up (first-call allocations)
    if run_torch:
        run_torch()
    jax_t, torch_t, peaks = [], [], []
    for _ in range(repeats):                          # alternating: both see the same host load
        peaks.append(probe_peak())
        time.sleep(pause)
        jax_t.append(_timed(run_jax))
        if run_torch:
            time.sleep(pause)
            torch_t.append(_timed(run_torch))
    peaks.append(probe_peak())
    flops = generator_flops(m, frames)
    out = {"mel_frames": frames, "audio_seconds": frames / 50, "batch": 1, "gflop": round(flops / 1e9, 1),
           "peak_gflops_probe_per_round": [round(p / 1e9, 1) for p in peaks],
           "jax": {"compile_s": round(compile_s, 1), **_stats(jax_t),
                   "rtf_median": round(statistics.median(jax_t) * 50 / frames, 4),
                   "gflops_per_s_best": round(flops / min(jax_t) / 1e9, 1),
                   "mfu_best_vs_probe": round(flops / min(jax_t) / max(peaks), 3)}}
    if torch_t:
        import torch

        out["torch_eager"] = {"threads": torch.get_num_threads(), "torch": torch.__version__, **_stats(torch_t),
                              "rtf_median": round(statistics.median(torch_t) * 50 / frames, 4),
                              "gflops_per_s_best": round(flops / min(torch_t) / 1e9, 1)}
        out["speedup_vs_torch_eager"] = round(statistics.median(torch_t) / statistics.median(jax_t), 3)
        out["speedup_vs_torch_eager_best"] = round(min(torch_t) / min(jax_t), 3)
        out["speedup_per_round"] = [round(b / a, 3) for a, b in zip(jax_t, torch_t)]
        out["goal_speedup"] = 1.5
    return out


def _torch_synth(m, mel: np.ndarray):
    """A no-argument call of the PyTorch reference generator on `mel` (eager, eval mode, no_grad)."""
    import torch

    from tests.torch_ref.hift import from_config

    torch.set_num_threads(usable_cores())
    torch.manual_seed(0)
    with warnings.catch_warnings():                   # torch.nn.utils.weight_norm: the reference's own call
        warnings.simplefilter("ignore", FutureWarning)
        model = from_config(m.to_dict()).eval()
    batch = {"speech_feat": torch.from_numpy(mel)}

    def run():
        with torch.no_grad():
            model(batch)

    return run


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# -- 2. train step ------------------------------------------------------------------------------------------

def train_step(spec: str, overrides: list[str], steps: int) -> dict:
    from bajax import models, sharding
    from bajax.config import load
    from bajax.train.trainer import Trainer

    cfg = load(spec, overrides + ["metrics.tensorboard=false"])
    trainer = Trainer(cfg, tempfile.mkdtemp(prefix="bajax-bench-vocoder-"), devices=jax.devices()[:1])
    flops = models.get("vocoder").flops_per_step(cfg)
    with trainer.scope():
        state = trainer.fresh_state()
        it = iter(trainer.dataset())
        batches = [sharding.to_global(next(it), trainer.mesh) for _ in range(steps + 1)]
        t0 = time.perf_counter()
        step = trainer.compiled_step().lower(state, batches[0]).compile()
        compile_s = time.perf_counter() - t0
        box = {"state": state}

        def one(batch):
            box["state"], metrics = step(box["state"], batch)
            box["metrics"] = jax.block_until_ready(metrics)

        one(batches[0])                               # warm-up
        peaks = [probe_peak()]
        times = [_timed(lambda b=b: one(b)) for b in batches[1:]]
        peaks.append(probe_peak())
    rows, samples = batches[0]["wave24"].shape
    med = statistics.median(times)
    return {"config": os.path.relpath(spec, ROOT), "overrides": overrides,
            "batch": f"{rows} x {samples / 24000:g} s", "params_m": round(trainer.num_trainable()[1] / 1e6, 2),
            "compile_s": round(compile_s, 1), "steps_timed": len(times), **_stats(times),
            "gflop_per_step": round(flops / 1e9, 2), "gflops_per_s_median": round(flops / med / 1e9, 1),
            "mfu_median_vs_probe": round(flops / med / max(peaks), 3),
            "audio_seconds_per_s_median": round(rows * samples / 24000 / med, 3),
            "peak_gflops_probe": [round(p / 1e9, 1) for p in peaks],
            "loss_gen": round(float(box["metrics"]["loss_gen"]), 3),
            "loss_disc": round(float(box["metrics"]["loss_disc"]), 3)}


# -- 3. quality ---------------------------------------------------------------------------------------------

def quality(run: str, n_files: int, seconds: float) -> dict:
    from bajax.eval.copy_synthesis import held_out_waves, score
    from bajax.flow.vocoder import GriffinLim
    from bajax.speech.hift import HiFTVocoder

    hift, gl = HiFTVocoder.load(run), GriffinLim()
    waves = held_out_waves(n_files, seconds)
    rows = score({"hift": hift, "griffin_lim": gl}, waves)
    mean = {name: {k: round(float(np.mean([r[name][k] for r in rows])), 4) for k in ("mr_stft", "mel_l1")}
            for name in ("hift", "griffin_lim")}
    per_file = [{"seconds": round(len(w) / 24000, 2),
                 **{name: {k: round(v, 4) for k, v in r[name].items()} for name in r}}
                for w, r in zip(waves, rows)]
    return {"run": hift.source, "files": len(rows), "split": "valid", "seconds_each": seconds,
            "griffin_lim_iters": gl.n_iter, "mean": mean,
            "hift_over_griffin_lim": {k: round(mean["hift"][k] / mean["griffin_lim"][k], 3)
                                      for k in ("mr_stft", "mel_l1")},
            "per_file": per_file}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed synthesis runs of each framework")
    ap.add_argument("--seconds", type=float, default=10.0, help="audio seconds of mel to synthesise")
    ap.add_argument("--pause", type=float, default=0.3, help="seconds between timed runs (thread pools idle)")
    ap.add_argument("--skip-synthesis", action="store_true")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--skip-tiny-train", action="store_true")
    ap.add_argument("--skip-base-train", action="store_true",
                    help="leave out the base GAN step (~2.5 min on 2 cores, 1.5 of them compiling)")
    ap.add_argument("--train-steps", type=int, default=3, help="timed steps after the warm-up step")
    ap.add_argument("--base-batch", type=int, default=1)
    ap.add_argument("--base-crop", type=float, default=0.48, help="crop seconds of the base train step")
    ap.add_argument("--vocoder-run", default="", help="a trained vocoder run: adds the quality figures")
    ap.add_argument("--quality-files", type=int, default=8)
    ap.add_argument("--quality-seconds", type=float, default=3.0)
    args = ap.parse_args()

    jax.config.update("jax_platforms", "cpu")
    out = {"date": datetime.datetime.now().isoformat(timespec="minutes"), "command": " ".join(sys.argv),
           "host": {"cpu_count": os.cpu_count(), "threads": usable_cores(), "jax": jax.__version__,
                    "load_avg_1m": round(os.getloadavg()[0], 2), "dtype": "float32"}}
    if not args.skip_synthesis:
        out["synthesis"] = synthesis(args.seconds, args.repeats, not args.skip_torch and _has_torch(), args.pause)
    train = {}
    if not args.skip_tiny_train:
        # The GAN step (the tiny config's first 400 steps are its reconstruction warm-up, without discriminators).
        train["tiny"] = train_step(os.path.join(ROOT, "configs/vocoder/tiny.py"), ["model.loss.adversarial_start=0"],
                                   args.train_steps)
    if not args.skip_base_train:
        train["base"] = train_step(os.path.join(ROOT, "configs/vocoder/base.py"),
                                   [f"train.batch_size={args.base_batch}",
                                    f"data.audio.crop_seconds={args.base_crop}"], args.train_steps)
    if train:
        out["train_step"] = train
    if args.vocoder_run:
        out["quality"] = quality(args.vocoder_run, args.quality_files, args.quality_seconds)
    out["host"]["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=1))


def _has_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


if __name__ == "__main__":
    main()

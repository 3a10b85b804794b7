"""Evaluation metric speed on this host (bajax/eval): audio seconds evaluated per wall second; prints one JSON object.

    python bench/eval.py [--utterances 8] [--seconds 3] [--rounds 5] [--snr-db 20] [--language zh|en]
                         [--metrics mel_l1,pesq_wb,...] [--skip-whisper] [--whisper-dir DIR] [--whisper-cap 16]
                         [--skip-first-call]

What is measured, per metric (names as in bajax/eval):
  utterances  `--utterances` real espeak utterances of the embedded corpus, the first `--seconds` s of each at
              24 kHz: with `--language zh` (default) exactly `bajax.eval.copy_synthesis.held_out_waves` (the
              `valid` split, which is all Mandarin); with `--language en` the first distinct English audio files
              of the `train` split (the corpus has no English in `valid`), cut the same way. The estimate is each
              wave plus seeded white Gaussian noise at `--snr-db` dB SNR, so every metric has real work.
  steady      `--rounds` rounds; in each, every metric runs over all utterances in turn (metrics interleaved,
              so host-load drift hits them alike), after one excluded warm-up call per metric. Figures:
              `audio_s_per_s` = utterance audio seconds / round wall seconds (median over rounds),
              `s_per_utt` = median round seconds / utterances, `cpu_per_wall` = process CPU seconds / wall
              seconds of the round (median; > 1 means the metric used more than one core).
  first_call  in a fresh Python process per metric (after the utterances are loaded there): seconds of the
              first call on utterance 0, which includes importing the metric's package and loading its model
              (PESQ, STOI: C / numpy; speaker: Resemblyzer + torch; DNSMOS: two onnxruntime sessions;
              Whisper: transformers + torch + the checkpoint), and of the second call on the same utterance.
  threads     torch's intra-op threads (Whisper runs with torch's default, or `--torch-threads`; speaker
              similarity pins 1 thread),
              onnxruntime's intra-op setting of speechmos's sessions (0 = onnxruntime's default, one per
              physical core), and the process's OS thread count.
Metric calls: mel_l1, mr_stft_distance, pesq_wb, stoi, estoi, f0_rmse, voicing_error, speaker_similarity take
(reference, estimate) at 24 kHz (each resamples as it needs; f0_rmse and voicing_error each compute both F0
tracks); dnsmos and the recognisers take the estimate alone. asr_pocketsphinx = `recognizer_from_spec(
"pocketsphinx").transcribe`. asr_whisper_* = `bajax.eval.asr.Whisper` on a checkpoint with whisper-tiny.en's
architecture (d_model 384, 4 + 4 layers, 6 heads, vocabulary 51864, 37.8M parameters) and RANDOM weights,
written to a temporary directory (or `--whisper-dir`): its speed is representative, its transcripts are
meaningless. Random weights never emit end-of-text, so greedy decoding runs to the token cap: `_cap128` is the
recogniser's default cap (the worst case, a model that babbles), `_cap{N}` caps at `--whisper-cap` new tokens
(about what a trained model emits for 3 s of English speech). Whisper pads every call to a 30 s window and
DNSMOS repeats a clip shorter than 9.01 s until it is that long, so their cost per utterance barely depends on
its length: `s_per_utt` is their figure to budget with, and `audio_s_per_s` grows with `--seconds`.
wer_*/cer_* time `bajax.eval.text.wer`/`cer` on one corpus-level call over one text pair per utterance (the
first transcript segment of each audio file against a copy with every fifth word or character dropped), in
the utterances' language; their audio seconds are those segments' durations. The ASR time is not included.
The host may be shared with other jobs: see `load_avg_1m` before and after.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SR = 24000
HOP = 480
SIGNAL_METRICS = ("mel_l1", "mr_stft_distance", "pesq_wb", "stoi", "estoi", "f0_rmse", "voicing_error",
                  "speaker_similarity", "dnsmos", "asr_pocketsphinx")
WHISPER_METRICS = ("asr_whisper_cap128", "asr_whisper_capN")
TEXT_METRICS = ("wer", "cer")


# -- data ---------------------------------------------------------------------------------------------------

def utterances(count: int, seconds: float, language: str) -> tuple[list[np.ndarray], list[tuple[str, float]]]:
    """(24 kHz waves, [(first segment text, its seconds)] of the same files)."""
    from bajax.audio import io as audio_io
    from bajax.audio.resample import resample
    from bajax.data import manifest, sources
    from bajax.eval.copy_synthesis import held_out_waves

    entries, _ = manifest.read(str(sources.corpus_dir() / sources.CORPUS_MANIFEST))
    split = "valid" if language == "zh" else "train"
    files: dict[str, tuple[str, float] | None] = {}
    for entry in entries:
        if entry.split != split or entry.language != language:
            continue
        path = entry.audio[0]
        if path not in files and len(files) == count:
            break
        seg = next((s for s in entry.segments if s.text), None)
        if files.get(path) is None:
            files[path] = (seg.text, seg.end - seg.start) if seg else None
    if language == "zh":
        waves = held_out_waves(count, seconds)
    else:
        waves = []
        for path in files:
            wave, sr = audio_io.read(path)
            wave = resample(wave, sr, SR)[: int(seconds * SR)]
            waves.append(np.asarray(wave[: len(wave) // HOP * HOP], np.float32))
    texts = [t for t in files.values() if t is not None]
    if len(waves) != count or len(texts) != count:
        raise SystemExit(f"asked for {count} utterances; the corpus gave {len(waves)} waves, {len(texts)} texts")
    return waves, texts


def degrade(waves: list[np.ndarray], snr_db: float) -> list[np.ndarray]:
    out = []
    for i, w in enumerate(waves):
        noise = np.random.default_rng(1000 + i).standard_normal(w.size)
        scale = np.sqrt(np.mean(w.astype(np.float64) ** 2) / 10 ** (snr_db / 10))
        out.append((w + scale * noise).astype(np.float32))
    return out


def drop_every_fifth(text: str, language: str) -> str:
    if language == "zh":
        return "".join(c for i, c in enumerate(text) if i % 5 != 4)
    return " ".join(w for i, w in enumerate(text.split()) if i % 5 != 4)


# -- metrics ------------------------------------------------------------------------------------------------

def make_metric(name: str, args):
    """call(reference, estimate) -> value; a model (recogniser) is loaded inside the first call."""
    if name == "mel_l1":
        from bajax.eval.spectral import mel_l1
        return lambda ref, est: mel_l1(ref, est)
    if name == "mr_stft_distance":
        from bajax.eval.spectral import mr_stft_distance
        return lambda ref, est: mr_stft_distance(ref, est)
    if name in ("pesq_wb", "stoi", "estoi"):
        from bajax.eval import quality
        fn = getattr(quality, name)
        return lambda ref, est: fn(ref, est, SR)
    if name in ("f0_rmse", "voicing_error"):
        from bajax.eval import f0
        fn = getattr(f0, name)
        return lambda ref, est: fn(ref, est, SR)
    if name == "speaker_similarity":
        from bajax.eval.speaker import speaker_similarity
        return lambda ref, est: speaker_similarity(ref, est, SR)
    if name == "dnsmos":
        from bajax.eval.mos import dnsmos
        return lambda ref, est: dnsmos(est, SR)["ovrl"]
    if name == "asr_pocketsphinx":
        from bajax.eval.asr import recognizer_from_spec
        box = {}

        def run(ref, est):
            if "r" not in box:
                box["r"] = recognizer_from_spec("pocketsphinx")
            return box["r"].transcribe(est, SR)
        return run
    if name in WHISPER_METRICS:
        cap = 128 if name == "asr_whisper_cap128" else args.whisper_cap
        box = {}

        def run(ref, est):
            if "r" not in box:
                box["r"] = _whisper(args.whisper_dir, cap, box)
            return box["r"].transcribe(est, SR)
        run.box = box
        return run
    raise ValueError(f"unknown metric {name!r}")


def _whisper(directory: str, cap: int, box: dict):
    import transformers

    from bajax.eval.asr import Whisper

    transformers.logging.set_verbosity_error()
    rec = Whisper(directory, max_new_tokens=cap)
    generate = rec.model.generate

    def counted(*a, **k):                             # record how many tokens each call produced
        ids = generate(*a, **k)
        box["tokens"] = int(ids.shape[-1])
        return ids
    rec.model.generate = counted
    return rec


def text_metric(name: str, language: str):
    from bajax.eval import text
    fn = getattr(text, name)
    return lambda refs, hyps: fn(refs, hyps, language)


def make_random_whisper(directory: str) -> str:
    """A WhisperForConditionalGeneration with whisper-tiny.en's architecture and RANDOM weights (seed 0), and a
    WhisperProcessor whose tokenizer has a vocabulary of the same size (256 byte symbols, fillers, specials)."""
    import torch
    import transformers

    os.makedirs(directory, exist_ok=True)
    vocab_size = 51864
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):                              # GPT-2's byte -> printable symbol map
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|translate|>", "<|transcribe|>", "<|startoflm|>",
                "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
    vocab = {chr(c): i for i, c in enumerate(cs)}
    for i in range(vocab_size - len(vocab) - len(specials)):
        vocab[f"w{i}"] = len(vocab)
    for s in specials:
        vocab[s] = len(vocab)
    with open(os.path.join(directory, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(directory, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")
    eot = vocab["<|endoftext|>"]
    tok = transformers.WhisperTokenizer(os.path.join(directory, "vocab.json"), os.path.join(directory, "merges.txt"),
                                        unk_token="<|endoftext|>", bos_token="<|endoftext|>",
                                        eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": specials[1:]})
    cfg = transformers.WhisperConfig(
        vocab_size=vocab_size, num_mel_bins=80, d_model=384, encoder_layers=4, decoder_layers=4,
        encoder_attention_heads=6, decoder_attention_heads=6, encoder_ffn_dim=1536, decoder_ffn_dim=1536,
        max_source_positions=1500, max_target_positions=448, decoder_start_token_id=vocab["<|startoftranscript|>"],
        eos_token_id=eot, bos_token_id=eot, pad_token_id=eot)
    torch.manual_seed(0)
    model = transformers.WhisperForConditionalGeneration(cfg).eval()
    g = model.generation_config
    g.decoder_start_token_id, g.eos_token_id, g.pad_token_id = vocab["<|startoftranscript|>"], eot, eot
    g.no_timestamps_token_id = vocab["<|notimestamps|>"]
    g.is_multilingual, g.forced_decoder_ids = False, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(directory)
        transformers.WhisperProcessor(transformers.WhisperFeatureExtractor(), tok).save_pretrained(directory)
    return directory


# -- timing -------------------------------------------------------------------------------------------------

def first_call(name: str, args) -> dict:
    """(Run in a fresh process.) Seconds of the first and second call on utterance 0, imports included."""
    waves, texts = utterances(args.utterances, args.seconds, args.language)
    ests = degrade(waves, args.snr_db)
    t = []
    if name in TEXT_METRICS:
        refs = [texts[0][0]]
        hyps = [drop_every_fifth(texts[0][0], args.language)]
        for _ in range(2):
            t0 = time.perf_counter()
            text_metric(name, args.language)(refs, hyps)
            t.append(time.perf_counter() - t0)
    else:
        t0 = time.perf_counter()
        fn = make_metric(name, args)                  # imports the metric's package
        fn(waves[0], ests[0])
        t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fn(waves[0], ests[0])
        t.append(time.perf_counter() - t0)
    return {"first_call_s": round(t[0], 3), "second_call_s": round(t[1], 3)}


def steady(names: list[str], args) -> dict:
    waves, texts = utterances(args.utterances, args.seconds, args.language)
    ests = degrade(waves, args.snr_db)
    audio_s = sum(len(w) for w in waves) / SR
    refs = [t for t, _ in texts]
    hyps = [drop_every_fifth(t, args.language) for t in refs]
    text_s = sum(s for _, s in texts)
    fns, values = {}, {}
    for name in names:                                # construction + excluded warm-up call
        if name in TEXT_METRICS:
            fns[name] = text_metric(name, args.language)
            fns[name](refs[:1], hyps[:1])
        else:
            fns[name] = make_metric(name, args)
            fns[name](waves[0], ests[0])
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    for _ in range(args.rounds):
        for name in names:
            fn = fns[name]
            time.sleep(args.pause)
            c0, t0 = time.process_time(), time.perf_counter()
            if name in TEXT_METRICS:
                vals = [fn(refs, hyps)]
            else:
                vals = [fn(w, e) for w, e in zip(waves, ests)]
            dt = time.perf_counter() - t0
            wall[name].append(dt)
            cpu[name].append((time.process_time() - c0) / dt)
            values[name] = vals
    out = {}
    for name in names:
        med = statistics.median(wall[name])
        secs = text_s if name in TEXT_METRICS else audio_s
        row = {"audio_s_per_s": _sig(secs / med), "s_per_utt": _sig(med / len(waves)),
               "audio_s_per_s_per_round": [_sig(secs / t) for t in wall[name]],
               "cpu_per_wall": round(statistics.median(cpu[name]), 2)}
        vals = values[name]
        if name in TEXT_METRICS:
            row["value"] = round(vals[0], 4)
            row["text_audio_s"] = round(text_s, 2)
        elif name.startswith("asr_"):
            row["example_transcript"] = vals[0][:60]
            if hasattr(fns[name], "box"):
                row["new_tokens_per_call"] = fns[name].box.get("tokens")
        else:
            finite = [v for v in vals if np.isfinite(v)]
            row["value_mean"] = round(float(np.mean(finite)), 4) if finite else None
        out[name] = row
    return out


def _sig(x: float) -> float:
    return float(f"{x:.3g}")


def threads() -> dict:
    out = {"os_threads": len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else None}
    try:
        import torch
        out["torch_intra_op"] = torch.get_num_threads()
        out["torch_inter_op"] = torch.get_num_interop_threads()
    except ImportError:
        pass
    try:
        import speechmos.dnsmos as sd
        if sd.dnsmos is not None:
            out["onnxruntime_intra_op_setting"] = sd.dnsmos.onnx_sess.get_session_options().intra_op_num_threads
    except ImportError:
        pass
    return out


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--utterances", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds of each utterance")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds over all utterances, per metric")
    ap.add_argument("--pause", type=float, default=0.2, help="seconds before each timed metric pass")
    ap.add_argument("--snr-db", type=float, default=20.0, help="SNR of the white noise added to make estimates")
    ap.add_argument("--language", choices=("zh", "en"), default="zh")
    ap.add_argument("--metrics", default="", help="comma-separated subset (default: all)")
    ap.add_argument("--skip-whisper", action="store_true")
    ap.add_argument("--whisper-dir", default="", help="a Whisper checkpoint directory (default: random tiny.en)")
    ap.add_argument("--whisper-cap", type=int, default=16, help="token cap of the asr_whisper_capN row")
    ap.add_argument("--torch-threads", type=int, default=0, help="torch.set_num_threads first (0: torch's default)")
    ap.add_argument("--skip-first-call", action="store_true")
    ap.add_argument("--first-call", default="", help=argparse.SUPPRESS)   # internal: the child process
    args = ap.parse_args()

    if args.torch_threads:
        import torch
        torch.set_num_threads(args.torch_threads)
    if args.first_call:
        print(json.dumps(first_call(args.first_call, args)))
        return
    names = list(SIGNAL_METRICS) + ([] if args.skip_whisper else list(WHISPER_METRICS)) + list(TEXT_METRICS)
    if args.metrics:
        names = [n for n in args.metrics.split(",") if n]
    tmp = None
    if any(n in WHISPER_METRICS for n in names) and not args.whisper_dir:
        tmp = tempfile.TemporaryDirectory(prefix="bajax-bench-whisper-")
        args.whisper_dir = make_random_whisper(tmp.name)
    out = {"date": datetime.datetime.now().isoformat(timespec="minutes"), "command": " ".join(sys.argv),
           "host": {"cpu_count": os.cpu_count(), "cores_usable": _cores(),
                    "load_avg_1m": round(os.getloadavg()[0], 2)},
           "utterances": args.utterances, "seconds_each": args.seconds, "language": args.language,
           "estimate": f"reference + white noise at {args.snr_db:g} dB SNR", "rounds": args.rounds,
           "whisper": ("random weights, whisper-tiny.en architecture" if tmp else args.whisper_dir)
           if any(n in WHISPER_METRICS for n in names) else None,
           "whisper_cap_n": args.whisper_cap}
    out["steady"] = steady(names, args)
    out["threads_after_steady"] = threads()
    if not args.skip_first_call:
        base = [sys.executable, os.path.abspath(__file__), "--utterances", str(args.utterances), "--seconds",
                str(args.seconds), "--snr-db", str(args.snr_db), "--language", args.language,
                "--whisper-dir", args.whisper_dir, "--whisper-cap", str(args.whisper_cap),
                "--torch-threads", str(args.torch_threads)]
        for name in names:
            res = subprocess.run(base + ["--first-call", name], capture_output=True, text=True, cwd=ROOT)
            if res.returncode != 0:
                out["steady"][name]["first_call_error"] = res.stderr.strip().splitlines()[-1:]
                continue
            out["steady"][name].update(json.loads(res.stdout.strip().splitlines()[-1]))
    out["host"]["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=1))
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()

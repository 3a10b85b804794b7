"""`bajax eval`: objective speech metrics, offline on a CPU, written to --out as results.json (means with 95%
confidence intervals, row counts and failures, models, seeds, recogniser, package versions, the command),
utterances.csv (one line per row, failures included), results.md and results.png.

  bajax eval codec   --tokenizer runs/tok [--flow runs/flow [--vocoder runs/voc]] [--layers 1,4,8] --out E
  bajax eval vocoder --vocoder runs/voc [--baseline] --out E
  bajax eval tts     --lm runs/lm --flow runs/flow [--vocoder runs/voc] [--asr whisper:DIR] --out E
  bajax eval s2s     --lm runs/lm --flow runs/flow [--vocoder runs/voc] [--asr whisper:DIR] --out E

The utterances are the distinct audio spans of a manifest's rows (the project's schema; default: the embedded
corpus) in one split (default: valid). Bad input (missing audio, an empty reference text, ...) is an error row,
counted and listed, never silently dropped. The same command gives the same results.json. The metrics need the
evaluation extra: pip install 'bajax[eval]'. Protocol details: bajax/eval/protocol.py and each command's
module (bajax/eval/codec.py, vocoding.py, spoken.py).
"""

from __future__ import annotations

import argparse
import sys


def _settings(args):
    from bajax.eval.runner import Settings

    return Settings(out=args.out, manifest=args.manifest, split=args.split, limit=args.limit,
                    language=args.language, seed=args.seed, quiet=args.quiet, argv=args.argv)


def run(args, overrides) -> int:
    del overrides
    from bajax.eval import codec, spoken, vocoding

    settings = _settings(args)
    try:
        if args.task == "codec":
            results, paths = codec.evaluate(settings, tokenizer=args.tokenizer, flow=args.flow,
                                            vocoder=args.vocoder, layers=args.layers, steps=args.steps,
                                            guidance=args.guidance, gl_iters=args.gl_iters)
        elif args.task == "vocoder":
            results, paths = vocoding.evaluate(settings, vocoder=args.vocoder, step=args.step,
                                               baseline=args.baseline, gl_iters=args.gl_iters)
        else:
            from bajax.cli.generate import request

            req = request(args)
            if args.task == "tts":
                results, paths = spoken.evaluate_tts(settings, req, asr=args.asr, mos=not args.no_mos,
                                                     speaker=not args.no_speaker)
            else:
                results, paths = spoken.evaluate_s2s(settings, req, asr=args.asr, mos=not args.no_mos,
                                                     reply_language=args.reply_language)
    except (ValueError, ImportError) as e:   # bad flags, runs that do not load, a missing eval extra
        print(f"bajax eval {args.task}: {e}", file=sys.stderr)
        return 2
    rows = results["rows"]
    print(f"bajax eval {args.task}: {rows['scored']} of {rows['total']} rows scored, {rows['failed']} failed"
          + (f" ({rows['failures']})" if rows["failures"] else ""))
    from etils import epath

    print(epath.Path(paths["results.md"]).read_text())
    print(f"wrote {', '.join(paths.values())}", flush=True)
    return 0


def _common(p) -> None:
    p.add_argument("--out", required=True, help="directory for results.json, utterances.csv, results.md/png")
    p.add_argument("--manifest", default=None, help="JSONL manifest (default: the embedded corpus)")
    p.add_argument("--split", default="valid", choices=("valid", "train", "all"), help="rows of this split")
    p.add_argument("--language", default="", help="keep rows of this language only (e.g. en)")
    p.add_argument("--limit", type=int, default=0, help="the first N utterances (default: all)")
    p.add_argument("--quiet", action="store_true", help="no per-utterance progress lines")


def _speech_flags(p) -> None:
    p.add_argument("--asr", default="pocketsphinx",
                   help="recogniser: pocketsphinx (offline, English) or whisper:DIR (a local HF Whisper)")
    p.add_argument("--no-mos", action="store_true", help="skip DNSMOS")


def register(subparsers) -> None:
    from bajax.cli.generate import add_generation_flags, add_model_flags

    p = subparsers.add_parser("eval", help="objective speech metrics of a tokenizer, vocoder, TTS or spoken replies",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="task", required=True)

    c = sub.add_parser("codec", help="audio -> codes -> (flow -> vocoder) -> audio, per RVQ depth")
    _common(c)
    c.add_argument("--tokenizer", default=None, help="tokenizer run (default: the --flow run's)")
    c.add_argument("--flow", default=None, help="flow decoder run (cond_source=tokenizer): adds waveform metrics")
    c.add_argument("--vocoder", default="", help="HiFT vocoder run (default: Griffin-Lim)")
    c.add_argument("--layers", default="", help="RVQ depths to score, e.g. 1,4,8 (default: all layers)")
    c.add_argument("--steps", type=int, default=10, help="flow Euler steps")
    c.add_argument("--guidance", type=float, default=0.7, help="flow classifier-free guidance")
    c.add_argument("--gl-iters", type=int, default=32, help="Griffin-Lim iterations (without --vocoder)")
    c.add_argument("--seed", type=int, default=0, help="seeds the flow noise and the vocoder")

    v = sub.add_parser("vocoder", help="copy synthesis from ground-truth mel")
    _common(v)
    v.add_argument("--vocoder", required=True, help="HiFT vocoder run (or its checkpoints/<step>)")
    v.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
    v.add_argument("--baseline", action="store_true", help="also score Griffin-Lim on the same mels")
    v.add_argument("--gl-iters", type=int, default=32, help="Griffin-Lim iterations of --baseline")
    v.add_argument("--seed", type=int, default=0, help="seeds the source noise (and Griffin-Lim's phases)")

    for task, help_ in (("tts", "text -> speech -> ASR: intelligibility, speaker similarity, MOS"),
                        ("s2s", "spoken prompt -> spoken reply: ASR vs the printed reply text, MOS")):
        t = sub.add_parser(task, help=help_)
        _common(t)
        add_model_flags(t)
        add_generation_flags(t)
        _speech_flags(t)
        if task == "tts":
            t.add_argument("--no-speaker", action="store_true", help="skip speaker similarity")
        else:
            t.add_argument("--reply-language", default="",
                           help="language of the replies, e.g. en (default: each row's response_language)")
    p.set_defaults(func=run)

"""`bajax encode` (audio -> RVQ codes) and `bajax decode` (codes -> mel, .npy and a PNG picture).

    bajax encode a.flac b.wav --checkpoint runs/tok_tiny -o codes/      # codes/a.npy int32 [frames, 8]
    bajax decode codes/*.npy --checkpoint runs/tok_tiny -o mel/         # mel/a.npy [frames, 80], mel/a.png

Both take many files and show a progress bar. A bad file (unreadable audio, codes of the wrong shape or out
of range) is reported with its name and skipped; the exit code is 1 if any file failed. The work is done by
`bajax.speech.tokenizer_files.encode_files` / `decode_files`.
"""

from __future__ import annotations

import sys

from bajax.speech.tokenizer_files import FileResult, decode_files, encode_files, load_decoder

COMMANDS = ("encode", "decode")


def _report(results: list[FileResult], command: str) -> int:
    failed = [r for r in results if r.error]
    for r in results:
        if not r.error:
            print(f"{r.source} -> {', '.join(r.outputs.values())} ({r.frames} frames)")
    for r in failed:
        print(f"bajax {command}: {r.error}", file=sys.stderr)
    if failed:
        print(f"bajax {command}: {len(failed)} of {len(results)} files failed", file=sys.stderr)
    return 1 if failed else 0


def _checkpoint_error(command: str, e: Exception) -> int:
    print(f"bajax {command}: --checkpoint: {e}", file=sys.stderr)
    return 2


def run_encode(args, overrides) -> int:
    del overrides
    try:
        results = encode_files(args.audio, args.checkpoint, args.out, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as e:
        return _checkpoint_error("encode", e)
    return _report(results, "encode")


def run_decode(args, overrides) -> int:
    del overrides
    try:
        decoder = load_decoder(args.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        return _checkpoint_error("decode", e)
    results = decode_files(args.codes, args.checkpoint, args.out, png=not args.no_png,
                           progress=not args.no_progress, decoder=decoder)
    return _report(results, "decode")


def register(subparsers) -> None:
    """Adds `encode` and `decode` (bajax.cli lists this module once per command: add each only once)."""
    common = {"--checkpoint": "the --workdir of a `bajax train` tokenizer run",
              "-o": "output directory (created if missing)"}
    if "encode" not in subparsers.choices:
        p = subparsers.add_parser("encode", help="audio files -> RVQ codes .npy [frames, 8]")
        p.add_argument("audio", nargs="+", help="audio files (any rate; resampled to 16 kHz, mono)")
        p.add_argument("--checkpoint", required=True, help=common["--checkpoint"])
        p.add_argument("-o", "--out", required=True, help=common["-o"])
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.set_defaults(func=run_encode)
    if "decode" not in subparsers.choices:
        p = subparsers.add_parser("decode", help="codes .npy -> reconstructed mel .npy and a PNG picture")
        p.add_argument("codes", nargs="+", help="codes .npy files written by `bajax encode`")
        p.add_argument("--checkpoint", required=True, help=common["--checkpoint"])
        p.add_argument("-o", "--out", required=True, help=common["-o"])
        p.add_argument("--no-png", action="store_true", help="write only the .npy mel")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.set_defaults(func=run_decode)

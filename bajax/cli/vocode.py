"""`bajax vocode`: a 24 kHz wav from a mel, or from a recording (copy synthesis), with a trained HiFT vocoder.

    bajax vocode mel.npy --checkpoint runs/vocoder_tiny -o out.wav          # a mel [frames, 80] (.npy)
    bajax vocode speech.flac --checkpoint runs/vocoder_tiny -o copy.wav     # audio -> 24 kHz mel -> audio

INPUT is a `.npy` float array [frames, 80] (time first: the natural-log mel of bajax.audio.mel.flow_mel_24k)
or an audio file at any rate, resampled to 24 kHz and turned into that mel. The output has frames x 480
samples. Prints its duration and the real-time factor (synthesis seconds per second of audio, compilation
excluded). A bad input or a run that is not a vocoder run is one line on stderr and exit code 2. The work is
done by `bajax.speech.hift` (`read_mel`, `HiFTVocoder`).
"""

from __future__ import annotations

import sys
import time


def _fail(message: str) -> int:
    print(f"bajax vocode: {message}", file=sys.stderr)
    return 2


def run(args, overrides) -> int:
    del overrides
    if not args.output.lower().endswith((".wav", ".flac", ".ogg")):
        return _fail(f"-o {args.output}: the output must end in .wav (or .flac / .ogg)")
    from bajax.audio import io as audio_io
    from bajax.speech.hift import HiFTVocoder, read_mel

    try:
        mel, what = read_mel(args.input)
    except ValueError as e:
        return _fail(str(e))
    t0 = time.perf_counter()
    try:
        vocoder = HiFTVocoder.load(args.checkpoint, step=args.step, seed=args.seed)
    except (FileNotFoundError, ValueError) as e:    # LoadError: names --checkpoint and what to pass
        return _fail(str(e))
    t1 = time.perf_counter()
    try:
        compile_s = vocoder.compile(len(mel))
        t2 = time.perf_counter()
        wave = vocoder(mel)
    except ValueError as e:                         # a mel this vocoder cannot take (e.g. other bins)
        return _fail(f"{args.input}: {e}")
    seconds = time.perf_counter() - t2
    audio_io.write(args.output, wave, vocoder.sample_rate)
    duration = len(wave) / vocoder.sample_rate
    print(f"wrote {args.output}: {len(wave)} samples = {duration:.2f} s at {vocoder.sample_rate} Hz from "
          f"{len(mel)} mel frames ({what}); vocoder {vocoder.source}")
    print(f"synthesis {seconds:.3f} s = real-time factor {seconds / duration:.3f}; compile {compile_s:.1f} s, "
          f"load {t1 - t0:.1f} s", flush=True)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("vocode", help="mel .npy or audio -> 24 kHz wav with a trained HiFT vocoder run",
                              description=__doc__, formatter_class=_formatter())
    p.add_argument("input", help="a .npy mel [frames, 80] (time first) or an audio file (copy synthesis)")
    p.add_argument("--checkpoint", required=True,
                   help="the --workdir of a `bajax train` vocoder run (or its checkpoints/<step>)")
    p.add_argument("-o", "--output", required=True, help="output wav (24 kHz; .wav, .flac or .ogg)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
    p.add_argument("--seed", type=int, default=0, help="seeds the source's random phases and noise")
    p.set_defaults(func=run)


def _formatter():
    import argparse

    return argparse.RawDescriptionHelpFormatter

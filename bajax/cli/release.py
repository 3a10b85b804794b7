"""`bajax import-release` and `bajax export-release`: a whole Baichuan-Audio release directory <-> runs.

  bajax import-release --src Baichuan-Audio-Instruct/ --out runs/release
      -> runs/release/{tokenizer,lm,flow[,vocoder]} + runs/release/release.json (what was skipped or carried)
  bajax export-release --lm runs/sft --tokenizer runs/release/tokenizer --flow runs/release/flow \
      [--vocoder runs/release/vocoder] --out exported/release

A field of the release's config.json that bajax cannot honour stops the import naming the field; see
bajax/interop/release.py and release_config.py.
"""

from __future__ import annotations

import sys


def run_import_release(args, overrides) -> int:
    from bajax.interop.release import import_release

    try:
        import_release(args.src, args.out)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"bajax import-release: {e}", file=sys.stderr)
        return 2
    return 0


def run_export_release(args, overrides) -> int:
    from bajax.interop.release import export_release

    try:
        export_release(lm=args.lm, tokenizer=args.tokenizer, flow=args.flow, vocoder=args.vocoder, out=args.out,
                       max_shard_bytes=int(args.max_shard_gb * 1024**3))
    except (FileNotFoundError, FileExistsError, KeyError, ValueError) as e:
        print(f"bajax export-release: {e}", file=sys.stderr)
        return 2
    return 0


def register(subparsers) -> None:
    if "import-release" not in subparsers.choices:
        p = subparsers.add_parser("import-release", help="a Baichuan-Audio release directory -> one run per component")
        p.add_argument("--src", required=True, help="release directory (config.json, safetensors, tokenizer files, "
                       "hift.pt)")
        p.add_argument("--out", required=True, help="directory for the runs: OUT/tokenizer, OUT/lm, OUT/flow, "
                       "OUT/vocoder")
        p.set_defaults(func=run_import_release)
    if "export-release" not in subparsers.choices:
        p = subparsers.add_parser("export-release", help="component runs -> a release directory the reference loads")
        p.add_argument("--lm", required=True, help="LM run")
        p.add_argument("--tokenizer", required=True, help="audio tokenizer run")
        p.add_argument("--flow", required=True, help="flow decoder run")
        p.add_argument("--vocoder", default=None, help="HiFT vocoder run (written as hift.pt; needs torch)")
        p.add_argument("--out", required=True, help="output directory (must be empty or absent)")
        p.add_argument("--max-shard-gb", type=float, default=5.0, help="shard size limit (GiB) before splitting")
        p.set_defaults(func=run_export_release)

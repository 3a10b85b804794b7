"""`bajax export`, `bajax import-hf`, `bajax import-torch` (bajax.cli lists this module once per command).

  bajax export --checkpoint runs/lm --out exported/lm [--step N] [--max-shard-gb 5] [--allow-nonreference]
  bajax export --checkpoint runs/lm_lora --out exported/lm_adapters --adapters-only   (a LoRA run's adapters;
                                                                         without the flag it exports merged)
  bajax import-hf --kind qwen2 --src Qwen2.5-7B/ --out runs/qwen_init [--config configs/lm/7b.py]
  bajax import-hf --kind whisper --src whisper-large-v3/ --out runs/tok_init [--config configs/tokenizer/...]
  bajax import-torch --src exported/lm --out runs/lm_back          (= import-hf --kind baichuan)

An imported run starts training with `bajax train --config OUT/config.py --workdir NEW
--config.train.init_from=OUT/checkpoints` (or any config of the same shapes).
"""

from __future__ import annotations

import sys


def run_export(args, overrides) -> int:
    from bajax.interop.adapters import export_adapters
    from bajax.interop.export import export

    try:
        if args.adapters_only:
            export_adapters(args.checkpoint, args.out, step=args.step)
        else:
            export(args.checkpoint, args.out, step=args.step, max_shard_bytes=int(args.max_shard_gb * 1024**3),
                   allow_nonreference=args.allow_nonreference)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"bajax export: {e}", file=sys.stderr)
        return 2
    return 0


def _import_qwen2(args, overrides):
    from bajax.interop.import_hf import import_qwen2

    return import_qwen2(args.src, args.out, config=args.config, overrides=overrides, pad_vocab=args.pad_vocab)


def _import_whisper(args, overrides):
    from bajax.interop.import_hf import import_whisper

    return import_whisper(args.src, args.out, config=args.config, overrides=overrides)


def _import_reference(args, overrides):
    from bajax.interop.import_torch import import_torch

    return import_torch(args.src, args.out, config=args.config, overrides=overrides, ignore=args.ignore)


# --kind of `bajax import-hf` -> (importer, the command name its errors carry); import-torch is 'baichuan'.
IMPORTERS = {"qwen2": (_import_qwen2, "import-hf"), "whisper": (_import_whisper, "import-hf"),
             "baichuan": (_import_reference, "import-torch")}


def run_import(args, overrides) -> int:
    importer, command = IMPORTERS[getattr(args, "kind", "baichuan")]
    try:
        importer(args, overrides)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"bajax {command}: {e}", file=sys.stderr)
        return 2
    return 0


def _import_args(p) -> None:
    p.add_argument("--src", required=True, help="safetensors file or directory (sharded with an index or not), "
                   "or a PyTorch state-dict file (.pt/.pth/.bin, read with weights_only=True)")
    p.add_argument("--out", required=True, help="run directory to write (config.json, config.py, checkpoints/0)")
    p.add_argument("--config", default=None, help="base bajax config file (path.py[:arg]); --config.a.b=v overrides")
    p.add_argument("--ignore", default=None, help="regex of source tensors to skip (baichuan: e.g. visual parts)")
    p.set_defaults(func=run_import, accepts_overrides=True)


def register(subparsers) -> None:
    if "export" not in subparsers.choices:
        p = subparsers.add_parser("export", help="run dir -> safetensors in the Baichuan-Audio PyTorch layout")
        p.add_argument("--checkpoint", required=True, help="the --workdir of a `bajax train` run")
        p.add_argument("--out", required=True, help="output directory")
        p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
        p.add_argument("--max-shard-gb", type=float, default=5.0, help="shard size limit (GiB) before splitting")
        p.add_argument("--allow-nonreference", action="store_true",
                       help="export a model whose config departs from the reference code's fixed choices")
        p.add_argument("--adapters-only", action="store_true",
                       help="a LoRA run: write only its adapters (adapter_model.safetensors + adapter_config.json, "
                            "PEFT names) instead of the merged model")
        p.set_defaults(func=run_export)
    if "import-hf" not in subparsers.choices:
        p = subparsers.add_parser("import-hf", help="Hugging Face Qwen2 / Whisper (or Baichuan layout) -> run dir")
        p.add_argument("--kind", required=True, choices=list(IMPORTERS))
        p.add_argument("--pad-vocab", type=int, default=128, help="qwen2: pad the vocabulary to a multiple of this")
        _import_args(p)
    if "import-torch" not in subparsers.choices:
        p = subparsers.add_parser("import-torch", help="Baichuan-layout safetensors (e.g. an export) -> run dir")
        _import_args(p)

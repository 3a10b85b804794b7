"""The `bajax` command line: one entry point, one sub-command per job.

    bajax train --config configs/lm/tiny.py --workdir runs/lm_tiny [--config.train.steps=50]
    bajax prepare --manifest data.jsonl --out prepared/ [--tokenizer CKPT]

Run `bajax <command> --help` for the options of each.
"""

from __future__ import annotations

import argparse
import os
import sys


def _split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separates `--config.a.b=value` / `--config.a.b value` overrides from the ordinary arguments."""
    rest, overrides = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            if "=" in arg:
                overrides.append(arg[len("--config."):])
            elif i + 1 < len(argv):
                overrides.append(f"{arg[len('--config.'):]}={argv[i + 1]}")
                i += 1
            else:
                raise SystemExit(f"bajax: override {arg} needs a value (--config.a.b=value)")
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def _setup_runtime(argv: list[str]) -> None:
    """Process-wide set-up, before JAX is imported: fake CPU devices, absl flags for Grain workers."""
    for i, arg in enumerate(argv):
        value = arg.partition("=")[2] if arg.startswith("--cpu-devices=") else (
            argv[i + 1] if arg == "--cpu-devices" and i + 1 < len(argv) else None)
        if value:
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                       + f" --xla_force_host_platform_device_count={int(value)}")
    import absl.flags

    absl.flags.FLAGS.mark_as_parsed()


def cmd_train(args, overrides) -> int:
    from bajax.config import ConfigError, load

    try:
        cfg = load(args.config, overrides)
    except ConfigError as e:
        print(f"bajax train: {e}", file=sys.stderr)
        return 2
    from bajax.train.trainer import train

    result = train(cfg, args.workdir, stop_after=args.stop_after)
    print(f"done: step {result.step} in {args.workdir}" + (" (preempted; run again to resume)"
                                                           if result.preempted else ""))
    return 0


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model (tokenizer, audio LLM or flow decoder) from a config",
                       description="Train from a config; run the same command again to resume. Override any "
                                   "config key with --config.section.key=value.")
    p.add_argument("--config", required=True, help="config file, optionally with an argument: path.py[:arg]")
    p.add_argument("--workdir", required=True, help="directory for checkpoints, metrics and TensorBoard")
    p.add_argument("--stop-after", type=int, default=None,
                   help="save a checkpoint and exit after this step (a later run resumes)")
    p.add_argument("--cpu-devices", type=int, default=0, help="fake this many CPU devices (testing meshes)")
    p.set_defaults(func=cmd_train)


def _add_prepare(sub) -> None:
    from bajax.data import prepare

    p = sub.add_parser("prepare", help="validate a manifest and write ArrayRecord shards",
                       description="Validate a JSONL manifest and write ArrayRecord shards (16 kHz waveform, "
                                   "24 kHz mel, text, and codes when a tokenizer is given).")
    prepare.add_prepare_args(p)
    p.set_defaults(func=lambda args, overrides: prepare.run_prepare(args) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bajax", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_prepare(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest, overrides = _split_overrides(argv)
    _setup_runtime(rest)
    args = build_parser().parse_args(rest)
    if overrides and args.command != "train":
        raise SystemExit(f"bajax {args.command}: --config.* overrides apply to `bajax train` only")
    return int(args.func(args, overrides) or 0)


if __name__ == "__main__":
    sys.exit(main())

"""The `bajax` command line: one entry point, one sub-command per job.

    bajax train --config configs/lm/tiny.py --workdir runs/lm_tiny [--config.train.steps=50]
    bajax prepare --manifest data.jsonl --out prepared/ [--tokenizer CKPT]

The installed `bajax` script (`console_main`) first restarts itself on tcmalloc when the library is
installed and not yet preloaded: XLA:CPU steps run faster on it (`bajax.malloc`, bench/RESULTS_lm.md). Set
`BAJAX_MALLOC=glibc` to keep the system allocator.

Every entry point lives in this package (the engine and model packages import nothing from it): one module
per command group with `register(subparsers)`, which adds its parser and sets `func(args, overrides) -> exit
code`, and calls into the library; `COMMANDS` lists those modules. `python -m bajax.cli` runs `main`. Run
`bajax <command> --help` for the options of each.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# (command, module providing `register`), in the order `bajax --help` shows them.
COMMANDS = (
    ("train", "bajax.cli.train"),
    ("evaluate", "bajax.cli.train"),
    ("prepare", "bajax.cli.prepare"),
    ("plan", "bajax.cli.plan"),
    ("generate", "bajax.cli.generate"),
    ("serve", "bajax.cli.serve"),
    ("vocode", "bajax.cli.vocode"),
    ("eval", "bajax.cli.eval"),
    ("sweep", "bajax.cli.sweep"),
    ("encode", "bajax.cli.tokenizer"),
    ("decode", "bajax.cli.tokenizer"),
    ("export", "bajax.cli.interop"),
    ("import-hf", "bajax.cli.interop"),
    ("import-torch", "bajax.cli.interop"),
    ("import-release", "bajax.cli.release"),
    ("export-release", "bajax.cli.release"),
    ("quickstart", "bajax.cli.quickstart"),
)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bajax", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in dict.fromkeys(module for _, module in COMMANDS):  # a module may add several commands
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest, overrides = _split_overrides(argv)
    _setup_runtime(rest)
    args = build_parser().parse_args(rest)
    args.argv = tuple(argv)      # the command as given, for results that record it (bajax eval)
    if overrides and not getattr(args, "accepts_overrides", False):
        raise SystemExit(f"bajax {args.command}: --config.* overrides apply to commands that take --config")
    return int(args.func(args, overrides) or 0)


def console_main() -> int:
    """The `bajax` console script: `main` on tcmalloc unless BAJAX_MALLOC=glibc (see the module doc)."""
    choice = os.environ.get("BAJAX_MALLOC", "tcmalloc")
    if choice not in ("tcmalloc", "glibc"):
        raise SystemExit(f"bajax: BAJAX_MALLOC must be 'tcmalloc' or 'glibc', got {choice!r}")
    from bajax import malloc

    malloc.use(choice)
    return main()


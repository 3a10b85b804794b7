"""`bajax train`: train any of the three models from a config; the same command resumes."""

from __future__ import annotations

import sys


def add_config_args(parser) -> None:
    """--config path.py[:arg] (overrides come as --config.a.b=value, split off by bajax.cli). A `configs/...`
    path that does not exist here names the config shipped in the package (bajax.config_files.resolve)."""
    from bajax import config_files

    parser.add_argument("--config", required=True, type=config_files.resolve,
                        help="config file, optionally with an argument: path.py[:arg]")
    parser.set_defaults(accepts_overrides=True)


def load_config_or_exit(args, overrides, command: str):
    from bajax.config import ConfigError, load

    try:
        return load(args.config, overrides)
    except ConfigError as e:
        print(f"bajax {command}: {e}", file=sys.stderr)
        return None


def run(args, overrides) -> int:
    from bajax.train import distributed

    # Before anything touches a JAX backend: a multi-host job must join into one runtime first.
    try:
        layout = distributed.initialize_from_args(args)
    except distributed.DistributedError as e:
        print(f"bajax train: {e}", file=sys.stderr)
        return 2
    cfg = load_config_or_exit(args, overrides, "train")
    if cfg is None:
        return 2
    if layout.multi:
        import jax

        print(f"bajax train: {layout.describe()}; {jax.local_device_count()} local of {jax.device_count()} "
              "devices", flush=True)
    from bajax import runs
    from bajax.data import sources
    from bajax.train.trainer import train

    try:
        result = train(cfg, args.workdir, stop_after=args.stop_after, fallback=not args.no_fallback)
    except (runs.LoadError, sources.DataSourceError) as e:   # a run or data that does not fit: one line, exit 2
        print(f"bajax train: {e}", file=sys.stderr)
        return 2
    note = " (stopped early; run the same command again to resume)" if result.step < cfg.train.steps else ""
    print(f"done: step {result.step} of {cfg.train.steps} in {args.workdir}{note}")
    return 0


def run_evaluate(args, overrides) -> int:
    cfg = load_config_or_exit(args, overrides, "evaluate")
    if cfg is None:
        return 2
    import json

    from bajax.train.trainer import Trainer

    trainer = Trainer(cfg, args.workdir)
    with trainer.scope():
        state = trainer.restore_latest()
        metrics = {"step": int(state["step"]), **trainer.evaluate(state)}
    print(json.dumps(metrics, indent=1))
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model (tokenizer, audio LLM or flow decoder) from a config",
                       description="Train from a config; run the same command again to resume. Override any "
                                   "config key with --config.section.key=value.")
    add_config_args(p)
    p.add_argument("--workdir", required=True, help="directory (local or gs://) for checkpoints and metrics")
    p.add_argument("--stop-after", type=int, default=None,
                   help="save a checkpoint and exit after this step (a later run resumes)")
    p.add_argument("--no-fallback", action="store_true",
                   help="an unreadable newest checkpoint is an error (default: name it, move it to "
                        "WORKDIR/checkpoints.unreadable/ and resume from the newest readable one)")
    p.add_argument("--cpu-devices", type=int, default=0, help="fake this many CPU devices (to try meshes)")
    from bajax.train import distributed

    distributed.add_args(p)
    p.set_defaults(func=run)

    e = sub.add_parser("evaluate", help="evaluate a run's latest checkpoint on the held-out split",
                       description="Loss and metrics of WORKDIR's newest checkpoint on data.eval_split, as JSON. "
                                   "Overrides select other data, e.g. --config.data.mixture.text=1 with the "
                                   "audio tasks at 0 for the text-only loss.")
    add_config_args(e)
    e.add_argument("--workdir", required=True, help="the run directory that `bajax train` wrote")
    e.add_argument("--cpu-devices", type=int, default=0, help="fake this many CPU devices")
    e.set_defaults(func=run_evaluate)

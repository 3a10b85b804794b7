"""`bajax quickstart --workdir DIR`: the whole recipe on the embedded corpus (stages in bajax/quickstart.py).

    bajax quickstart --workdir runs/quickstart
    bajax quickstart --workdir runs/qs --config.tokenizer_steps=50     # step counts: configs/quickstart.py
"""

from __future__ import annotations

from bajax import config_files


def run(args, overrides) -> int:
    from bajax import quickstart
    from bajax.config import ConfigError, apply_override, load_file

    try:
        qcfg = load_file(config_files.resolve(args.config) if args.config
                         else config_files.packaged("configs/quickstart.py"))
        for item in overrides:
            apply_override(qcfg, item)
    except ConfigError as e:
        print(f"bajax quickstart: {e}")
        return 2
    quickstart.run(qcfg, args.workdir)
    return 0


def register(sub) -> None:
    from bajax import quickstart

    p = sub.add_parser("quickstart", help="the whole recipe on the embedded corpus (tokenizer, LLM, flow, "
                                          "speech reply, export) in minutes",
                       description=quickstart.__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, help="where every stage writes its run (resumable)")
    p.add_argument("--config", default=None,
                   help="step counts and sizes (default: configs/quickstart.py, shipped in the package)")
    p.set_defaults(func=run, accepts_overrides=True)

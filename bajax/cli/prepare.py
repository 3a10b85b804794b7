"""`bajax prepare`: validate a manifest and write ArrayRecord shards."""

from __future__ import annotations


def register(sub) -> None:
    from bajax.data import prepare

    p = sub.add_parser("prepare", help="validate a manifest and write ArrayRecord shards",
                       description="Validate a JSONL manifest and write ArrayRecord shards (16 kHz waveform, "
                                   "24 kHz mel, text, and 12.5 Hz codes when a tokenizer is given). Re-running "
                                   "skips finished shards. Exit codes: 0 ok, 1 no usable sample written, "
                                   "2 usage or input error.")
    prepare.add_prepare_args(p)
    p.set_defaults(func=lambda args, overrides: prepare.run_prepare(args))  # 0 ok, 1 nothing kept, 2 input error

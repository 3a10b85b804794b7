"""Which parameters train: regexes over '/'-joined parameter paths, and named stage presets.

`train.freeze` lists patterns of parameters that stay fixed; `train.train_only`, when set, lists the only
patterns that train. A stage preset (`train.stage`) supplies either list from the task. Frozen parameters are
split off before the optimizer is built, so they carry no optimizer state and their gradients are never
computed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from flax import nnx

from bajax.layers import lora


def path_str(path: Sequence) -> str:
    return "/".join(str(getattr(p, "key", p)) for p in path)


def resolve(train_cfg, presets: dict[str, dict[str, tuple[str, ...]]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(freeze, train_only) patterns from the config and the task's stage presets."""
    freeze, train_only = tuple(train_cfg.freeze), tuple(train_cfg.train_only)
    if train_cfg.stage:
        if train_cfg.stage not in presets:
            raise ValueError(f"config train.stage={train_cfg.stage!r} is not a preset of this model; "
                             f"valid stages: {sorted(presets)} (or '' for none)")
        preset = presets[train_cfg.stage]
        freeze += tuple(preset.get("freeze", ()))
        train_only += tuple(preset.get("train_only", ()))
    return freeze, train_only


def trainable_filter(freeze: Sequence[str], train_only: Sequence[str], *, adapters_only: bool = False):
    """An nnx filter `(path, value) -> bool` selecting trainable Params. `adapters_only` (a LoRA run): only
    LoRA adapters train, so every base weight is frozen; the patterns then narrow which adapters train."""
    freeze_re = [re.compile(p) for p in freeze]
    only_re = [re.compile(p) for p in train_only]
    wanted = lora.Adapter if adapters_only else nnx.Param

    def is_trainable(path, value) -> bool:
        if not isinstance(value, wanted):
            return False
        name = path_str(path)
        if only_re and not any(r.fullmatch(name) for r in only_re):
            return False
        return not any(r.fullmatch(name) for r in freeze_re)

    return is_trainable


def check_patterns(state: nnx.State, freeze: Sequence[str], train_only: Sequence[str]) -> None:
    """A pattern that matches no parameter is almost always a typo: stop and list real names."""
    names = [path_str(p) for p, v in nnx.to_flat_state(state) if isinstance(v, nnx.Param)]
    for pattern in (*freeze, *train_only):
        if not any(re.fullmatch(pattern, n) for n in names):
            sample = ", ".join(names[:12])
            raise ValueError(f"freeze pattern {pattern!r} matches no parameter; parameter paths look like: "
                             f"{sample}, ...")

"""Configs: load `configs/<model>/<size>.py[:arg]`, apply `--config.a.b=value` overrides, validate.

A config file's `get_config(arg)` starts from `defaults(kind)`, a LOCKED ConfigDict holding every valid key
of that model kind with its default and type. Because it is locked, a typo in a config file or in an
override cannot add a new key: it stops the run with a message that names the key, suggests the closest
valid one and lists the valid keys at that level. Overrides are parsed against the type of the default.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

import ml_collections
from ml_collections import ConfigDict


class ConfigError(ValueError):
    """A config file or override is invalid; the message says which key and how to fix it."""


def base_config() -> ConfigDict:
    """Sections shared by every model: mesh, sharding rules, optimizer, trainer, checkpoints, metrics."""
    from bajax import sharding

    c = ConfigDict()
    c.kind = ""
    c.seed = 0
    c.mesh = ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    c.sharding = ConfigDict({"rules": tuple((k, v) for k, v in sharding.DEFAULT_RULES)})

    c.optim = ConfigDict()
    c.optim.lr = 3e-4
    c.optim.end_lr_ratio = 0.1           # cosine decays to lr * end_lr_ratio
    c.optim.warmup_steps = 100
    c.optim.decay_steps = 0              # 0: decay over train.steps
    c.optim.b1 = 0.9
    c.optim.b2 = 0.95
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.1
    c.optim.clip_norm = 1.0

    c.train = ConfigDict()
    c.train.steps = 1000
    c.train.batch_size = 8               # global rows per optimizer step (all micro-batches)
    c.train.grad_accum = 1               # micro-batches per step, accumulated with lax.scan in fp32
    c.train.max_tokens_per_device = 0    # >0: grad_accum is raised until a micro-batch holds at most this many
    #                                      tokens (rows x data.seq_len) per batch shard (bajax.train.step.micro_steps)
    c.train.freeze = ()                  # regexes over parameter paths ("audio_head/.*") that do not train
    c.train.train_only = ()              # if set: only parameters matching one of these regexes train
    c.train.stage = ""                   # named preset of freeze rules (the LM has 'stage1', 'stage2')
    c.train.init_from = ""               # checkpoint dir whose params initialise a NEW run (e.g. stage 1 -> 2)
    c.train.eval_every = 0               # evaluate on data.eval_split every N steps and at the end (0 = never)
    c.train.eval_batches = 4             # batches per evaluation (0 = the whole held-out split)
    c.train.eval_tasks = ()              # LM: evaluate on these data tasks only, e.g. ('text',); () = the mixture
    c.train.eval_speech = 0              # tokenizer, vocoder, flow: at every evaluation also score the first N
    #                                      held-out utterances (whole, 1-6 s) with mel L1, multi-resolution STFT
    #                                      distance, PESQ and STOI (eval_speech_*; needs the eval extra); 0 = off
    # LoRA (bajax/layers/lora.py): with rank > 0, adapters A [in, r] (random) and B [r, out] (zeros) sit
    # beside every Linear kernel a target matches, only they train (freeze / train_only / stage still narrow
    # which adapters do), and the base weights get no optimizer state. `bajax export` merges them into the
    # base (kernel + alpha / rank * A B); `bajax export --adapters-only` writes them alone, PEFT-style.
    c.train.lora = ConfigDict()
    c.train.lora.rank = 0                # 0 = off
    c.train.lora.alpha = 16.0            # adapter scale alpha / rank (PEFT's lora_alpha)
    c.train.lora.dropout = 0.0           # dropout on the adapter input, in training steps only
    c.train.lora.targets = (r".*layers/.*/([qkvo]|gate|up|down)_proj|.*layers/.*/fc[12]",)
    #                                      regexes (full match) over Linear paths, e.g.
    #                                      'layers/layers/self_attn/q_proj' (or its '.../kernel'), each of which
    #                                      must match one; the default adapts the attention and MLP projections
    #                                      of every stacked layer: the LLM's, the audio head's attention, the
    #                                      flow decoder's Pre-Net and U-Net transformer blocks

    c.checkpoint = ConfigDict()
    c.checkpoint.every = 200
    c.checkpoint.keep = 3
    c.checkpoint.async_save = True

    c.metrics = ConfigDict()
    c.metrics.log_every = 10
    c.metrics.tensorboard = True
    c.metrics.peak_flops = 0.0           # FLOP/s per device for MFU; 0 = table by device kind / CPU probe
    return c


def defaults(kind: str) -> ConfigDict:
    """Every valid key of a model kind with its default value; locked, so typos cannot add keys."""
    from bajax import models
    from bajax.data.config import default_data_config

    try:
        spec = models.get(kind)
    except KeyError:
        raise ConfigError(f"unknown model kind {kind!r}; valid kinds: {list(models.names())}") from None
    c = base_config()
    c.kind = kind
    c.data = default_data_config()
    c.model = spec.default_model_config()
    for name, section in spec.extra_config().items():   # the kind's own sections, or its replacements
        c[name] = section
    c.lock()
    return c


def load_file(spec: str) -> ConfigDict:
    """Runs `get_config(arg)` of a config file `path.py[:arg]`, with errors that name the file."""
    path_str, _, arg = spec.partition(":")
    path = Path(path_str)
    if not path.is_file():
        raise ConfigError(f"config file {path_str!r} not found (pass e.g. --config configs/lm/tiny.py)")
    module_name = f"_bajax_config_{abs(hash(path.resolve()))}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
        if not hasattr(module, "get_config"):
            raise ConfigError(f"{path_str} has no get_config(arg) function")
        return module.get_config(arg) if arg else module.get_config()
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{path_str}: {_explain(e)}") from e


def load(spec: str, overrides: Sequence[str] = ()) -> ConfigDict:
    """Loads `path.py[:arg]`, applies `a.b=value` overrides and validates the result."""
    cfg = load_file(spec)
    for item in overrides:
        apply_override(cfg, item)
    validate(cfg)
    return cfg


def _explain(e: Exception) -> str:
    return str(e).strip("'\"")


def _valid_keys_message(node: ConfigDict, key: str, where: str) -> str:
    keys = sorted(node.keys())
    close = difflib.get_close_matches(key, keys, n=1)
    hint = f" Did you mean '{where}{close[0]}'?" if close else ""
    section = f" of '{where.rstrip('.')}'" if where else ""
    return f"unknown config key '{where}{key}'.{hint} Valid keys{section}: {', '.join(keys)}"


def _parse_value(text: str, current, key: str):
    """Parses an override string to the type of the current value."""
    if isinstance(current, bool):
        low = text.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ConfigError(f"config key {key!r} is a bool; got {text!r} (use true or false)")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"config key {key!r} is an int; got {text!r}") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"config key {key!r} is a float; got {text!r}") from None
    if isinstance(current, str):
        return text
    if isinstance(current, (tuple, list)):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = tuple(s.strip() for s in text.split(",") if s.strip())
        if not isinstance(value, (tuple, list)):
            value = (value,)
        return tuple(value)
    raise ConfigError(f"config key {key!r} of type {type(current).__name__} cannot be set from the "
                      "command line")


def apply_override(cfg: ConfigDict, item: str) -> None:
    """Applies one `a.b.c=value` override; unknown keys and wrong types raise ConfigError."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like --config.section.key=value")
    dotted, _, text = item.partition("=")
    dotted = dotted.removeprefix("--").removeprefix("config.")
    parts = dotted.split(".")
    node, where = cfg, ""
    for part in parts[:-1]:
        if part not in node or not isinstance(node[part], ConfigDict):
            raise ConfigError(_valid_keys_message(node, part, where))
        node, where = node[part], f"{where}{part}."
    key = parts[-1]
    if key not in node:
        raise ConfigError(_valid_keys_message(node, key, where))
    if isinstance(node[key], ConfigDict):
        raise ConfigError(f"config key {dotted!r} is a section; set one of its keys: {sorted(node[key].keys())}")
    value = _parse_value(text, node[key], dotted)
    try:
        node[key] = value
    except TypeError as e:
        raise ConfigError(f"config key {dotted!r}: {e}") from None


def validate(cfg: ConfigDict) -> None:
    """Checks every key and type of `cfg` against `defaults(cfg.kind)`."""
    kind = cfg.get("kind", "")
    reference = defaults(kind)

    def walk(node, ref, where):
        for key in node:
            if key not in ref:
                raise ConfigError(_valid_keys_message(ref, key, where))
            value, want = node[key], ref[key]
            if isinstance(want, ConfigDict):
                if not isinstance(value, ConfigDict):
                    raise ConfigError(f"config key {where}{key!r} must be a section with keys {sorted(want.keys())}")
                walk(value, want, f"{where}{key}.")
            elif not _same_type(value, want):
                raise ConfigError(f"config key {where}{key!r} must be {type(want).__name__}, "
                                  f"got {type(value).__name__} ({value!r})")

    walk(cfg, reference, "")


def _same_type(value, want) -> bool:
    if isinstance(want, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(want, bool)
    if isinstance(want, float):
        return isinstance(value, (int, float))
    if isinstance(want, (tuple, list)):
        return isinstance(value, (tuple, list))
    return isinstance(value, type(want))


def to_dict(cfg: ConfigDict) -> dict:
    return cfg.to_dict()


__all__ = ["ConfigError", "base_config", "defaults", "load", "apply_override", "validate", "ml_collections"]

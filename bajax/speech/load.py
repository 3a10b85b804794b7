"""Load a trained model for inference from a `bajax train` run: config.json + the latest Orbax step.

Accepted paths: the run's workdir (`WORKDIR/config.json`, `WORKDIR/checkpoints/<step>/state`), its
`checkpoints` directory, or one step directory `checkpoints/<step>` (then that step, not the latest).
Only the `model` item of the train state is restored (no optimizer state is read), onto the current
device(s): the trainer's own abstract state, shardings and restore path are reused, with a mesh that
keeps the run's model-parallel axes (fsdp x tensor) and puts nothing on the data axis, so a model that
was trained on a pod slice loads on one CPU and a sharded 7B model stays sharded over its devices.
"""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import orbax.checkpoint as ocp
from flax import nnx
from ml_collections import ConfigDict

from bajax import config as config_lib
from bajax.train.checkpoint import absolute


class LoadError(ValueError):
    """A path that is not a usable run; the message names it and says what to pass instead."""


@dataclasses.dataclass(frozen=True)
class Run:
    workdir: str
    step: int | None     # None = latest


@dataclasses.dataclass
class Loaded:
    model: nnx.Module
    cfg: ConfigDict
    step: int
    run: Run


def resolve(path: str, flag: str = "checkpoint") -> Run:
    """The run directory and step a user-given path points at (see the module docstring); local or gs://."""
    p = absolute(str(path).rstrip("/"))
    candidates = [(p, None)] + ([(p.parent, None)] if p.name == "checkpoints" else [])
    if p.name.isdigit():
        candidates.insert(0, (p.parent.parent, int(p.name)))
    for workdir, step in candidates:
        if (workdir / "config.json").exists() and (workdir / "checkpoints").is_dir():
            return Run(str(workdir), step)
    raise LoadError(f"--{flag} {path}: not a `bajax train` run (expected WORKDIR/config.json and "
                    "WORKDIR/checkpoints/<step>); pass the --workdir of the training run")


def _as_config_value(value):
    """JSON lists back to the tuples the config defaults use (nested, e.g. sharding rules)."""
    if isinstance(value, list):
        return tuple(_as_config_value(v) for v in value)
    return value


def _fill(node: ConfigDict, values: dict, where: str, source: str) -> None:
    for key, value in values.items():
        if key not in node:
            raise LoadError(f"{source}: unknown config key {where}{key} (written by a different bajax "
                            "version?); remove it or update bajax")
        if isinstance(node[key], ConfigDict):
            _fill(node[key], value, f"{where}{key}.", source)
        else:
            node[key] = _as_config_value(value)


def read_config(run: Run, kind: str | None = None) -> ConfigDict:
    """The run's full config: the defaults of its kind, overwritten by everything in config.json."""
    source = absolute(run.workdir) / "config.json"
    values = json.loads(source.read_text())
    got = values.get("kind")
    if kind is not None and got != kind:
        raise LoadError(f"{run.workdir} is a {got!r} run, expected a {kind!r} run; check which checkpoint "
                        "you passed to which flag")
    cfg = config_lib.defaults(got)
    _fill(cfg, values, "", source)
    return cfg


def inference_devices(mesh_cfg) -> list:
    """As many local devices as the run's model-parallel axes need (1 for a data-parallel-only run)."""
    need = math.prod(max(int(v), 1) for k, v in mesh_cfg.items() if k != "data")
    devices = jax.local_devices()
    if need > len(devices):
        raise LoadError(f"the run shards its model over fsdp x tensor = {need} devices but this host has "
                        f"{len(devices)}; load it where {need} devices are visible")
    return devices[:need]


def load(path: str, kind: str | None = None, *, model_overrides: dict | None = None, flag: str = "checkpoint",
         devices=None) -> Loaded:
    """The trained model of a run (model item only, at the requested or latest step), ready for inference.

    `model_overrides` replace `model.*` keys before the model is built (e.g. a path stored in the config
    that is different on this machine); they must not change parameter shapes.
    """
    from bajax.train import checkpoint
    from bajax.train.trainer import Trainer

    run = resolve(path, flag)
    cfg = read_config(run, kind)
    with cfg.unlocked():
        cfg.mesh.data = -1
        for key, value in (model_overrides or {}).items():
            cfg.model[key] = value
    trainer = Trainer(cfg, run.workdir, devices=devices or inference_devices(cfg.mesh))
    ckpt_dir = absolute(run.workdir) / "checkpoints"
    step = run.step
    if step is None:
        manager = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(create=False))
        step = manager.latest_step()
        manager.close()
        if step is None:
            raise LoadError(f"--{flag} {path}: {ckpt_dir} holds no checkpoint yet; train the run first")
    with trainer.scope():
        target = trainer.abstract_with_shardings()["model"]
        try:
            state = checkpoint.restore_params(str(ckpt_dir), target, step)
        except (FileNotFoundError, ValueError, KeyError) as e:
            raise LoadError(f"--{flag} {path}: cannot restore the model of step {step} from {ckpt_dir}: "
                            f"{e}") from e
    return Loaded(nnx.merge(trainer.graphdef, state), cfg, step, run)

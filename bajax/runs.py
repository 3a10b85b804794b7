"""One way to load a run: its `config.json` and a checkpoint's model, onto a given mesh, from any path.

A run directory (written by `bajax train`, `bajax import-*` or an export round trip) holds
    WORKDIR/config.json                      the full config, every key (`read_config`)
    WORKDIR/checkpoints/<step>/state         the train state {'step', 'model', 'opt'} (Orbax)
A user may point at the workdir, its `checkpoints` directory, or one step directory (then that step).
Paths are `etils.epath` paths: local, `gs://`, `s3://` alike. `load` builds the kind's model abstractly on the
mesh it is given (parameters sharded by the run's logical-axis rules), then restores only the `model`
item of the newest (or the named) step onto those shardings, so no optimizer state is read. Every process
of a multi-host job calls it with the same mesh, as Orbax requires.

The trainer's resume, inference (`bajax generate`, encode, decode), export and the frozen helper models
of other kinds (the tokenizer's alignment LM, the flow decoder's tokenizer) all read runs through here.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os

import jax
import numpy as np
from etils import epath
from flax import nnx
from ml_collections import ConfigDict

from bajax import config as config_lib
from bajax import models, sharding


class LoadError(ValueError):
    """A path that is not a usable run; the message names it and says what to pass instead."""


class ShapeMismatch(LoadError):
    """A checkpoint whose parameter shapes differ from the config's model: every mismatch is named."""


def as_path(path) -> epath.Path:
    """Orbax wants absolute paths: local relative paths are resolved, gs:// and other URLs are kept."""
    text = os.fspath(path) if not isinstance(path, str) else path
    return epath.Path(text if "://" in text else os.path.abspath(text))


@dataclasses.dataclass(frozen=True)
class Run:
    workdir: epath.Path
    step: int | None = None      # None = the newest checkpoint

    @property
    def checkpoints(self) -> epath.Path:
        return self.workdir / "checkpoints"


@dataclasses.dataclass
class Loaded:
    model: nnx.Module
    cfg: ConfigDict
    step: int
    run: Run


def resolve(path, flag: str = "checkpoint") -> Run:
    """The run directory and step a user-given path points at (see the module docstring)."""
    p = as_path(str(path).rstrip("/"))
    candidates = [(p, None)] + ([(p.parent, None)] if p.name == "checkpoints" else [])
    if p.name.isdigit():
        candidates.insert(0, (p.parent.parent, int(p.name)))
    for workdir, step in candidates:
        if (workdir / "config.json").exists() and (workdir / "checkpoints").is_dir():
            return Run(workdir, step)
    missing = "no config.json" if not any((w / "config.json").exists() for w, _ in candidates) else "no checkpoints"
    raise LoadError(f"--{flag} {path}: {missing} there, not a `bajax train` run (expected WORKDIR/config.json and "
                    "WORKDIR/checkpoints/<step>); pass the --workdir of the training run")


# -- config.json ---------------------------------------------------------------------------------------

def _as_config_value(value):
    """JSON lists back to the tuples the config defaults use (nested, e.g. sharding rules)."""
    return tuple(_as_config_value(v) for v in value) if isinstance(value, list) else value


def config_from_dict(values: dict, source: str = "config.json") -> ConfigDict:
    """A validated, locked ConfigDict: the defaults of `values['kind']` overwritten by every key of `values`.
    A key the defaults do not know (a config written by another bajax version) is an error naming it."""
    name = values.get("kind", "")
    if name not in models.names():
        raise LoadError(f"{source}: model kind {name!r} is not registered; valid kinds: {list(models.names())}")
    cfg = config_lib.defaults(name)

    def fill(node, vals, where):
        for key, value in vals.items():
            if key not in node:
                raise LoadError(f"{source}: unknown config key {where}{key} (written by a different bajax "
                                f"version?); valid keys there: {sorted(node.keys())}")
            if isinstance(node[key], ConfigDict):
                fill(node[key], value, f"{where}{key}.")
            else:
                node[key] = _as_config_value(value)

    with cfg.unlocked():
        fill(cfg, values, "")
    config_lib.validate(cfg)
    return cfg


def read_config(path, kind: str | None = None, *, flag: str = "checkpoint") -> ConfigDict:
    """The full config of the run at `path` (a workdir or a `Run`), checked to be of `kind` when given."""
    workdir = path.workdir if isinstance(path, Run) else as_path(path)
    source = workdir / "config.json"
    if not source.exists():
        raise LoadError(f"--{flag} {path}: no config.json there; pass the --workdir of a `bajax train` run")
    values = json.loads(source.read_text())
    try:
        models.require(values.get("kind"), kind or values.get("kind"), f"--{flag} {path}")
    except ValueError as e:
        raise LoadError(str(e)) from None
    return config_from_dict(values, str(source))


def write_config(workdir, cfg: ConfigDict) -> None:
    as_path(workdir).joinpath("config.json").write_text(cfg.to_json_best_effort(indent=2))


# -- checkpoints ---------------------------------------------------------------------------------------

def steps(run: Run) -> list[int]:
    """The committed checkpoint steps of a run, oldest first (a step directory with a `state` item)."""
    if not run.checkpoints.is_dir():
        return []
    return sorted(int(p.name) for p in run.checkpoints.iterdir()
                  if p.name.isdigit() and (p / "state").is_dir())


def pick_step(run: Run, step: int | None = None, *, flag: str = "checkpoint") -> int:
    """`step` (or the run's own `Run.step`, or the newest), checked to exist."""
    present = steps(run)
    want = step if step is not None else run.step
    if not present:
        raise LoadError(f"--{flag} {run.workdir}: {run.checkpoints} holds no checkpoint yet; train the run first")
    if want is None:
        return present[-1]
    if want not in present:
        raise LoadError(f"--{flag} {run.workdir}: no checkpoint step {want}; steps present: {present}")
    return want


def state_dir(path, step: int | None = None, *, flag: str = "checkpoint") -> epath.Path:
    """`checkpoints/<step>/state` of the run at `path` (the newest step by default): the Orbax item that
    export reads leaf by leaf."""
    run = path if isinstance(path, Run) else resolve(path, flag)
    return run.checkpoints / str(pick_step(run, step, flag=flag)) / "state"


def leaf_shapes(state_path) -> dict[tuple[str, ...], tuple[tuple[int, ...], np.dtype]]:
    """Every leaf of a saved state's 'model' item, from the checkpoint METADATA alone (no array is read):
    path (as `nnx.to_flat_state` names it) -> (shape, dtype)."""
    import orbax.checkpoint as ocp

    meta = ocp.PyTreeCheckpointer().metadata(as_path(state_path))
    tree = meta.item_metadata.tree if hasattr(meta, "item_metadata") else meta.tree
    out = {}

    def walk(node, where):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, where + (str(k),))
        elif hasattr(node, "shape"):
            key = where[:-1] if where and where[-1] == "value" else where
            out[key] = (tuple(int(d) for d in node.shape), np.dtype(node.dtype))

    if "model" not in tree:
        raise LoadError(f"{state_path}: not a bajax train state (no 'model' item)")
    walk(tree["model"], ())
    return out


def _flat_config(node, where: str = "") -> dict[str, object]:
    out = {}
    for key, value in node.items():
        if isinstance(value, ConfigDict):
            out.update(_flat_config(value, f"{where}{key}."))
        else:
            out[f"{where}{key}"] = value
    return out


def changed_keys(before: ConfigDict, after: ConfigDict, section: str = "model") -> list[str]:
    """`section.key: old -> new` for every key of `section` that differs between two configs."""
    a, b = _flat_config(before[section], f"{section}."), _flat_config(after[section], f"{section}.")
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def check_shapes(run: Run, step: int, target_model, cfg: ConfigDict, *, flag: str = "checkpoint") -> None:
    """Raises `ShapeMismatch` naming every parameter of `target_model` (an abstract model state) whose shape
    differs from, or is missing in, step's checkpoint, with the config keys that changed against the run's
    config.json; reads metadata only, so it runs before anything is restored or written."""
    have = leaf_shapes(run.checkpoints / str(step) / "state")
    want = {tuple(str(k) for k in path): tuple(var.get_value().shape)
            for path, var in nnx.to_flat_state(target_model)}
    bad = [f"{'/'.join(p)}: checkpoint {have[p][0] if p in have else 'has no such parameter'}, "
           f"this config {shape}" for p, shape in want.items() if p not in have or have[p][0] != shape]
    if not bad:
        return
    try:
        changed = changed_keys(read_config(run, flag=flag), cfg)
    except LoadError:
        changed = []
    keys = ("; config keys changed against the run's config.json: " + ", ".join(changed)) if changed else ""
    raise ShapeMismatch(f"--{flag} {run.workdir}: step {step} does not fit this config's model ({len(bad)} "
                        f"parameter(s)): " + "; ".join(bad) + keys)


def restore(checkpoints, step: int, target: dict) -> dict:
    """The items of `target` (a subtree of the saved train state: {'model': ...}, or the whole state) from
    `checkpoints/<step>/state`, each array placed on the sharding its abstract leaf carries. Leaves absent
    from `target` are not read; every leaf of `target` must be in the checkpoint."""
    import orbax.checkpoint as ocp

    manager = ocp.CheckpointManager(as_path(checkpoints), options=ocp.CheckpointManagerOptions(create=False))
    try:
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            item=target,
            restore_args=jax.tree.map(lambda s: ocp.ArrayRestoreArgs(sharding=s.sharding), target),
            partial_restore=True)))
    finally:
        manager.close()
    return restored["state"]


# -- models onto a mesh --------------------------------------------------------------------------------

def inference_mesh(cfg: ConfigDict, devices=None) -> jax.sharding.Mesh:
    """A mesh for inference: the run's model-parallel axes (fsdp x tensor) on this host's first devices,
    nothing on the data axis (1 device for a data-parallel-only run)."""
    need = math.prod(max(int(v), 1) for k, v in cfg.mesh.items() if k != "data")
    devices = list(devices if devices is not None else jax.local_devices())
    if need > len(devices):
        raise LoadError(f"the run shards its model over fsdp x tensor = {need} devices but this host has "
                        f"{len(devices)}; load it where {need} devices are visible")
    shape = {k: (1 if k == "data" else max(int(v), 1)) for k, v in cfg.mesh.items()}
    return sharding.make_mesh(shape, devices[:need])


def scope(mesh: jax.sharding.Mesh, cfg: ConfigDict):
    """The mesh and the run's logical-axis rules, in force while a model is traced or restored."""
    import contextlib

    stack = contextlib.ExitStack()
    stack.enter_context(jax.set_mesh(mesh))
    stack.enter_context(sharding.axis_rules(sharding.normalize_rules(cfg.sharding.rules)))
    return stack


def abstract_model(cfg: ConfigDict, mesh: jax.sharding.Mesh, frozen=None):
    """(graphdef, model state of ShapeDtypeStructs carrying their shardings on `mesh`) of the kind's model."""
    from bajax.models import lora

    kind = models.get(cfg.kind)
    with scope(mesh, cfg):
        # A LoRA run's model carries its adapters (unmerged: the forward adds them).
        abstract = nnx.eval_shape(lambda: lora.build(kind, cfg.model, nnx.Rngs(cfg.seed), frozen or {},
                                                     cfg.train.get("lora")))
        graphdef, state = nnx.split(abstract)

        def attach(var):
            sh = sharding.state_shardings(var, mesh)
            return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), var)

        state = jax.tree.map(attach, state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return graphdef, state


def _override(cfg: ConfigDict, model_overrides: dict) -> None:
    """`model.*` keys, dotted for nested sections ('loss.align_weight'), set on an unlocked cfg."""
    for dotted, value in model_overrides.items():
        node = cfg.model
        *parents, key = dotted.split(".")
        for part in parents:
            node = node[part]
        if key not in node:
            raise LoadError(f"model override {dotted!r}: no such key model.{dotted}")
        node[key] = value


def load(path, kind: str | None = None, *, mesh: jax.sharding.Mesh | None = None, step: int | None = None,
         model_overrides: dict | None = None, flag: str = "checkpoint") -> Loaded:
    """The trained model of the run at `path` (model item only), on `mesh` (default `inference_mesh`).

    `model_overrides` replace `model.*` keys before the model is built: settings that change no parameter
    shape (a path stored in the config that differs on this machine), or `loss.align_weight=0` style
    switches that leave out a training-only branch (its leaves are then simply not read).
    """
    run = resolve(path, flag)
    cfg = read_config(run, kind, flag=flag)
    if model_overrides:
        with cfg.unlocked():
            _override(cfg, model_overrides)
    mesh = mesh if mesh is not None else inference_mesh(cfg)
    chosen = pick_step(run, step, flag=flag)
    graphdef, target = abstract_model(cfg, mesh)
    return Loaded(nnx.merge(graphdef, restore_model(run, chosen, target, cfg, flag=flag)), cfg, chosen, run)


def restore_model(run: Run, step: int, target_model, cfg: ConfigDict, *, flag: str = "checkpoint"):
    """Step's `model` item onto the shardings of `target_model` (an abstract model state of `cfg`): shapes
    checked first from the metadata (`ShapeMismatch` names every parameter), any other failure a
    `LoadError` naming the run and step. What `load` and the trainer's `train.init_from` restore with."""
    check_shapes(run, step, target_model, cfg, flag=flag)
    try:
        return restore(run.checkpoints, step, {"model": target_model})["model"]
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise LoadError(f"--{flag} {run.workdir}: cannot restore the model of step {step} from "
                        f"{run.checkpoints}: {e}") from e


@functools.cache
def load_frozen(path: str, kind: str, mesh: jax.sharding.Mesh, flag: str, overrides: tuple = ()) -> Loaded:
    """`load` cached per (run, mesh): a frozen helper model read once per process and mesh, never trained."""
    return load(path, kind, mesh=mesh, flag=flag, model_overrides=dict(overrides))

"""Helpers of the interop tests: a run dir from a model with perturbed parameters, state comparison."""

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from bajax import runs
from bajax.interop import rundir


def perturb(model, seed=0, scale=0.2):
    """Random values in every Param (norm weights around 1), so each mapped tensor changes the output."""
    rng = np.random.default_rng(seed)
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        v = np.asarray(var.get_value())
        base = 1.0 if any("norm" in str(p) for p in path) and path[-1] in ("weight", "scale") else 0.0
        var.set_value(jax.numpy.asarray(base + scale * rng.standard_normal(v.shape).astype(np.float32)))
    return model


def write_model_run(tmp, cfg, model):
    return rundir.write_run(tmp, cfg, nnx.state(model))


def assert_runs_bitwise_equal(a, b, skip=lambda path: False):
    da = str(runs.state_dir(a))
    db = str(runs.state_dir(b))
    sa, sb = runs.leaf_shapes(da), runs.leaf_shapes(db)
    assert sa.keys() == sb.keys()
    keys = [k for k in sa if not skip(k)]
    va, vb = read_leaves(da, keys), read_leaves(db, keys)
    bad = [k for k in keys if va[k].dtype != vb[k].dtype or va[k].tobytes() != vb[k].tobytes()]
    assert not bad, f"leaves differ after export -> import: {bad[:5]}"
    return len(keys)


def torch_state(export_dir):
    import torch

    from bajax.interop.safetensors_io import Reader

    r = Reader(export_dir)
    return {k: torch.from_numpy(r.get(k)) for k in r}


def read_leaves(path: str, leaves: list[tuple[str, ...]]) -> dict[tuple[str, ...], np.ndarray]:
    """Only these leaves of the 'model' item, as host numpy arrays (no JAX device memory)."""
    item: dict = {}
    for leaf in leaves:
        node = item.setdefault("model", {})
        for k in leaf:
            node = node.setdefault(k, {})
        node["value"] = np.zeros((), np.float32)            # placeholder: restore_type decides the type
    args = {k: v for k, v in item.items()}
    restore_args = _map(item, lambda _: ocp.RestoreArgs(restore_type=np.ndarray))
    restored = ocp.PyTreeCheckpointer().restore(path, args=ocp.args.PyTreeRestore(
        item=args, restore_args=restore_args, partial_restore=True))
    out = {}
    for leaf in leaves:
        node = restored["model"]
        for k in leaf:
            node = node[k]
        out[leaf] = node["value"]
    return out


def _map(tree, fn):
    return {k: _map(v, fn) for k, v in tree.items()} if isinstance(tree, dict) else fn(tree)

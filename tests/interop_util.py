"""Helpers of the interop tests: a run dir from a model with perturbed parameters, state comparison."""

import jax
import numpy as np
from flax import nnx

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
    _, da = rundir.state_dir(a)
    _, db = rundir.state_dir(b)
    sa, sb = rundir.leaf_shapes(da), rundir.leaf_shapes(db)
    assert sa.keys() == sb.keys()
    keys = [k for k in sa if not skip(k)]
    va, vb = rundir.read_leaves(da, keys), rundir.read_leaves(db, keys)
    bad = [k for k in keys if va[k].dtype != vb[k].dtype or va[k].tobytes() != vb[k].tobytes()]
    assert not bad, f"leaves differ after export -> import: {bad[:5]}"
    return len(keys)


def torch_state(export_dir):
    import torch

    from bajax.interop.safetensors_io import Reader

    r = Reader(export_dir)
    return {k: torch.from_numpy(r.get(k)) for k in r}

"""The registry of model kinds: no kind is decided by hand outside it, and a toy kind registered here
trains, checkpoints, resumes, loads onto another mesh, exports and imports through the generic paths."""

import re
from pathlib import Path

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from ml_collections import ConfigDict

from bajax import config as config_lib
from bajax import models, runs, sharding
from bajax.interop.entries import E, Linear, Same
from bajax.models import Field, ModelKind, ReferenceLayout, rows_per_process
from tests.remote_store import remote_path  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]
# A branch on which model this is: `kind == ...`, `kind != ...`, `if kind`, `if cfg.kind ...`.
KIND_BRANCH = re.compile(r"\bkind\s*(==|!=)|\b(if|elif)\s+(\w+\.)*kind\b")


def test_no_kind_branches_outside_the_registry():
    offenders = []
    for path in sorted((ROOT / "bajax").rglob("*.py")):
        if path.parent.name == "models" and path.parent.parent.name == "bajax":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if KIND_BRANCH.search(line.split("#")[0]):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "decide by registry lookup, not by hand:\n" + "\n".join(offenders)


def test_builtin_kinds_and_unknown_kind_message():
    assert models.names()[:4] == ("lm", "tokenizer", "flow", "vocoder")
    for name in ("lm", "tokenizer", "flow", "vocoder"):
        spec = models.get(name)
        assert spec.name == name and spec.layout is not None
        cfg = config_lib.defaults(name)
        batch = spec.abstract_batch(cfg)
        assert set(batch) <= set(spec.batch_fields)
        assert all(b.shape[0] == cfg.train.batch_size for b in batch.values())
    with pytest.raises(KeyError, match=r"unknown model kind 'codec'; valid kinds: \['lm', 'tokenizer', 'flow', "
                                       r"'vocoder'"):
        models.get("codec")
    with pytest.raises(config_lib.ConfigError, match="unknown model kind 'codec'"):
        config_lib.defaults("codec")


# -- a toy kind ---------------------------------------------------------------------------------------

class Toy(nnx.Module):
    """y = tanh(x @ w) * scale, with logical axes so meshes shard it."""

    def __init__(self, cfg, rngs: nnx.Rngs):
        self.w = nnx.Param(jax.random.normal(rngs.params(), (cfg.dim, cfg.dim)) * 0.3, logical_axes=("embed", "mlp"))
        self.scale = nnx.Param(jnp.ones((cfg.dim,)), logical_axes=("mlp",))

    def __call__(self, x):
        return jnp.tanh(x @ self.w[...]) * self.scale[...]


def toy_config():
    c = ConfigDict({"dim": 16})
    c.lock()
    return c


def toy_loss(model_cfg, frozen=None):
    dim = int(model_cfg.dim)

    def loss_fn(model, batch, rng, totals):
        err = jnp.sum((model(batch["x"]) - batch["y"]) ** 2) / (totals["rows"] * dim)
        return err, {"mse": err}

    return loss_fn


def toy_dataset(cfg, process_index, process_count, split):
    dim = cfg.model.dim

    def example(i):
        x = np.random.default_rng(int(i)).standard_normal(dim).astype(np.float32)
        return {"x": x, "y": np.tanh(x[::-1]).astype(np.float32)}

    ds = grain.MapDataset.range(100_000)[process_index::process_count].map(example)
    return ds.to_iter_dataset().batch(rows_per_process(cfg.train, process_count))


TOY = ModelKind(
    name="toy",
    default_model_config=toy_config,
    build_model=lambda model_cfg, rngs, frozen=None: Toy(model_cfg, rngs),
    loss=toy_loss,
    loss_totals=lambda batch: {"rows": jnp.float32(batch["x"].shape[0])},
    batch_fields={"x": Field(np.float32, ("batch", None)), "y": Field(np.float32, ("batch", None))},
    batch_shapes=lambda cfg: {k: (cfg.train.batch_size, cfg.model.dim) for k in ("x", "y")},
    make_dataset=toy_dataset,
    flops_per_step=lambda cfg: 6.0 * cfg.model.dim ** 2 * cfg.train.batch_size,
    work_units=lambda batch: ("rows", float(len(batch["x"]))),
    layout=ReferenceLayout(entries=lambda shapes: [E("toy.weight", Linear(), "w"), E("toy.scale", Same(), "scale")],
                           reference_config=lambda cfg: {"toy_dim": cfg.model.dim},
                           owns=lambda name: name.startswith("toy.")),
)


@pytest.fixture
def toy_kind():
    models.register(TOY)
    yield TOY
    models.unregister("toy")


def toy_run_config(*overrides):
    cfg = config_lib.defaults("toy")
    for item in ("train.steps=6", "train.batch_size=8", "optim.warmup_steps=1", "optim.lr=0.05",
                 "checkpoint.every=3", "checkpoint.async_save=false", "metrics.log_every=1",
                 "metrics.tensorboard=false", *overrides):
        config_lib.apply_override(cfg, item)
    config_lib.validate(cfg)
    return cfg


def test_a_toy_kind_trains_resumes_loads_exports_and_imports(toy_kind, tmp_path):
    from bajax.interop.export import export
    from bajax.interop.import_torch import import_torch
    from bajax.interop.safetensors_io import Reader
    from bajax.train.trainer import train

    cfg = toy_run_config()
    full = train(cfg, str(tmp_path / "full"), quiet=True)
    assert full.metrics[-1]["loss"] < full.metrics[0]["loss"]
    first = train(cfg, str(tmp_path / "split"), quiet=True, stop_after=3)
    second = train(cfg, str(tmp_path / "split"), quiet=True)
    assert [m["step"] for m in second.metrics] == [4, 5, 6]
    np.testing.assert_array_equal([m["loss"] for m in first.metrics + second.metrics],
                                  [m["loss"] for m in full.metrics])

    # The run loader: config.json + newest step onto another mesh, sharded by the run's rules.
    mesh = sharding.make_mesh({"data": 1, "fsdp": 2, "tensor": 2}, jax.devices()[:4])
    loaded = runs.load(str(tmp_path / "full"), "toy", mesh=mesh)
    assert loaded.step == 6 and isinstance(loaded.model, Toy)
    assert loaded.model.w[...].sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    earlier = runs.load(str(tmp_path / "full" / "checkpoints" / "3"), "toy", mesh=mesh)
    assert earlier.step == 3 and not np.array_equal(earlier.model.w[...], loaded.model.w[...])

    # Export in the toy's reference names, import back: bitwise the same parameters.
    summary = export(str(tmp_path / "full"), str(tmp_path / "export"), log=None)
    assert summary["component"] == "toy" and summary["tensors"] == 2
    reader = Reader(str(tmp_path / "export"))
    np.testing.assert_array_equal(reader.get("toy.weight", dtype=None), np.asarray(loaded.model.w[...]).T)
    back = import_torch(str(tmp_path / "export"), str(tmp_path / "back"), log=None)
    again = runs.load(back, "toy", mesh=mesh)
    for name in ("w", "scale"):
        np.testing.assert_array_equal(np.asarray(getattr(again.model, name)[...]),
                                      np.asarray(getattr(loaded.model, name)[...]))


def test_a_run_on_gcs_trains_resumes_and_loads_like_a_local_one(toy_kind, remote_path, tmp_path):  # noqa: F811
    """gs:// (a local GCS emulator): checkpoints, the data iterator, config.json and metrics through etils.epath
    and TensorStore; the run loader reads it onto another mesh exactly like the local run."""
    from bajax.train.trainer import train

    cfg = toy_run_config()
    local = train(cfg, str(tmp_path / "local"), quiet=True)
    train(cfg, remote_path, quiet=True, stop_after=3)
    remote = train(cfg, remote_path, quiet=True)
    assert [m["step"] for m in remote.metrics] == [4, 5, 6]
    np.testing.assert_array_equal([m["loss"] for m in remote.metrics], [m["loss"] for m in local.metrics[3:]])
    mesh = sharding.make_mesh({"data": 1, "fsdp": 2, "tensor": 1}, jax.devices()[:2])
    a, b = runs.load(remote_path, "toy", mesh=mesh), runs.load(str(tmp_path / "local"), "toy", mesh=mesh)
    assert a.step == b.step == 6 and a.cfg.to_dict() == b.cfg.to_dict()
    np.testing.assert_array_equal(np.asarray(a.model.w[...]), np.asarray(b.model.w[...]))
    assert a.model.w[...].sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")   # tensor has size 1

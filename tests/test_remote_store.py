"""Checkpoints on a non-local path: Orbax arrays (TensorStore gcs driver), Grain iterator state and epath
file operations against the local GCS emulator of tests/remote_store.py."""

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from tests.remote_store import remote_path  # noqa: F401  (fixture)


def test_epath_file_operations(remote_path):  # noqa: F811
    root = epath.Path(remote_path)
    assert not (root / "notes.txt").exists()
    (root / "notes.txt").write_text("hello")
    (root / "sub" / "a.json").write_text("{}")
    assert (root / "notes.txt").exists()
    assert (root / "notes.txt").read_text() == "hello"
    assert (root / "sub").is_dir()
    assert sorted(p.name for p in root.glob("*")) == ["notes.txt", "sub"]
    assert [p.name for p in (root / "sub").glob("*.json")] == ["a.json"]
    (root / "notes.txt").unlink()
    assert not (root / "notes.txt").exists()


def _iterator():
    return iter(grain.MapDataset.range(100).map(lambda i: i * 10).to_iter_dataset())


def test_orbax_and_grain_round_trip(remote_path):  # noqa: F811
    devices = np.array(jax.devices())
    save_mesh = jax.sharding.Mesh(devices, ("data",))
    state = {
        "w": jax.device_put(np.arange(64, dtype=np.float32).reshape(8, 8), NamedSharding(save_mesh, P("data"))),
        "b": jax.device_put(np.full((8,), 3, np.int32), NamedSharding(save_mesh, P())),
        "step": jax.device_put(np.int32(7), NamedSharding(save_mesh, P())),
    }
    data_iter = _iterator()
    assert [next(data_iter) for _ in range(3)] == [0, 10, 20]

    ckpt_dir = epath.Path(remote_path) / "checkpoints"
    manager = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(create=True))
    assert manager.save(5, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                   data_iter=grain.checkpoint.CheckpointSave(data_iter)))
    manager.wait_until_finished()
    manager.close()
    assert next(data_iter) == 30          # the saved state is 3 elements in, whatever the iterator did since

    step_dir = ckpt_dir / "5"
    assert step_dir.is_dir()
    assert {p.name for p in step_dir.glob("*")} >= {"state", "data_iter"}
    assert (step_dir / "data_iter" / "process_0-of-1.json").exists()      # Grain's JSON, through epath
    assert (step_dir / "state" / "manifest.ocdbt").exists()                # arrays, through TensorStore gcs
    assert (step_dir / "commit_success.txt").exists()     # Orbax's GCS commit marker (no atomic rename there)

    # Restore through a fresh manager onto another mesh layout: 4 x 2, `w` split over both axes.
    restore_mesh = jax.sharding.Mesh(devices.reshape(4, 2), ("fsdp", "tp"))
    w_sharding = NamedSharding(restore_mesh, P("fsdp", "tp"))
    replicated = NamedSharding(restore_mesh, P())
    abstract = {
        "w": jax.ShapeDtypeStruct((8, 8), np.float32, sharding=w_sharding),
        "b": jax.ShapeDtypeStruct((8,), np.int32, sharding=replicated),
        "step": jax.ShapeDtypeStruct((), np.int32, sharding=replicated),
    }
    fresh_iter = _iterator()
    manager = ocp.CheckpointManager(ckpt_dir)
    assert manager.latest_step() == 5
    restored = manager.restore(5, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                          data_iter=grain.checkpoint.CheckpointRestore(fresh_iter)))
    manager.close()

    state_out = restored["state"]
    assert state_out["w"].sharding == w_sharding
    assert state_out["b"].sharding == replicated
    np.testing.assert_array_equal(np.asarray(state_out["w"]), np.arange(64, dtype=np.float32).reshape(8, 8))
    np.testing.assert_array_equal(np.asarray(state_out["b"]), np.full((8,), 3, np.int32))
    assert int(state_out["step"]) == 7
    assert next(fresh_iter) == 30         # Grain resumes at the element after the saved position

"""Device layout of the (data, fsdp, tensor) mesh: sizes, -1, errors, and multi-slice placement."""

import dataclasses

import jax
import numpy as np
import pytest

from bajax.sharding import device_grid, make_mesh


@dataclasses.dataclass(frozen=True)
class FakeDevice:
    """What mesh construction reads from a device (a multi-slice TPU pod cannot be had here)."""
    id: int
    slice_index: int
    process_index: int = 0
    platform: str = "cpu"
    device_kind: str = "cpu"


def test_fill_axis_and_order_on_cpu():
    mesh = make_mesh({"data": 2, "fsdp": -1, "tensor": 2})
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert [d.id for d in mesh.devices.flat] == [d.id for d in jax.devices()]


def test_bad_sizes_name_the_fix():
    with pytest.raises(ValueError, match="set one axis to -1"):
        make_mesh({"data": 3, "fsdp": 1, "tensor": 1})
    with pytest.raises(ValueError, match="unknown axes"):
        make_mesh({"dp": 8})


def test_multi_slice_only_data_axis_crosses_slices():
    devices = [FakeDevice(i, slice_index=i // 4) for i in range(8)]        # 2 slices x 4 chips
    grid = device_grid([4, 2, 1], devices)
    assert grid.shape == (4, 2, 1)
    slice_of = np.vectorize(lambda d: d.slice_index)(grid)
    # Each data row lies in one slice; fsdp (and tensor) groups never mix slices.
    assert (slice_of == slice_of[:, :1, :1]).all()
    assert sorted(slice_of[:, 0, 0]) == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="multiple of the 2 TPU slices"):
        device_grid([1, 8, 1], devices)

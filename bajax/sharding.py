"""Meshes, logical-axis rules and the helpers that put parameters, batches and activations on them.

Every parameter carries the metadata `logical_axes` (one name or None per dimension), e.g.
`nnx.Param(w, logical_axes=('embed', 'mlp'))`. One rules table (config `sharding.rules`) maps logical
names onto mesh axes; a model never names a mesh axis itself. Activations are constrained with
`constrain(x, ('batch', 'length', 'embed'))`, which is a no-op outside a mesh context, so the same model
code runs unsharded in tests and sharded under `jax.jit` on a pod.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# Default rules: batch over data+fsdp (FSDP is data parallelism with sharded weights), weights' `embed`
# dimension over fsdp (ZeRO-3 style), heads / mlp / vocab over tensor (Megatron style).
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("qkv", None),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("codebook", "tensor"),
    ("code_dim", "fsdp"),
    ("depth", None),
    ("layers", None),
    ("mel", None),
    ("conv_in", None),
    ("conv_out", "tensor"),
    ("kernel", None),
    ("norm", None),
)

_state = threading.local()


def make_mesh(shape: dict[str, int], devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """A mesh with axes (data, fsdp, tensor); one axis may be -1 and takes the remaining devices."""
    devices = list(devices if devices is not None else jax.devices())
    unknown = set(shape) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"mesh: unknown axes {sorted(unknown)}; valid axes are {list(MESH_AXES)}")
    sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
    if sizes.count(-1) > 1:
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))}: at most one axis may be -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))}: {len(devices)} devices are not "
                             f"divisible by the fixed axes' product {known}")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices but "
                         f"{len(devices)} are available; set one axis to -1 to fill the rest")
    return jax.sharding.Mesh(device_grid(sizes, devices), MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)


def device_grid(sizes: Sequence[int], devices: Sequence) -> np.ndarray:
    """Devices laid out as a (data, fsdp, tensor) array so that collectives take the fast links.

    One TPU slice: `mesh_utils.create_device_mesh` follows the ICI torus (ring neighbours along each axis).
    Several slices (multi-slice pods, devices carry `slice_index`): only the data axis crosses the slow
    data-centre network; fsdp and tensor stay inside a slice. GPUs and CPUs: in device-id order.
    """
    from jax.experimental import mesh_utils

    slices = sorted({getattr(d, "slice_index", 0) for d in devices})
    if len(slices) > 1:
        if sizes[0] % len(slices):
            raise ValueError(f"mesh data={sizes[0]} must be a multiple of the {len(slices)} TPU slices: only the "
                             "data axis may cross slices (fsdp and tensor need the fast in-slice links)")
        return mesh_utils.create_hybrid_device_mesh([sizes[0] // len(slices), *sizes[1:]], [len(slices), 1, 1],
                                                    devices, allow_split_physical_axes=True)
    try:
        return mesh_utils.create_device_mesh(sizes, devices, allow_split_physical_axes=True)
    except (ValueError, NotImplementedError, AssertionError):
        # e.g. a subset of a TPU slice that is no torus (one chip of eight): plain order is all there is.
        return np.asarray(devices).reshape(sizes)


def normalize_rules(rules) -> tuple[tuple[str, tuple[str, ...] | None], ...]:
    """Rules from config (tuples or lists, a mesh axis name, a tuple of names or None) in one form."""
    out = []
    for entry in rules:
        name, target = entry
        if target is None or isinstance(target, str):
            target = None if target in (None, "", "none", "None") else (target,)
        else:
            target = tuple(target) or None
        out.append((name, target))
    return tuple(out)


@contextlib.contextmanager
def axis_rules(rules) -> Iterator[None]:
    """Makes `rules` the table that `constrain` and `logical_to_spec` use inside the block."""
    previous = getattr(_state, "rules", None)
    _state.rules = normalize_rules(rules)
    try:
        yield
    finally:
        _state.rules = previous


def current_rules():
    return getattr(_state, "rules", None) or normalize_rules(DEFAULT_RULES)


def logical_to_spec(axes: Sequence[str | None] | None, rules=None,
                    mesh_axes: Sequence[str] | None = None) -> PartitionSpec:
    """PartitionSpec for logical `axes`; a mesh axis is used at most once (later uses are replicated)."""
    if axes is None:
        return PartitionSpec()
    table = dict(normalize_rules(rules) if rules is not None else current_rules())
    used: set[str] = set()
    spec = []
    for name in axes:
        if name is None:
            spec.append(None)
            continue
        if name not in table:
            raise KeyError(f"logical axis {name!r} has no sharding rule; add it to config "
                           f"sharding.rules (known: {sorted(table)})")
        target = tuple(a for a in (table[name] or ()) if a not in used
                       and (mesh_axes is None or a in mesh_axes))
        used.update(target)
        spec.append(None if not target else target[0] if len(target) == 1 else target)
    return PartitionSpec(*spec)


def _is_var(x) -> bool:
    return isinstance(x, nnx.Variable)


def variable_axes(var: nnx.Variable) -> tuple[str | None, ...]:
    """Logical axes of a variable; scalars and unannotated state are replicated."""
    axes = var.get_metadata().get("logical_axes")
    ndim = np.ndim(var.get_value())
    if axes is None:
        return (None,) * ndim
    if len(axes) != ndim:
        raise ValueError(f"variable of shape {np.shape(var.get_value())} has logical_axes {axes} "
                         f"of the wrong length")
    return tuple(axes)


def state_shardings(state, mesh: jax.sharding.Mesh, rules=None):
    """NamedShardings for an nnx State, dropping a mesh axis where it does not divide the dimension."""

    def one(var):
        spec = logical_to_spec(variable_axes(var), rules, mesh.axis_names)
        return NamedSharding(mesh, fit_spec(spec, np.shape(var.get_value()), mesh))

    return jax.tree.map(one, state, is_leaf=_is_var)


def fit_spec(spec: PartitionSpec, shape: Sequence[int], mesh: jax.sharding.Mesh) -> PartitionSpec:
    """Replicates dimensions the assigned mesh axes do not divide (e.g. a vocab of 272 over tensor=8)."""
    fitted = []
    for dim, entry in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
        size = math.prod(mesh.shape[n] for n in names)
        fitted.append(entry if names and dim % size == 0 else None)
    return PartitionSpec(*fitted)


def named(mesh: jax.sharding.Mesh, axes: Sequence[str | None], rules=None) -> NamedSharding:
    """NamedSharding of an array whose dimensions have the logical names `axes`."""
    return NamedSharding(mesh, logical_to_spec(axes, rules, mesh.axis_names))


def tracing_for_one_device() -> bool:
    """True when the program being traced runs on a single device: the active mesh has one device, or no
    mesh is active and the process sees one device. Layers use it to pick layouts that only pay off (or
    are only safe) without partitioning."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty:
        return jax.device_count() == 1
    return mesh.size == 1


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
    """Sharding constraint by logical names; a no-op when no mesh is active (plain eager or tests)."""
    mesh = jax.sharding.get_abstract_mesh()
    # On one device a constraint has nothing to say, but XLA:CPU still treats it as a fusion barrier.
    if mesh is None or mesh.empty or mesh.size == 1:
        return x
    spec = logical_to_spec(axes, None, mesh.axis_names)
    return jax.lax.with_sharding_constraint(x, spec)


def to_global(batch: dict, mesh: jax.sharding.Mesh, rules=None) -> dict:
    """Host-local numpy rows -> global jax.Arrays split on the leading axis over the mesh axes of the
    logical 'batch' axis. Every process passes its own rows; the global batch is their concatenation in
    process order (`jax.make_array_from_process_local_data`), so it is multi-host safe."""

    def one(x):
        x = np.asarray(x)
        spec = logical_to_spec(("batch",) + (None,) * (x.ndim - 1), rules, mesh.axis_names)
        return jax.make_array_from_process_local_data(NamedSharding(mesh, spec), x)

    return {k: one(v) for k, v in batch.items()}

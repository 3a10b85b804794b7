"""Joining the processes of one multi-host job into one JAX runtime (`jax.distributed.initialize`).

Where the process layout comes from, first match wins:
  explicit   --coordinator HOST:PORT --num-processes N --process-id I (any launcher, or loopback tests)
  env        BAJAX_COORDINATOR, BAJAX_NUM_PROCESSES, BAJAX_PROCESS_ID (same meaning, for wrappers)
  slurm      SLURM_NTASKS > 1: process id SLURM_PROCID, coordinator = first host of SLURM_JOB_NODELIST
  tpu        a Cloud TPU VM: JAX reads the pod's worker list from the TPU metadata itself
  single     none of the above: one process, nothing to initialise

The layout is computed by `detect` (pure, tested) and applied by `initialize`, which must run before any
JAX computation. On the CPU backend the cross-process collectives use gloo, which is what lets tests run
2 processes x 4 fake devices on one machine as one 8-device mesh.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from collections.abc import Mapping

CLUSTERS = ("auto", "explicit", "slurm", "tpu", "none")
DEFAULT_PORT = 8476


@dataclasses.dataclass(frozen=True)
class Layout:
    source: str                        # explicit | env | slurm | tpu | single
    coordinator: str | None = None     # HOST:PORT of process 0 (None: JAX finds it, TPU pods)
    num_processes: int | None = None
    process_id: int | None = None

    @property
    def multi(self) -> bool:
        return self.source == "tpu" or (self.num_processes or 1) > 1

    def describe(self) -> str:
        if self.source == "single":
            return "single process"
        if self.source == "tpu":
            return "TPU pod (layout from the TPU metadata)"
        return f"process {self.process_id} of {self.num_processes} via {self.coordinator} ({self.source})"


class DistributedError(ValueError):
    """The process layout is incomplete or inconsistent; the message names the flag or variable."""


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM hostlist: 'gpu[003-010,012],cpu1' -> 'gpu003', 'a1,a2' -> 'a1'."""
    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not m:
        raise DistributedError(f"cannot parse SLURM node list {nodelist!r}")
    prefix, ranges = m.group(1), m.group(2)
    if ranges is None:
        return prefix
    return prefix + re.split(r"[-,]", ranges)[0]   # keeps zero padding: [003-010] -> 003


def slurm_port(environ: Mapping[str, str]) -> int:
    """A port every task of the job agrees on without talking: fixed, or derived from the job id."""
    if environ.get("BAJAX_COORDINATOR_PORT"):
        return int(environ["BAJAX_COORDINATOR_PORT"])
    return 20000 + int(environ.get("SLURM_JOB_ID", "0")) % 20000


def on_cloud_tpu_vm() -> bool:
    """A Cloud TPU VM exposes its chips as /dev/accel* (v4, v5p) or /dev/vfio/N (v5e, v6e)."""
    return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def detect(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
           *, cluster: str = "auto", environ: Mapping[str, str] | None = None,
           tpu_vm: bool | None = None) -> Layout:
    """The process layout from flags and the environment (see the module docstring for the order)."""
    env = os.environ if environ is None else environ
    if cluster not in CLUSTERS:
        raise DistributedError(f"--cluster {cluster!r}: valid values are {list(CLUSTERS)}")
    if cluster == "none":
        return Layout("single")

    flags = (coordinator, num_processes, process_id)
    from_env = (env.get("BAJAX_COORDINATOR"), env.get("BAJAX_NUM_PROCESSES"), env.get("BAJAX_PROCESS_ID"))
    for source, values, names in (("explicit", flags, "--coordinator, --num-processes, --process-id"),
                                  ("env", from_env, "BAJAX_COORDINATOR, BAJAX_NUM_PROCESSES, BAJAX_PROCESS_ID")):
        if cluster not in ("auto", "explicit") or all(v in (None, "") for v in values):
            continue
        if any(v in (None, "") for v in values):
            raise DistributedError(f"a multi-process run needs all of {names}; got {values}")
        coord, n, i = str(values[0]), int(values[1]), int(values[2])
        if ":" not in coord:
            coord = f"{coord}:{DEFAULT_PORT}"
        if not 0 <= i < n:
            raise DistributedError(f"process id {i} is outside 0..{n - 1} ({names})")
        return Layout(source, coord, n, i)
    if cluster == "explicit":
        raise DistributedError("--cluster explicit needs --coordinator, --num-processes and --process-id")

    ntasks = int(env.get("SLURM_NTASKS", env.get("SLURM_NPROCS", "1")) or 1)
    if cluster == "slurm" or (cluster == "auto" and "SLURM_JOB_ID" in env and ntasks > 1):
        missing = [k for k in ("SLURM_JOB_ID", "SLURM_PROCID", "SLURM_JOB_NODELIST") if k not in env]
        if missing:
            raise DistributedError(f"--cluster slurm: the environment lacks {missing}; run the command "
                                   "under srun (one task per node)")
        host = first_slurm_host(env["SLURM_JOB_NODELIST"])
        return Layout("slurm", f"{host}:{slurm_port(env)}", ntasks, int(env["SLURM_PROCID"]))

    if cluster == "tpu" or (cluster == "auto" and (on_cloud_tpu_vm() if tpu_vm is None else tpu_vm)):
        return Layout("tpu")
    return Layout("single")


_initialized: Layout | None = None


def initialize(layout: Layout) -> Layout:
    """Applies `layout` before any JAX computation; idempotent for the same layout."""
    global _initialized
    if _initialized is not None:
        if _initialized != layout:
            raise DistributedError(f"JAX distributed is already initialised as {_initialized.describe()}")
        return layout
    if layout.multi:
        import jax

        # Only the CPU client reads this; it makes cross-process CPU collectives possible (tests, debugging).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        if layout.source == "tpu":
            jax.distributed.initialize()
        else:
            # 'deactivate' stops JAX's own cluster detection from overriding the layout, and in particular
            # from pinning one GPU per process under SLURM: bajax runs one process per node with all its GPUs.
            jax.distributed.initialize(layout.coordinator, layout.num_processes, layout.process_id,
                                       cluster_detection_method="deactivate")
    _initialized = layout
    return layout


def add_args(parser) -> None:
    """The flags of every command that may run on several hosts."""
    g = parser.add_argument_group("multi-host (see bajax/train/distributed.py)")
    g.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 (explicit layout)")
    g.add_argument("--num-processes", type=int, default=None, help="processes in the job (explicit layout)")
    g.add_argument("--process-id", type=int, default=None, help="this process, 0..N-1 (explicit layout)")
    g.add_argument("--cluster", choices=CLUSTERS, default="auto",
                   help="where the layout comes from; auto: flags, BAJAX_* env, SLURM, TPU VM, else single")


def initialize_from_args(args) -> Layout:
    return initialize(detect(args.coordinator, args.num_processes, args.process_id, cluster=args.cluster))


_barriers: dict[str, int] = {}


def barrier(name: str, timeout_s: int = 3600) -> None:
    """Every process waits here until all arrive, through the coordination service (no device collective,
    so no gloo/NCCL timeout; one process may be minutes behind). A no-op in a single process."""
    import jax
    from jax._src import distributed as jax_distributed  # the client is not public API (Orbax uses it too)

    if jax.process_count() == 1:
        return
    _barriers[name] = _barriers.get(name, 0) + 1              # barrier ids must be unique per use
    jax_distributed.global_state.client.wait_at_barrier(f"bajax:{name}:{_barriers[name]}", timeout_s * 1000)


def compiled_together(jitted, name: str):
    """`jitted`, but with several processes each new input signature is compiled ahead of time and the
    processes meet at a barrier before running it. Why: compile time differs between hosts (or between
    processes sharing an overloaded machine), and CPU collectives give up if a peer is more than ~30 s late
    to the first one (gloo's context set-up deadline); waiting at a barrier has no such limit."""
    import jax

    if jax.process_count() == 1:
        return jitted
    cache: dict = {}

    def call(*args):
        leaves, treedef = jax.tree.flatten(args)
        key = (treedef, tuple((getattr(x, "shape", None), str(getattr(x, "dtype", type(x)))) for x in leaves))
        if key not in cache:
            cache[key] = jitted.lower(*args).compile()
            barrier(f"compiled {name}")
        return cache[key](*args)

    return call

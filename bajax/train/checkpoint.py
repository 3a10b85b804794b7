"""Orbax checkpoints: the train state and the data iterator as two items of one step directory.

Restores go onto the CURRENT mesh: the abstract target carries the shardings of this run, so a state saved
on 8 devices resumes on 1 (or on another pod slice). Saves are asynchronous; `close` waits for them.
"""

from __future__ import annotations

import grain
import jax
import orbax.checkpoint as ocp

from bajax.runs import as_path

CHUNK_BYTES = 64 * 1024**2


def state_save(state) -> ocp.args.StandardSave:
    """How every bajax train state is saved (trainer checkpoints and imported runs alike)."""
    return ocp.args.StandardSave(state, save_args=per_layer_chunks(state))


def per_layer_chunks(state):
    """Save arguments that store every stacked leaf (ndim >= 3: [layers, ...] in scanned models, conv kernels
    [taps, in, out]) in chunks of one leading index, and no chunk above 64 MiB. Orbax would otherwise write
    each leaf as ONE chunk, so reading one layer (`bajax export` streams tensor by tensor) would decode all
    of them, and decoding a chunk holds a buffer of its size beside the destination."""
    def args(x):
        return ocp.SaveArgs(shard_axes=(0,) if getattr(x, "ndim", 0) >= 3 else (), chunk_byte_size=CHUNK_BYTES)
    return jax.tree.map(args, state)


class Checkpointer:
    def __init__(self, directory: str, *, every: int, keep: int, async_save: bool = True):
        self.directory = as_path(directory)
        self.every = every
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                save_interval_steps=1,          # the trainer decides when (every N steps, at the end, SIGTERM)
                enable_async_checkpointing=async_save,
                create=True,
            ),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def set_aside(self, step: int, why: str) -> str:
        """Moves an unreadable step out of the manager's sight, to `checkpoints.unreadable/<step>` beside it
        (never deleted: the user may still want its bytes), with WHY.txt; returns the new place. Process 0
        moves, every process waits for it and re-lists the steps."""
        aside = self.directory.parent / f"{self.directory.name}.unreadable" / str(step)
        if jax.process_index() == 0:
            aside.parent.mkdir(parents=True, exist_ok=True)
            if aside.exists():
                aside = aside.parent / f"{step}.{len(list(aside.parent.iterdir()))}"
            (self.directory / str(step)).rename(aside)
            (aside / "WHY.txt").write_text(why + "\n")
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"bajax_set_aside_{step}")
        self.manager.reload()
        return str(aside)

    def due(self, step: int) -> bool:
        """Whether `save` of this step writes a checkpoint (every N steps)."""
        return self.every > 0 and step % self.every == 0

    def save(self, step: int, state, data_iter=None, *, force: bool = False) -> bool:
        if not force and not self.due(step):
            return False
        items = {"state": state_save(state)}
        if data_iter is not None:
            items["data_iter"] = grain.checkpoint.CheckpointSave(data_iter)
        return self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(self, step: int, abstract_state, data_iter=None):
        """Returns the state on the shardings of `abstract_state`; restores `data_iter` in place."""
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iter is not None:
            items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

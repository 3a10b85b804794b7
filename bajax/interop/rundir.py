"""Run directories as interop sees them: WORKDIR/config.json + WORKDIR/checkpoints/<step>/state, the train
state {'step', 'model', 'opt'} (bajax/train/checkpoint.py).

Runs are found and their configs read by `bajax.runs`. Export reads the checkpoint METADATA (every leaf's
path and shape, no data) and then only the slices one exported tensor needs, straight from TensorStore
(`LeafReader`), so a multi-GB model is never loaded whole. Import writes a run directory whose
`model` item has exactly the layout of a fresh run of the same config, so
`bajax train --config.train.init_from=OUT/checkpoints` restores it.
"""

from __future__ import annotations

import os

import numpy as np

from bajax.interop.entries import Path as LeafPath

CONFIG_PY = '''"""Config of the imported run in this directory (config.json beside this file), e.g.

  bajax train --config {dir}/config.py --workdir runs/from_import --config.train.init_from={dir}/checkpoints
  bajax train --config {dir}/config.py:sft --workdir runs/sft --config.data.source=DIALOGUE_SHARDS \\
      --config.train.init_from={dir}/checkpoints        # an LLM run: chat fine-tuning on `chat` rows only
"""

import json
import os

from bajax.runs import config_from_dict


def get_config(arg: str = ""):
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.json")) as f:
        cfg = config_from_dict(json.load(f))
    if arg == "sft" and "mixture" in cfg.data:   # dialogues only, every parameter (or the LoRA adapters) trains
        for task in cfg.data.mixture:
            cfg.data.mixture[task] = 1.0 if task == "chat" else 0.0
        cfg.train.eval_tasks = ("chat",)
        cfg.train.stage = ""
    elif arg:
        raise ValueError(f"{__file__} takes nothing or ':sft' (LLM runs) after ':', got {arg!r}")
    return cfg
'''


class LeafReader:
    """Slices of the 'model' item's leaves read straight from the checkpoint's TensorStore arrays: `read(leaf,
    (layer,))` decodes only that layer's chunk (bajax checkpoints store stacked leaves in per-layer chunks,
    see bajax/train/checkpoint.py), so export memory is one exported tensor, not a stacked leaf of all layers.
    Checkpoints from other writers (one chunk per leaf) read correctly, only slower."""

    def __init__(self, state_dir: str):
        self.base = state_dir if "://" in state_dir else "file://" + os.path.abspath(state_dir)
        self.stores: dict = {}
        import tensorstore

        self.ts = tensorstore
        # One chunk decoded at a time: concurrent decodes would each hold a chunk-sized buffer.
        self.context = tensorstore.Context({"data_copy_concurrency": {"limit": 1}})

    def _open(self, leaf: LeafPath):
        if leaf not in self.stores:
            name = ".".join(("model",) + leaf + ("value",))
            kvstore = {"driver": "ocdbt", "base": self.base, "path": name}
            errors = []
            for driver in ("zarr", "zarr3"):              # Orbax writes zarr v2 by default, v3 when asked
                try:
                    self.stores[leaf] = self.ts.open({"driver": driver, "kvstore": kvstore}, open=True, read=True,
                                                context=self.context).result()
                    break
                except ValueError as e:
                    errors.append(f"{driver}: {e}")
            else:
                raise FileNotFoundError(f"{self.base}: cannot open leaf {name} ({'; '.join(errors)})")
        return self.stores[leaf]

    def read(self, leaf: LeafPath, index: tuple[int, ...] = ()) -> np.ndarray:
        return self._open(leaf)[index].read().result()


def write_run(out_dir, cfg, model_state, *, step: int = 0) -> str:
    """OUT/config.json, OUT/config.py and OUT/checkpoints/<step>/state = {'step', 'model'} (no optimizer
    state: `train.init_from` reads only 'model'; a new run starts its optimizer fresh)."""
    import jax.numpy as jnp
    import orbax.checkpoint as ocp

    from bajax import runs
    from bajax.train.checkpoint import state_save

    out = runs.as_path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs.write_config(out, cfg)
    (out / "config.py").write_text(CONFIG_PY.replace("{dir}", str(out_dir)))
    mngr = ocp.CheckpointManager(out / "checkpoints", options=ocp.CheckpointManagerOptions(create=True))
    state = {"step": jnp.asarray(step, jnp.int32), "model": model_state}
    mngr.save(step, args=ocp.args.Composite(state=state_save(state)), force=True)
    mngr.wait_until_finished()
    mngr.close()
    return str(out)

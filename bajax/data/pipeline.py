"""Entry points the trainer uses: `lm_dataset`, `audio_dataset`, `to_global`.

The batch dicts are documented in bajax/lm/batch.py (LM) and bajax/data/audio_pipeline.py (audio).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from bajax.data.audio_pipeline import audio_dataset
from bajax.data.lm_pipeline import lm_dataset, lm_records

__all__ = ["lm_dataset", "lm_records", "audio_dataset", "to_global"]


def to_global(batch: dict, mesh: jax.sharding.Mesh, batch_axes=("data", "fsdp")) -> dict:
    """Host-local numpy batch -> global jax.Arrays sharded on the leading axis over `batch_axes`.

    Every process passes its own rows; the global batch is their concatenation in process order.
    Axes missing from the mesh are ignored, so ('data', 'fsdp') also works on a data-only mesh.
    """
    axes = tuple(a for a in batch_axes if a in mesh.axis_names)
    spec = PartitionSpec(axes if axes else None)
    sharding = NamedSharding(mesh, spec)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}

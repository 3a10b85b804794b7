"""A kind's model as a run builds it: `kind.build_model`, then the LoRA adapters of `train.lora` (if rank > 0).

Every path that builds a run's model (the trainer's state, `bajax plan`, `bajax.runs.load` for inference and
export) goes through `build`, so a LoRA run's checkpoint, holding the adapters beside the base weights, always
meets a model of the same layout, whatever the kind: no kind knows about LoRA (bajax/layers/lora.py).
"""

from __future__ import annotations

from collections.abc import Mapping

from flax import nnx
from ml_collections import ConfigDict

from bajax.layers import lora

KEY = "train.lora"


def settings(lora_cfg: ConfigDict | None) -> lora.Settings | None:
    """The adapters a `train.lora` section asks for, or None (rank 0: LoRA off)."""
    if lora_cfg is None or int(lora_cfg.rank) <= 0:
        return None
    if float(lora_cfg.alpha) <= 0:
        raise ValueError(f"config {KEY}.alpha={lora_cfg.alpha} must be > 0 (the adapter scale is alpha / rank)")
    if not 0.0 <= float(lora_cfg.dropout) < 1.0:
        raise ValueError(f"config {KEY}.dropout={lora_cfg.dropout} must be in [0, 1)")
    if not tuple(lora_cfg.targets):
        raise ValueError(f"config {KEY}.targets is empty: give regexes over Linear paths, e.g. "
                         f"('layers/.*_proj',), or set {KEY}.rank=0 to train without LoRA")
    return lora.Settings(int(lora_cfg.rank), float(lora_cfg.alpha), float(lora_cfg.dropout),
                         tuple(str(t) for t in lora_cfg.targets))


def enabled(cfg: ConfigDict) -> bool:
    """Whether a run config (with a `train` section) trains adapters."""
    return settings(cfg.train.get("lora")) is not None


def in_checkpoint(leaf_shapes: Mapping[tuple[str, ...], object]) -> bool:
    """Whether a checkpoint (its leaf paths, `bajax.runs.leaf_shapes`) holds LoRA adapters."""
    return any(path and path[-1] in (lora.A, lora.B) for path in leaf_shapes)


def build(kind, model_cfg: ConfigDict, rngs: nnx.Rngs, frozen: Mapping, lora_cfg: ConfigDict | None = None):
    """`kind.build_model(...)` with the adapters of `lora_cfg` attached. The adapters' random A draws from the
    same `rngs` AFTER the model, so the base weights are those of the same seed without LoRA."""
    model = kind.build_model(model_cfg, rngs, frozen)
    chosen = settings(lora_cfg)
    if chosen is not None:
        try:
            lora.attach(model, chosen, rngs.params())
        except lora.NoMatch as e:
            raise ValueError(f"config {KEY}.targets: {e}. Write the targets as regexes (full match) over these "
                             f"paths, e.g. --config.{KEY}.targets=\"('layers/.*_proj',)\"") from None
    return model

"""Entry points the trainer uses: `lm_dataset`, `audio_dataset`, `to_global`.

The batch dicts are documented in bajax/lm/batch.py (LM) and bajax/data/audio_pipeline.py (audio).
"""

from __future__ import annotations

from bajax.data.audio_pipeline import FlowView, TokenizerView, VocoderView, audio_dataset
from bajax.data.lm_pipeline import lm_dataset, lm_records
from bajax.sharding import to_global  # noqa: F401  (re-exported: the data side of the contract)

__all__ = ["lm_dataset", "lm_records", "audio_dataset", "TokenizerView", "FlowView", "VocoderView", "to_global"]

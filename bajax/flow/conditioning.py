"""Where the flow decoder's conditioning comes from: `conditioner(model_cfg)(batch) -> (cond, cond_lengths)`.

cond_source='tokenizer' (THE PAPER SETTING, configs/flow/base.py): the frozen tokenizer's audio decoder turns
the batch's 12.5 Hz codes into `hidden_states_before_dconv2` [B, 4L - 1, 1280] at 50 Hz; the Pre-Net
nearest-resamples them onto the 4L target mel frames. Needs `model.tokenizer_checkpoint` and shards
prepared with codes (`bajax prepare --tokenizer CKPT`). Nothing flows back into the tokenizer.

cond_source='mel16' (standalone runs and tests, configs/flow/tiny.py; NOT the paper): a fixed, non-learned
feature, the tokenizer's own 16 kHz target log-mel (80 bins, hop 256 = 62.5 Hz, `tokenizer_target_mel`)
of the batch's `wave16`, which the Pre-Net nearest-resamples to the 50 Hz mel grid. It carries the same
information as the tokenizer decoder's output at its best, so a flow decoder can be trained and tested
before a tokenizer exists; it is not a substitute for the codes at generation time.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import jax
import jax.numpy as jnp

from bajax.audio.mel import tokenizer_target_mel

SOURCES = ("tokenizer", "mel16")
MEL16_DIM = 80
TOKENIZER_REQUIRED = "tokenizer checkpoint required: train one with configs/tokenizer/tiny.py"


def mel16(batch: dict) -> tuple[jax.Array, jax.Array]:
    """The 16 kHz tokenizer-target log-mel of `wave16` [B, S]: ([B, S // 256, 80] fp32, lengths [B])."""
    wave = batch["wave16"].astype(jnp.float32)
    feats, lengths = tokenizer_target_mel(wave, batch["wave_lengths"])
    return jax.lax.stop_gradient(feats), lengths


@functools.cache
def _tokenizer_decoder(checkpoint: str):
    """The frozen decoder callable `(codes [B, L, 8], code_lengths [B]) -> (hidden [B, T, D], lengths [B])`,
    loaded once per process from a tokenizer run directory."""
    if importlib.util.find_spec("bajax.tokenizer.model") is None:
        raise ValueError(f"{TOKENIZER_REQUIRED} (bajax.tokenizer.model is not available in this install)")
    from bajax.tokenizer import model as tokenizer_model

    load = getattr(tokenizer_model, "load_frozen_decoder", None)
    if load is None:
        raise ValueError(f"{TOKENIZER_REQUIRED} (bajax.tokenizer.model has no load_frozen_decoder(checkpoint) "
                         "yet: the flow decoder needs hidden_states_before_dconv2 from codes)")
    return load(checkpoint)


def check(model_cfg) -> None:
    """Fails early (at model build) with a message naming the config key to fix. Only validates: building
    happens inside traces (eval_shape, jit), where restoring a checkpoint is impossible; `preload` loads."""
    source = model_cfg.cond_source
    if source not in SOURCES:
        raise ValueError(f"config model.cond_source={source!r}: must be one of {SOURCES}")
    if source == "mel16" and model_cfg.cond_dim != MEL16_DIM:
        raise ValueError(f"config model.cond_dim={model_cfg.cond_dim}: cond_source='mel16' gives "
                         f"{MEL16_DIM}-d features")
    if source == "tokenizer":
        if not model_cfg.tokenizer_checkpoint:
            raise ValueError(f"{TOKENIZER_REQUIRED}, then set --config.model.tokenizer_checkpoint=RUN_DIR "
                             "(or use --config.model.cond_source=mel16 for a standalone run)")
        if not os.path.exists(os.path.join(model_cfg.tokenizer_checkpoint, "config.json")):
            raise ValueError(f"config model.tokenizer_checkpoint={model_cfg.tokenizer_checkpoint!r} is not a "
                             f"tokenizer run directory (no config.json); {TOKENIZER_REQUIRED}")


def preload(model_cfg) -> None:
    """Restores the frozen tokenizer decoder now, outside any trace, so the traced loss finds it cached."""
    check(model_cfg)
    if model_cfg.cond_source == "tokenizer":
        _tokenizer_decoder(model_cfg.tokenizer_checkpoint)


def conditioner(cond_source: str, tokenizer_checkpoint: str = ""):
    """`batch -> (cond [B, Tc, D], cond_lengths [B])` for the configured source (see the module docstring)."""
    if cond_source == "mel16":
        return mel16
    if cond_source != "tokenizer":
        raise ValueError(f"config model.cond_source={cond_source!r}: must be one of {SOURCES}")
    decode = _tokenizer_decoder(tokenizer_checkpoint)

    def from_codes(batch: dict):
        if "codes" not in batch:
            raise ValueError("cond_source='tokenizer' needs codes in the flow batches: prepare the data with "
                             "`bajax prepare --tokenizer CKPT` and set data.audio.require_codes=True")
        hidden, lengths = decode(batch["codes"], batch["code_lengths"])
        return jax.lax.stop_gradient(hidden), lengths

    return from_codes

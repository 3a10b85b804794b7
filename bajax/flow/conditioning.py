"""Where the flow decoder's conditioning comes from: `conditioner(source, decoder)(batch) -> (cond, lengths)`.

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

import jax
import jax.numpy as jnp
from etils import epath

from bajax.audio.mel import tokenizer_target_mel

SOURCES = ("tokenizer", "mel16")
MEL16_DIM = 80
TOKENIZER_REQUIRED = "tokenizer checkpoint required: train one with configs/tokenizer/tiny.py"


def mel16(batch: dict) -> tuple[jax.Array, jax.Array]:
    """The 16 kHz tokenizer-target log-mel of `wave16` [B, S]: ([B, S // 256, 80] fp32, lengths [B])."""
    wave = batch["wave16"].astype(jnp.float32)
    feats, lengths = tokenizer_target_mel(wave, batch["wave_lengths"])
    return jax.lax.stop_gradient(feats), lengths


def check(model_cfg) -> None:
    """Fails early (at model build) with a message naming the config key to fix. Only validates: building
    happens inside traces (eval_shape, jit), where restoring a checkpoint is impossible; the flow kind's
    `load_frozen` loads the tokenizer before anything is traced."""
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
        if not epath.Path(model_cfg.tokenizer_checkpoint).joinpath("config.json").exists():
            raise ValueError(f"config model.tokenizer_checkpoint={model_cfg.tokenizer_checkpoint!r} is not a "
                             f"tokenizer run directory (no config.json); {TOKENIZER_REQUIRED}")


def conditioner(cond_source: str, tokenizer_decoder=None):
    """`batch -> (cond [B, Tc, D], cond_lengths [B])` for the configured source (see the module docstring);
    'tokenizer' needs the frozen decoder `(codes [B, L, 8], code_lengths [B]) -> (hidden [B, T, D], lengths)`
    (`bajax.tokenizer.encode.frozen_decoder` of a loaded tokenizer)."""
    if cond_source == "mel16":
        return mel16
    if cond_source != "tokenizer":
        raise ValueError(f"config model.cond_source={cond_source!r}: must be one of {SOURCES}")
    if tokenizer_decoder is None:
        raise ValueError("cond_source='tokenizer': the frozen tokenizer decoder was not loaded; build the loss "
                         "with the frozen helpers of the flow kind (bajax.models.get('flow').load_frozen)")

    def from_codes(batch: dict):
        if "codes" not in batch:
            raise ValueError("cond_source='tokenizer' needs codes in the flow batches: prepare the data with "
                             "`bajax prepare --tokenizer CKPT` and set data.audio.require_codes=True")
        hidden, lengths = tokenizer_decoder(batch["codes"], batch["code_lengths"])
        return jax.lax.stop_gradient(hidden), lengths

    return from_codes

"""Load a trained tokenizer from a run directory and expose the functions other parts of bajax call.

A run directory (written by `bajax train`) holds `config.json` and `checkpoints/<step>/state` with the train
state `{'step', 'model', 'opt'}`; only `model` is read. Orbax is used directly (models know no trainer).

  load_tokenizer(run_dir)     -> Tokenizer with the checkpoint's parameters and EMA codebooks
  load_encode_fn(run_dir)     -> `wave16k float32 [n] -> int32 [frames, n_codebooks]`   (bajax prepare)
  load_frozen_decoder(run_dir)-> `(codes [B, L, 8], code_lengths [B]) -> (hidden [B, 4L-1, d], lengths)`
                                 jit-traceable, parameters closed over as constants     (flow conditioning)
"""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bajax.tokenizer.config import default_model_config
from bajax.tokenizer.model import Tokenizer

BUCKET = 1280 * 16  # encode pads waves to multiples of 1.28 s, so a corpus compiles only a few shapes


def _model_config(run_dir: str):
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{run_dir}: no config.json; pass the run directory of a `bajax train` "
                                "tokenizer run")
    with open(path) as f:
        cfg = json.load(f)
    if cfg.get("kind") != "tokenizer":
        raise ValueError(f"{run_dir} is a {cfg.get('kind')!r} run, not a tokenizer run")
    m = default_model_config()

    def fill(node, values, where):
        for key, value in values.items():
            if key not in node:
                raise ValueError(f"{run_dir}/config.json: unknown tokenizer key model.{where}{key}")
            if hasattr(node[key], "keys"):
                fill(node[key], value, f"{where}{key}.")
            else:
                node[key] = tuple(value) if isinstance(value, list) else value

    fill(m, cfg.get("model", {}), "")
    return m


def load_tokenizer(run_dir: str, step: int | None = None) -> Tokenizer:
    """The tokenizer of a run directory at `step` (default: the latest checkpoint), on one device."""
    import orbax.checkpoint as ocp

    m = _model_config(run_dir)
    abstract = nnx.eval_shape(lambda: Tokenizer(m, rngs=nnx.Rngs(0), align=False))  # no frozen LM
    graphdef, state = nnx.split(abstract)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = {"model": jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), state)}
    ckpt_dir = os.path.abspath(os.path.join(run_dir, "checkpoints"))
    mngr = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(create=False))
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"{ckpt_dir} holds no checkpoint")
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=target, restore_args=jax.tree.map(lambda s: ocp.ArrayRestoreArgs(sharding=device), target),
        partial_restore=True)))
    mngr.close()
    return nnx.merge(graphdef, restored["state"]["model"])


@functools.cache
def load_encode_fn(run_dir: str):
    """`wave16k [n] -> codes [n_codes, n_codebooks]` (int32) for data preparation."""
    tok = load_tokenizer(run_dir)
    graphdef, state = nnx.split(tok)
    norms = jax.jit(lambda s: nnx.merge(graphdef, s).bridge.rvq.codebook_norms())(state)

    @jax.jit
    def encode(state, wave, length):
        return nnx.merge(graphdef, state).encode(wave[None], length[None], norms=norms)

    def encode_fn(wave: np.ndarray) -> np.ndarray:
        wave = np.asarray(wave, np.float32)
        if wave.ndim != 1 or not np.isfinite(wave).all():
            raise ValueError(f"encode: expected a finite mono 16 kHz waveform [n], got shape {wave.shape}")
        padded = np.zeros(max(BUCKET, -(-len(wave) // BUCKET) * BUCKET), np.float32)
        padded[: len(wave)] = wave
        codes, n = encode(state, jnp.asarray(padded), jnp.asarray(len(wave), jnp.int32))
        return np.asarray(codes[0, : int(n[0])])

    # Prepared shards record which quantiser made their codes and its codebook sizes; the LM pipeline checks
    # them against the model config, and a changed tokenizer invalidates finished shards.
    encode_fn.codebook_sizes = tuple(int(c) for c in _model_config(run_dir).rvq.codebook_sizes)
    encode_fn.name = f"bajax-tokenizer:{os.path.abspath(run_dir)}@{int(tok_step(run_dir))}"
    return encode_fn


def tok_step(run_dir: str) -> int:
    """The newest checkpoint step of a tokenizer run (what `load_tokenizer` restores by default)."""
    import orbax.checkpoint as ocp

    mngr = ocp.CheckpointManager(os.path.abspath(os.path.join(run_dir, "checkpoints")),
                                 options=ocp.CheckpointManagerOptions(create=False))
    step = mngr.latest_step()
    mngr.close()
    return -1 if step is None else step


@functools.cache
def load_frozen_decoder(run_dir: str):
    """Codes -> `hidden_states_before_dconv2`, the flow decoder's conditioning; never trained by the caller."""
    tok = load_tokenizer(run_dir)

    def decode(codes, code_lengths):
        x = tok.bridge.decode(jnp.asarray(codes))
        hidden, lengths = tok.decoder.hidden(x, jnp.asarray(code_lengths))
        return jax.lax.stop_gradient(hidden), lengths

    return decode

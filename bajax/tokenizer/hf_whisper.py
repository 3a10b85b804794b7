"""Hugging Face Whisper (or Baichuan `audio_model`) encoder weights -> bajax `AudioEncoder` parameters.

Real tokenizer runs start from Whisper-large-v3 as the paper does: `load_whisper_encoder(encoder, dir)`
reads the encoder tensors of a checkpoint directory (`*.safetensors`, sharded or not) and copies them in.
Key layouts understood (prefix found automatically):
  transformers WhisperModel                 encoder.*            (positions: embed_positions.weight)
  transformers WhisperForConditionalGen.    model.encoder.*
  Baichuan audio tokenizer                  audio_tokenizer.audio_model.*   (positions: positional_embedding)
Tensor layouts: torch Linear [out, in] -> kernel [in, (heads, head_dim)]; Conv1d [out, in, k] -> [k, in, out].
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from flax import nnx

PREFIXES = ("audio_tokenizer.audio_model.", "model.encoder.", "encoder.", "")


def _find_prefix(keys) -> str:
    for prefix in PREFIXES:
        if f"{prefix}conv1.weight" in keys:
            return prefix
    raise KeyError("no Whisper encoder found: expected a key like 'encoder.conv1.weight' or "
                   f"'model.encoder.conv1.weight'; the checkpoint has e.g. {sorted(keys)[:5]}")


def encoder_params(tensors: Mapping[str, np.ndarray], heads: int) -> dict:
    """Nested dict shaped like `nnx.to_pure_dict(nnx.state(AudioEncoder))` from torch-layout tensors."""
    prefix = _find_prefix(tensors.keys())
    used: set[str] = set()

    def get(name: str) -> np.ndarray:
        key = prefix + name
        if key not in tensors:
            raise KeyError(f"Whisper encoder tensor {key!r} missing from the checkpoint")
        used.add(key)
        return np.asarray(tensors[key], np.float32)

    n_layers = 1 + max(int(k[len(prefix):].split(".")[1]) for k in tensors
                       if k.startswith(prefix + "layers."))
    d = get("conv1.weight").shape[0]
    hd = d // heads

    def stacked(name: str, fn=lambda w: w) -> np.ndarray:
        return np.stack([fn(get(f"layers.{i}.{name}")) for i in range(n_layers)])

    in_heads = lambda w: w.T.reshape(d, heads, hd)           # noqa: E731  [out, in] -> [in, H, hd]
    norm = lambda name: {"scale": stacked(f"{name}.weight"), "bias": stacked(f"{name}.bias")}  # noqa: E731
    for i in range(n_layers):
        bias_key = f"{prefix}layers.{i}.self_attn.k_proj.bias"
        if bias_key in tensors:
            if np.any(np.asarray(tensors[bias_key])):
                raise ValueError(f"{bias_key} is non-zero; this encoder has no k bias (Whisper's has none)")
            used.add(bias_key)
    pos_key = ("embed_positions.weight" if prefix + "embed_positions.weight" in tensors
               else "positional_embedding")
    layers = {
        "self_attn_layer_norm": norm("self_attn_layer_norm"),
        "final_layer_norm": norm("final_layer_norm"),
        "self_attn": {
            "q_proj": {"kernel": stacked("self_attn.q_proj.weight", in_heads),
                       "bias": stacked("self_attn.q_proj.bias", lambda b: b.reshape(heads, hd))},
            "k_proj": {"kernel": stacked("self_attn.k_proj.weight", in_heads)},
            "v_proj": {"kernel": stacked("self_attn.v_proj.weight", in_heads),
                       "bias": stacked("self_attn.v_proj.bias", lambda b: b.reshape(heads, hd))},
            "o_proj": {"kernel": stacked("self_attn.out_proj.weight", lambda w: w.T.reshape(heads, hd, d)),
                       "bias": stacked("self_attn.out_proj.bias")},
        },
        "mlp": {"fc1": {"kernel": stacked("fc1.weight", np.transpose), "bias": stacked("fc1.bias")},
                "fc2": {"kernel": stacked("fc2.weight", np.transpose), "bias": stacked("fc2.bias")}},
    }
    params = {
        "conv1": {"kernel": get("conv1.weight").transpose(2, 1, 0), "bias": get("conv1.bias")},
        "conv2": {"kernel": get("conv2.weight").transpose(2, 1, 0), "bias": get("conv2.bias")},
        "positional_embedding": get(pos_key),
        "transformer": {"layers": {"layers": layers},
                        "layer_norm": {"scale": get("layer_norm.weight"), "bias": get("layer_norm.bias")}},
    }
    unused = sorted(k for k in tensors if k.startswith(prefix) and k not in used
                    and (prefix or not k.startswith(("decoder.", "proj_out"))))
    if unused:
        raise ValueError(f"Whisper encoder tensors not understood: {unused[:5]} ({len(unused)} in all)")
    return params


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """The encoder tensors of a checkpoint directory or file (other tensors are never loaded)."""
    from safetensors import safe_open

    path = Path(path)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"{path}: no *.safetensors files (download a Whisper checkpoint directory, "
                                "e.g. openai/whisper-large-v3, and pass its path)")
    keys = {}
    for f in files:
        with safe_open(str(f), framework="np") as handle:
            names = handle.keys()
            keys.update({k: f for k in names})
    prefix = _find_prefix(keys.keys())
    out = {}
    for f in files:
        with safe_open(str(f), framework="np") as handle:
            names = handle.keys()
            for k in names:
                if k.startswith(prefix) and (prefix or not k.startswith(("decoder.", "proj_out"))):
                    out[k] = handle.get_tensor(k)
    return out


def load_whisper_encoder(encoder, source: str | Path | Mapping[str, np.ndarray]) -> None:
    """Copies Whisper encoder weights (a checkpoint path or a name -> array mapping) into `encoder`."""
    tensors = read_safetensors(source) if isinstance(source, (str, Path)) else source
    heads = encoder.transformer.layers.layers.self_attn.q_proj.kernel.shape[-2]
    params = encoder_params(tensors, heads)
    state = nnx.state(encoder)
    want = nnx.to_pure_dict(state)

    def check(path, a, b):
        if np.shape(a) != np.shape(b):
            name = "/".join(str(p.key) for p in path)
            raise ValueError(f"Whisper checkpoint tensor for {name} has shape {np.shape(b)}, the encoder "
                             f"expects {np.shape(a)}: the config (d_model, layers, heads, ffn, n_mels, "
                             "max_source_positions) must match the checkpoint")

    import jax

    jax.tree_util.tree_map_with_path(check, want, params)
    nnx.replace_by_pure_dict(state, params)
    nnx.update(encoder, state)

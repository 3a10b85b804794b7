"""Reference tensor mapping between Hugging Face `Qwen2ForCausalLM` weights and the AudioLLM backbone.

A whole-model, in-memory mapping the tests check the streaming per-tensor importer (bajax/interop,
`layout_lm.qwen2`) against. Works on plain dicts of numpy arrays keyed by HF names
(`model.layers.3.self_attn.q_proj.weight`, ...), fed from safetensors or a torch state dict. HF Linear
weights are [out, in]; bajax kernels are [in, out] with heads and head_dim kept as separate dimensions and
the decoder layers stacked on a leading axis. Only the backbone is mapped (text embedding, layers, final
norm, lm_head); audio embeddings and the audio head have no Qwen2 counterpart.
"""

from __future__ import annotations

import numpy as np
from flax import nnx

_NORMS = ("input_layernorm", "post_attention_layernorm")
_MLP = ("gate_proj", "up_proj", "down_proj")


def _layer_to_bajax(hf: dict, i: int, cfg) -> dict:
    p = f"model.layers.{i}."
    h, nh, nkv, d = cfg.hidden, cfg.heads, cfg.kv_heads, cfg.head_dim
    attn = {}
    for name, heads in (("q_proj", nh), ("k_proj", nkv), ("v_proj", nkv)):
        w = hf[p + f"self_attn.{name}.weight"]  # [heads*d, h]
        b = hf[p + f"self_attn.{name}.bias"]
        attn[name] = {"kernel": w.T.reshape(h, heads, d), "bias": b.reshape(heads, d)}
    attn["o_proj"] = {"kernel": hf[p + "self_attn.o_proj.weight"].T.reshape(nh, d, h)}
    out = {"self_attn": attn, "mlp": {m: {"kernel": hf[p + f"mlp.{m}.weight"].T} for m in _MLP}}
    out.update({n: {"weight": hf[p + f"{n}.weight"]} for n in _NORMS})
    return out


def qwen2_to_bajax(hf: dict[str, np.ndarray], cfg) -> dict:
    """Nested dict of the AudioLLM backbone (paths as in `nnx.state(model)`) from HF Qwen2 tensors."""
    missing = [k for k in ("model.embed_tokens.weight", "model.norm.weight") if k not in hf]
    if missing:
        raise KeyError(f"not a Qwen2 checkpoint: missing {missing}")
    layers = [_layer_to_bajax(hf, i, cfg) for i in range(cfg.layers)]
    stacked = _stack(layers)
    out = {"embed_tokens": {"embedding": hf["model.embed_tokens.weight"]},
           "layers": {"layers": stacked}, "norm": {"weight": hf["model.norm.weight"]}}
    if not cfg.tie_embeddings:
        head = hf.get("lm_head.weight", hf["model.embed_tokens.weight"])  # HF omits it when tied
        out["lm_head"] = {"kernel": head.T}
    return out


def bajax_to_qwen2(tree: dict, cfg) -> dict[str, np.ndarray]:
    """HF Qwen2 tensors from the nested dict of the backbone (inverse of `qwen2_to_bajax`)."""
    h = cfg.hidden
    stacked = tree["layers"]["layers"]
    hf = {"model.embed_tokens.weight": np.asarray(tree["embed_tokens"]["embedding"]),
          "model.norm.weight": np.asarray(tree["norm"]["weight"])}
    hf["lm_head.weight"] = (hf["model.embed_tokens.weight"] if cfg.tie_embeddings
                            else np.asarray(tree["lm_head"]["kernel"]).T)
    for i in range(cfg.layers):
        p = f"model.layers.{i}."
        attn = stacked["self_attn"]
        for name in ("q_proj", "k_proj", "v_proj"):
            hf[p + f"self_attn.{name}.weight"] = np.asarray(attn[name]["kernel"][i]).reshape(h, -1).T
            hf[p + f"self_attn.{name}.bias"] = np.asarray(attn[name]["bias"][i]).reshape(-1)
        hf[p + "self_attn.o_proj.weight"] = np.asarray(attn["o_proj"]["kernel"][i]).reshape(-1, h).T
        for m in _MLP:
            hf[p + f"mlp.{m}.weight"] = np.asarray(stacked["mlp"][m]["kernel"][i]).T
        for n in _NORMS:
            hf[p + f"{n}.weight"] = np.asarray(stacked[n]["weight"][i])
    return hf


def _stack(trees: list[dict]) -> dict:
    if isinstance(trees[0], dict):
        return {k: _stack([t[k] for t in trees]) for k in trees[0]}
    return np.stack(trees)


def load_into(model: nnx.Module, tree: dict) -> None:
    """Writes the arrays of a (partial) nested dict into the model's params, checking every shape."""
    state = nnx.state(model, nnx.Param)

    def walk(node, sub, path):
        for key, value in sub.items():
            name = ".".join(map(str, path + (key,)))
            if key not in node:
                raise KeyError(f"parameter path {name} does not exist in the model")
            if isinstance(value, dict):
                walk(node[key], value, path + (key,))
                continue
            var = node[key]
            if tuple(np.shape(value)) != tuple(var.get_value().shape):
                raise ValueError(f"parameter {name}: checkpoint shape "
                                 f"{np.shape(value)} != model shape {var.get_value().shape}")
            var.set_value(np.asarray(value, dtype=var.get_value().dtype))

    walk(state, tree, ())
    nnx.update(model, state)

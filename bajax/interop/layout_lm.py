"""The audio LLM's tensors in two PyTorch layouts (leaf paths as in `bajax/lm/model.py`):

  baichuan   model.embed_tokens / model.layers.{i}.self_attn.W_pack (q|k|v rows) + o_proj / mlp / norms,
             model.norm, model.audio_embed_layers.{k}, lm_head, audio_head.* (modeling_omni.py)
  qwen2      Hugging Face Qwen2ForCausalLM: q_proj / k_proj / v_proj separately, no audio parts

The audio head uses nn.MultiheadAttention (in_proj_weight = q|k|v rows, in_proj_bias, out_proj) and keeps
its per-position FFNs in two Linears, linear1 [2h, 8h] and linear2 [h, 16h], whose biases it never adds:
they are written as zeros and ignored on import. bajax can only export them if its own FFN biases are off.
"""

from __future__ import annotations

import numpy as np

from bajax.interop.entries import Cat, Const, DepthFFN, E, Flat, Linear, P, Same

ATTN = "layers/layers/self_attn/"
HEAD = "audio_head/transformer_layers/layers/"


def _count(shapes, path: str) -> int:
    return int(shapes[P(path)][0])


def _numbered(shapes, prefix: str) -> int:
    """How many list entries `prefix/{i}/...` the checkpoint has."""
    n = 0
    while any(p[: len(P(prefix)) + 1] == P(prefix) + (str(n),) for p in shapes):
        n += 1
    return n


def _backbone(shapes, *, packed: bool) -> list:
    lin, out = Linear(), []
    out.append(E("model.embed_tokens.weight", Same(), "embed_tokens/embedding"))
    for i in range(_count(shapes, "layers/layers/input_layernorm/weight")):
        p = f"model.layers.{i}."
        qkv = [ATTN + f"{n}_proj/kernel" for n in "qkv"]
        bias = [ATTN + f"{n}_proj/bias" for n in "qkv"]
        if packed:
            out += [E(p + "self_attn.W_pack.weight", Cat([lin] * 3), *qkv, index=(i,)),
                    E(p + "self_attn.W_pack.bias", Cat([Flat()] * 3), *bias, index=(i,))]
        else:
            for n, w, b in zip("qkv", qkv, bias, strict=True):
                out += [E(p + f"self_attn.{n}_proj.weight", lin, w, index=(i,)),
                        E(p + f"self_attn.{n}_proj.bias", Flat(), b, index=(i,))]
        out.append(E(p + "self_attn.o_proj.weight", Linear(2), ATTN + "o_proj/kernel", index=(i,)))
        for m in ("gate_proj", "up_proj", "down_proj"):
            out.append(E(p + f"mlp.{m}.weight", lin, f"layers/layers/mlp/{m}/kernel", index=(i,)))
        for n in ("input_layernorm", "post_attention_layernorm"):
            out.append(E(p + f"{n}.weight", Same(), f"layers/layers/{n}/weight", index=(i,)))
    out.append(E("model.norm.weight", Same(), "norm/weight"))
    return out


def _lm_head(shapes) -> list:
    if P("lm_head/kernel") in shapes:
        return [E("lm_head.weight", Linear(), "lm_head/kernel")]
    # Tied embeddings: the reference has an untied head, so write the table again (export only).
    return [E("lm_head.weight", Same(), "embed_tokens/embedding", load=False)]


def _audio_head(shapes) -> list:
    lin, out = Linear(), []
    if P(HEAD + "ffn/bias1") in shapes:
        raise ValueError("model.audio_head_ffn_bias=True: the per-position FFN biases [8, 2h] have no place "
                         "in the reference layout (its linear1/linear2 biases are [2h]/[h] and never used); "
                         "export needs a run trained with audio_head_ffn_bias=False")
    layers = _count(shapes, HEAD + "layernorm1/weight")
    depth, h, h2 = shapes[P(HEAD + "ffn/linear1")][1:]
    for i in range(layers):
        p = f"audio_head.transformer_layers.{i}."
        a = HEAD + "self_attention/"
        out += [
            E(p + "self_attention.in_proj_weight", Cat([lin] * 3), *[a + f"{n}_proj/kernel" for n in "qkv"],
              index=(i,)),
            E(p + "self_attention.in_proj_bias", Cat([Flat()] * 3), *[a + f"{n}_proj/bias" for n in "qkv"],
              index=(i,)),
            E(p + "self_attention.out_proj.weight", Linear(2), a + "o_proj/kernel", index=(i,)),
            E(p + "self_attention.out_proj.bias", Same(), a + "o_proj/bias", index=(i,)),
            E(p + "layernorm1.weight", Same(), HEAD + "layernorm1/weight", index=(i,)),
            E(p + "layernorm2.weight", Same(), HEAD + "layernorm2/weight", index=(i,)),
            E(p + "linear1.weight", DepthFFN(), HEAD + "ffn/linear1", index=(i,)),
            E(p + "linear1.bias", Const(np.zeros((h2,), np.float32))),
            E(p + "linear2.weight", DepthFFN(), HEAD + "ffn/linear2", index=(i,)),
            E(p + "linear2.bias", Const(np.zeros((h,), np.float32))),
        ]
    out.append(E("audio_head.headnorm.weight", Same(), "audio_head/headnorm/weight"))
    for k in range(_numbered(shapes, "audio_head/heads")):
        out += [E(f"audio_head.heads.{k}.weight", lin, f"audio_head/heads/{k}/kernel"),
                E(f"audio_head.heads.{k}.bias", Same(), f"audio_head/heads/{k}/bias")]
    return out


def baichuan_lm(shapes) -> list:
    """Every tensor of the reference LLM + audio head, from a checkpoint's leaf shapes."""
    audio = [E(f"model.audio_embed_layers.{k}.weight", Same(), f"audio_embed/{k}/embedding")
             for k in range(_numbered(shapes, "audio_embed"))]
    return _backbone(shapes, packed=True) + audio + _lm_head(shapes) + _audio_head(shapes)


def qwen2(shapes, *, tied: bool) -> list:
    """Hugging Face Qwen2ForCausalLM names (the text backbone only). A tied HF model stores no lm_head."""
    out = _backbone(shapes, packed=False)
    if not tied:
        out += [E("lm_head.weight", Linear(), "lm_head/kernel")]
    return out

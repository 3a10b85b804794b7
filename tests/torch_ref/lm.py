"""OmniForCausalLM's LLM parts: model (W_pack attention, SwiGLU, audio_embed_layers), lm_head, audio_head
(CasualDepthTransformerLayer with nn.MultiheadAttention and the per-position FFN einsums)."""

import torch
from torch import nn
from torch.nn import functional as F

from tests.torch_ref.common import RMSNorm, causal


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.h, self.kv, self.d = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        self.theta = c["rope_theta"]
        self.W_pack = nn.Linear(c["hidden_size"], (self.h + 2 * self.kv) * self.d, bias=True)
        self.o_proj = nn.Linear(self.h * self.d, c["hidden_size"], bias=False)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.W_pack(x).split([self.h * self.d, self.kv * self.d, self.kv * self.d], dim=-1)
        q, k, v = (y.view(b, t, -1, self.d).transpose(1, 2) for y in (q, k, v))
        inv = 1.0 / (self.theta ** (torch.arange(0, self.d, 2, dtype=torch.float32) / self.d))
        ang = torch.arange(t, dtype=torch.float32)[:, None] * inv[None]
        cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = (y.repeat_interleave(self.h // self.kv, dim=1) for y in (k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=causal(t))
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, h, i):
        super().__init__()
        self.gate_proj = nn.Linear(h, i, bias=False)
        self.down_proj = nn.Linear(i, h, bias=False)
        self.up_proj = nn.Linear(h, i, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        h, eps = c["hidden_size"], c["rms_norm_eps"]
        self.self_attn = Attention(c)
        self.mlp = MLP(h, c["intermediate_size"])
        self.input_layernorm = RMSNorm(h, eps)
        self.post_attention_layernorm = RMSNorm(h, eps)

    def forward(self, x):
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class OmniModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        h = c["hidden_size"]
        self.embed_tokens = nn.Embedding(c["vocab_size"], h)
        self.layers = nn.ModuleList([DecoderLayer(c) for _ in range(c["num_hidden_layers"])])
        self.norm = RMSNorm(h, c["rms_norm_eps"])
        self.audio_embed_layers = nn.ModuleList(
            [nn.Embedding(n + 1, h) for n in c["audio_config"]["vq_config"]["codebook_sizes"]])

    def forward(self, tokens, codes, audio_pad_id):
        x = self.embed_tokens(tokens)
        audio = sum(e(codes[..., i]) for i, e in enumerate(self.audio_embed_layers))
        x = torch.where((tokens == audio_pad_id)[..., None], audio, x)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


# modeling_omni.py builds CasualDepthTransformerLayer's layernorm1/2 and OmniAudioHead's headnorm as
# `RMSNorm(hidden_size)`: audio_modeling_omni.RMSNorm's default eps=1e-6, never config.rms_norm_eps.
HEAD_EPS = 1e-6


class DepthLayer(nn.Module):
    """CasualDepthTransformerLayer."""

    def __init__(self, h, depth, eps):
        super().__init__()
        assert h % 128 == 0          # the reference: embed_size % 128 == 0, num_heads = embed_size // 128
        heads = h // 128
        self.h = h
        self.self_attention = nn.MultiheadAttention(embed_dim=h, num_heads=heads, batch_first=True)
        self.layernorm1 = RMSNorm(h, eps)
        self.layernorm2 = RMSNorm(h, eps)
        self.linear1 = nn.Linear(h * depth, 2 * h)
        self.linear2 = nn.Linear(2 * h * depth, h)

    def forward(self, x):
        t = x.size(1)
        y = self.layernorm1(x)
        mask = torch.triu(torch.ones(t, t), diagonal=1).bool()
        a, _ = self.self_attention(y, y, y, attn_mask=mask)
        res = self.layernorm2(a + x)
        y = torch.einsum("bld,tld->blt", res, self.linear1.weight.reshape(2 * self.h, -1, self.h))
        y = torch.einsum("blt,dlt->bld", F.gelu(y), self.linear2.weight.reshape(self.h, -1, 2 * self.h))
        return res + y


class AudioHead(nn.Module):
    def __init__(self, c):
        super().__init__()
        a, h = c["audio_config"], c["hidden_size"]
        sizes = a["vq_config"]["codebook_sizes"]
        self.transformer_layers = nn.ModuleList([
            DepthLayer(h, len(sizes), HEAD_EPS)
            for _ in range(a["audio_head_transformer_layers"])])
        self.headnorm = RMSNorm(h, HEAD_EPS)
        self.heads = nn.ModuleList([nn.Linear(h, n + 1) for n in sizes])

    def forward(self, x, codes, tables):
        emb = torch.cumsum(torch.stack([tables[i](codes[..., i]) for i in range(len(self.heads) - 1)], 1), 1)
        x = torch.cat([x.reshape(-1, 1, x.shape[-1]), emb], dim=1)
        for layer in self.transformer_layers:
            x = layer(x)
        x = self.headnorm(x)
        return [head(x[:, i]) for i, head in enumerate(self.heads)]


class OmniLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.model = OmniModel(c)
        self.audio_head = AudioHead(c)
        self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)

"""Pieces shared by the reference-structured modules: RMSNorm and the Whisper-style layer."""

import torch
from torch import nn
from torch.nn import functional as F


class RMSNorm(nn.Module):
    def __init__(self, hidden, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden))
        self.eps = eps

    def forward(self, x):
        var = x.float().pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + self.eps))


def attend(q, k, v, heads, mask=None):
    """q [B, T, H*d], k/v [B, S, H*d]; mask bool [T, S] or [B, T, S] (True = attend)."""
    b, t, _ = q.shape
    q, k, v = (x.view(b, -1, heads, x.shape[-1] // heads).transpose(1, 2) for x in (q, k, v))
    if mask is not None and mask.dim() == 3:
        mask = mask[:, None]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(b, t, -1)


class WhisperAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=True)
        self.q_proj = nn.Linear(d, d, bias=True)
        self.out_proj = nn.Linear(d, d, bias=True)

    def forward(self, x, mask):
        return self.out_proj(attend(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.heads, mask))


class WhisperLayer(nn.Module):
    """OmniWhisperTransformerLayer: pre-norm attention + GELU FFN; LayerNorm or RMSNorm."""

    def __init__(self, d, heads, ffn, rms=False, eps=None):
        super().__init__()
        norm = (lambda: RMSNorm(d, eps or 1e-6)) if rms else (lambda: nn.LayerNorm(d))
        self.self_attn = WhisperAttention(d, heads)
        self.self_attn_layer_norm = norm()
        self.fc1 = nn.Linear(d, ffn)
        self.fc2 = nn.Linear(ffn, d)
        self.final_layer_norm = norm()

    def forward(self, x, mask):
        x = x + self.self_attn(self.self_attn_layer_norm(x), mask)
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


def causal(t):
    return torch.ones(t, t, dtype=torch.bool).tril()


def sinusoids(length, channels, max_timescale=10000):
    inc = torch.log(torch.tensor(float(max_timescale))) / (channels // 2 - 1)
    inv = torch.exp(-inc * torch.arange(channels // 2))
    t = torch.arange(length)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)

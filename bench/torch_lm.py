"""The audio LLM and its train step in plain PyTorch eager (fp32, CPU): the baseline of bench/lm_train.py.

Same architecture as bajax.lm.model (Qwen2 decoder: RMSNorm, GQA attention with q/k/v bias and RoPE
rotate-half, SwiGLU, untied lm_head; depth-transformer audio head with per-position FFNs and exact GELU,
8 classifier heads), same loss (weighted text CE + weighted mean 8-codebook CE, plus accuracies) and same
update (global-norm clip 1.0, AdamW with decay on matrices only). It is written the way a PyTorch user
would: `F.scaled_dot_product_attention` with a boolean packed-causal mask (GQA via `enable_gqa`),
`F.cross_entropy`, depth-major [8, N, H] audio-head activations with `torch.bmm` for the per-position FFNs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bajax.lm import special_tokens
from bajax.lm.config import audio_head_heads

DEPTH = 8


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(dim)), eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin


class DecoderLayer(nn.Module):
    def __init__(self, m):
        super().__init__()
        h, d = m.hidden, m.head_dim
        self.heads, self.kv, self.d = m.heads, m.kv_heads, d
        self.ln1, self.ln2 = RMSNorm(h, m.norm_eps), RMSNorm(h, m.norm_eps)
        self.q, self.k, self.v = nn.Linear(h, m.heads * d), nn.Linear(h, m.kv_heads * d), nn.Linear(h, m.kv_heads * d)
        self.o = nn.Linear(m.heads * d, h, bias=False)
        self.gate, self.up = nn.Linear(h, m.mlp, bias=False), nn.Linear(h, m.mlp, bias=False)
        self.down = nn.Linear(m.mlp, h, bias=False)

    def forward(self, x, mask, cos, sin):
        b, t, _ = x.shape
        y = self.ln1(x)
        q = self.q(y).view(b, t, self.heads, self.d).transpose(1, 2)
        k = self.k(y).view(b, t, self.kv, self.d).transpose(1, 2)
        v = self.v(y).view(b, t, self.kv, self.d).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        x = x + self.o(a.transpose(1, 2).reshape(b, t, -1))
        y = self.ln2(x)
        return x + self.down(F.silu(self.gate(y)) * self.up(y))


class AudioHeadLayer(nn.Module):
    def __init__(self, h, heads, eps):
        super().__init__()
        self.ln1, self.ln2 = RMSNorm(h, eps), RMSNorm(h, eps)
        self.attn = nn.MultiheadAttention(h, heads, bias=True)  # [L, N, E] layout, as the reference
        self.w1 = nn.Parameter(torch.randn(DEPTH, h, 2 * h) / math.sqrt(h))
        self.w2 = nn.Parameter(torch.randn(DEPTH, 2 * h, h) / math.sqrt(2 * h))

    def forward(self, x, causal):  # x [8, N, H]
        y = self.ln1(x)
        r = self.ln2(x + self.attn(y, y, y, attn_mask=causal, need_weights=False)[0])
        return r + torch.bmm(F.gelu(torch.bmm(r, self.w1)), self.w2)


class AudioHead(nn.Module):
    def __init__(self, h, heads, layers, sizes, eps):
        super().__init__()
        self.layers = nn.ModuleList([AudioHeadLayer(h, heads, eps) for _ in range(layers)])
        self.norm = RMSNorm(h, eps)
        self.heads = nn.ModuleList([nn.Linear(h, c + 1) for c in sizes])
        self.register_buffer("causal", ~torch.tril(torch.ones(DEPTH, DEPTH, dtype=torch.bool)))

    def forward(self, h, codes, tables):  # h [N, H], codes [N, 8] -> 8 logits [N, cb_k + 1]
        x, total = [h], None
        for j in range(DEPTH - 1):
            e = tables[j](codes[:, j])
            total = e if total is None else total + e
            x.append(total)
        x = torch.stack(x)
        for layer in self.layers:
            x = layer(x, self.causal)
        x = self.norm(x)
        return [self.heads[k](x[k]) for k in range(DEPTH)]


class TorchAudioLLM(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m
        self.audio_pad = special_tokens.ids_for(m.vocab, m.vocab_size)["audio_pad"]
        self.embed = nn.Embedding(m.vocab_size, m.hidden)
        self.audio_embed = nn.ModuleList([nn.Embedding(c + 1, m.hidden) for c in m.codebook_sizes])
        self.layers = nn.ModuleList([DecoderLayer(m) for _ in range(m.layers)])
        self.norm = RMSNorm(m.hidden, m.norm_eps)
        self.lm_head = nn.Linear(m.hidden, m.vocab_size, bias=False)
        self.audio_head = AudioHead(m.hidden, audio_head_heads(m), m.audio_head_layers, m.codebook_sizes,
                                    m.norm_eps)
        for mod in self.modules():
            if isinstance(mod, nn.Embedding):
                nn.init.normal_(mod.weight, std=0.02)

    def forward(self, batch):
        tokens, pos, seg = batch["tokens"], batch["positions"], batch["segment_ids"]
        audio = sum(self.audio_embed[k](batch["audio_codes"][..., k]) for k in range(DEPTH))
        x = torch.where((tokens == self.audio_pad)[..., None], audio, self.embed(tokens))
        t = tokens.shape[1]
        idx = torch.arange(t)
        mask = (seg[:, :, None] == seg[:, None, :]) & (idx[None, :] <= idx[:, None])
        mask = mask[:, None]  # [B, 1, T, T]
        inv = 1.0 / (self.m.rope_theta ** (torch.arange(0, self.m.head_dim, 2).float() / self.m.head_dim))
        ang = pos.float()[..., None] * inv
        cos, sin = torch.cat([ang.cos()] * 2, -1)[:, None], torch.cat([ang.sin()] * 2, -1)[:, None]
        for layer in self.layers:
            x = layer(x, mask, cos, sin)
        return self.norm(x)


def lm_loss(model, batch):
    h = model(batch)
    tw, aw = batch["text_weights"], batch["audio_weights"]
    logits = model.lm_head(h)
    ce = F.cross_entropy(logits.flatten(0, 1), batch["text_targets"].flatten(), reduction="none")
    text_loss = (ce * tw.flatten()).sum() / tw.sum().clamp_min(1e-8)
    b, t, d = h.shape
    targets = batch["audio_targets"].reshape(b * t, DEPTH)
    audio_logits = model.audio_head(h.reshape(b * t, d), targets, model.audio_embed)
    w = aw.reshape(b * t, DEPTH)
    audio_sum = sum((F.cross_entropy(audio_logits[k], targets[:, k], reduction="none") * w[:, k]).sum()
                    for k in range(DEPTH))
    audio_loss = audio_sum / w.sum().clamp_min(1e-8)
    with torch.no_grad():  # the accuracies JAX reports as metrics
        acc = [(lg.argmax(-1) == targets[:, k]).float().mul(w[:, k]).sum() for k, lg in enumerate(audio_logits)]
        acc.append((logits.argmax(-1) == batch["text_targets"]).float().mul(tw).sum())
    return text_loss + audio_loss, acc


def make_torch_step(model_cfg, np_batch: dict, lr: float = 3e-4, threads: int | None = None):
    """A closure running one full train step (forward, backward, clip, AdamW) on `np_batch`."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = TorchAudioLLM(model_cfg)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95), eps=1e-8, fused=True)
    batch = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in np_batch.items()}
    batch = {k: v.long() if v.dtype == torch.int32 else v for k, v in batch.items()}

    def step():
        opt.zero_grad(set_to_none=True)
        loss, _ = lm_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return float(loss.detach())

    return step


def main() -> None:
    """Serves this step to bench/lm_train.py from a process of its own: each "step" line on stdin runs one
    step and answers with a JSON line {"step_time_s", "loss"}; the first step (warm-up) runs at start-up.

    In the same process as the JAX step, both frameworks' steps ran 5-15% slower (their thread pools contend
    even when only one of them computes); in two processes, alternating step by step, both see the same
    host load and no contention (an idle process uses no CPU).
    """
    import argparse
    import json
    import sys
    import time

    from lm_common import synthetic_batch

    from bajax import config as bajax_config

    ap = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    ap.add_argument("--config", default="small")
    ap.add_argument("--shape", default="4x512", help="batch x seq_len")
    ap.add_argument("--set", action="append", default=[], help="config override")
    args = ap.parse_args()
    b, t = (int(s) for s in args.shape.split("x"))
    cfg = bajax_config.load(f"configs/lm/{args.config}.py", [f"train.batch_size={b}", f"data.seq_len={t}", *args.set])
    m = cfg.model
    step = make_torch_step(m, synthetic_batch(b, t, m.vocab, m.vocab_size, m.codebook_sizes),
                           lr=float(cfg.optim.lr))
    print(json.dumps({"ready": True, "loss": step(), "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            raise SystemExit(f"torch_lm.py: unknown request {line.strip()!r} (expected 'step')")
        start = time.perf_counter()
        loss = step()
        print(json.dumps({"step_time_s": time.perf_counter() - start, "loss": loss}), flush=True)


if __name__ == "__main__":
    main()

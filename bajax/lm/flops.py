"""Analytic training FLOPs per token of the audio LLM (for MFU).

Training costs 6 FLOPs per multiply-accumulate of a weight (forward 2, backward 4). Counted per token:
  backbone   6 * matmul params of the decoder layers (q, k, v, o, gate, up, down) + lm_head;
             embedding lookups are gathers and cost nothing.
  attention  QK^T and PV: 2 * 2 * seq_len * heads * head_dim FLOPs forward per layer, x3 for training,
             halved because a causal mask needs only the lower triangle.
  audio head per frame it runs on: per depth position its layers' projections and FFN_k, the 8x8 causal
             attention, and heads[k] at position k. The loss runs it only at positions with audio targets
             (bajax/lm/losses.py), so per token it costs `audio_fraction` (the share of positions carrying
             audio targets) times one frame's pass; 1.0 counts a head at every position.
"""

from __future__ import annotations

from bajax.lm.audio_head import DEPTH


def backbone_matmul_params(cfg) -> int:
    h, q, kv = cfg.hidden, cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * cfg.mlp
    return cfg.layers * per_layer + h * cfg.vocab_size


def audio_head_matmul_macs(cfg) -> int:
    """Multiply-accumulates of one frame's pass through the audio head (all 8 depth positions)."""
    h = cfg.hidden
    per_position_layer = 4 * h * h + 4 * h * h          # in/out projections + FFN h->2h->h
    attention = 2 * h * (DEPTH + 1) / 2                  # 8x8 causal scores + values, lower triangle
    heads = sum(c + 1 for c in cfg.codebook_sizes) * h
    return int(cfg.audio_head_layers * (DEPTH * per_position_layer + DEPTH * attention) + heads)


def train_flops_per_token(cfg, seq_len: int, audio_fraction: float = 1.0) -> dict[str, float]:
    """FLOPs per trained token: {'backbone', 'attention', 'audio_head', 'total'}; `audio_fraction` of the
    positions run the audio head."""
    backbone = 6.0 * backbone_matmul_params(cfg)
    attention = 6.0 * cfg.layers * seq_len * cfg.heads * cfg.head_dim  # 12 * T * H * D, causal half
    audio_head = 6.0 * audio_head_matmul_macs(cfg) * float(audio_fraction)
    return {"backbone": backbone, "attention": attention, "audio_head": audio_head,
            "total": backbone + attention + audio_head}

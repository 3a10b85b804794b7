"""Analytic FLOPs of the tokenizer (matmuls and convolutions, 2 per multiply-add), for MFU and benchmarks.

Attention is counted as computed (dense masked scores over the padded length). The mel front ends, norms
and elementwise ops are left out (well under 1% at full size). Training = 3x the forward of everything that
gets gradients; the RVQ distance search has none (stop-gradient, EMA), so it counts once.
"""

from __future__ import annotations


def _layers(t: int, d: int, ffn: int, n: int) -> float:
    """n pre-LN transformer layers over t frames: q/k/v/out projections, scores + values, the MLP."""
    return n * (2 * t * 4 * d * d + 2 * 2 * t * t * d + 2 * 2 * t * d * ffn)


def forward_flops(m, code_frames: int) -> dict[str, float]:
    """Forward FLOPs for ONE utterance of `code_frames` 80 ms frames, by part."""
    k, d, width = code_frames, m.d_model, m.d_model * m.pool
    t100, t50 = 2 * m.pool * k, m.pool * k
    enc = 2 * t100 * m.n_mels * 3 * d + 2 * t50 * d * 3 * d + _layers(t50, d, m.encoder_ffn, m.encoder_layers)
    bridge = 2 * 2 * k * width * width + 2 * k * width * width + 2 * k * width * d
    rvq = 2 * k * width * sum(m.rvq.codebook_sizes)
    t_dec = m.pool * k - 1
    t62 = k * m.pool * 2 * m.mel_hop // m.target_hop
    refine, cin = 0.0, m.n_target_mels
    for c in m.refine_channels:
        refine += 2 * t62 * cin * c * m.refine_kernel
        cin = c
    refine += 2 * t62 * cin * m.n_target_mels
    dec = (2 * k * d * d * m.decoder_kernel + _layers(t_dec, d, m.decoder_ffn, m.decoder_layers)
           + 2 * t_dec * d * m.n_target_mels * m.decoder_kernel + refine)
    return {"encoder": float(enc), "bridge": float(bridge), "rvq": float(rvq), "decoder": float(dec)}


def train_step_flops(m, code_frames: int, batch: int) -> float:
    """One optimizer step on `batch` utterances of `code_frames` frames: 3x forward, the RVQ search once."""
    f = forward_flops(m, code_frames)
    return batch * (3 * (f["encoder"] + f["bridge"] + f["decoder"]) + f["rvq"])


def align_flops(m, c, code_frames: int, text_len: int) -> float:
    """Text-alignment loss of ONE utterance in a train step: the trainable projection (3x forward) and the
    frozen LM (model config `c`) over code_frames + text_len positions, forward and backward to its INPUTS
    only (2x forward: no weight gradients); its lm_head runs on the text positions only."""
    from bajax.lm.flops import backbone_matmul_params

    t = code_frames + text_len
    head = c.hidden * c.vocab_size
    layers = 2 * t * (backbone_matmul_params(c) - head) + 2 * 2 * t * t * c.heads * c.head_dim / 2 * c.layers
    proj = 3 * 2 * code_frames * m.d_model * m.pool * c.hidden
    return float(proj + 2 * (layers + 2 * text_len * head))

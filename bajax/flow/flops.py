"""Analytic FLOPs of the flow decoder (2 x multiply-adds of matmuls and convolutions; elementwise ops and
softmax are left out, as in the usual MFU convention). Attention counts only the scores a query computes:
block-causal keys up to the end of its chunk (estimator), keys up to itself (Pre-Net), as the chunked
kernels in bajax/flow/attention.py do.
"""

from __future__ import annotations


def _block_causal_keys(frames: int, chunk: int) -> int:
    """Sum over queries of the keys they are contracted with (chunk-granular, as computed)."""
    return sum((min(frames, start + chunk) - start) * min(frames, start + chunk)
               for start in range(0, frames, chunk))


def prenet_flops(m, frames: int) -> float:
    """Forward FLOPs of the Pre-Net for one utterance of `frames` mel frames."""
    h = m.prenet_hidden
    per_frame = m.cond_dim * m.prenet_in_hidden + m.prenet_in_hidden * h + h * m.n_mels
    per_frame += m.prenet_layers * (4 * h * h + 2 * h * m.prenet_ffn)
    keys = _block_causal_keys(frames, m.chunk)      # chunk-by-chunk causal: computed like block-causal
    attn = m.prenet_layers * 2 * keys * h
    return 2.0 * (frames * per_frame + attn)


def estimator_flops(m, frames: int) -> float:
    """Forward FLOPs of one estimator evaluation for one utterance of `frames` mel frames."""
    c, k, hd = m.channels, m.conv_kernel, m.heads * m.head_dim

    def resnet(c_in):
        return k * c_in * c + k * c * c + c_in * c

    blocks = 2 + m.mid_blocks
    per_frame = resnet(2 * m.n_mels) + m.mid_blocks * resnet(c) + resnet(2 * c)
    per_frame += 2 * k * c * c + k * c * c + c * m.n_mels        # down/up convs, final block, projection
    per_frame += blocks * m.transformer_blocks * (4 * c * hd + 2 * c * m.ffn)
    attn = blocks * m.transformer_blocks * 2 * _block_causal_keys(frames, m.chunk) * hd
    return 2.0 * (frames * per_frame + attn)


def train_flops(m, frames: int) -> float:
    """Training FLOPs (forward + backward = 3 x forward) of one utterance."""
    return 3.0 * (prenet_flops(m, frames) + estimator_flops(m, frames))


def sample_flops(m, frames: int, steps: int, guided: bool = True) -> float:
    """FLOPs of synthesising one utterance: the Pre-Net once, the estimator per step (twice if guided)."""
    return prenet_flops(m, frames) + steps * (2 if guided else 1) * estimator_flops(m, frames)

"""The reference approach to the bridge + RVQ encode in PyTorch, for bench/tokenizer.py (written for bajax).

It does what the official Baichuan code does per call, which is what bajax avoids: every codebook's squared
norms are recomputed on each call, and the nearest code comes from the full [frames, K] distance matrix
built in several passes (x^2 column, -2 x.E^T, + E^2 row, then argmin), as EnCodec-style RVQ code does.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def bridge_rvq_encode(x: torch.Tensor, w: dict, codebooks: list[torch.Tensor]) -> torch.Tensor:
    """x [T, d] encoder output -> codes [T/4, n] (int64). `w`: gate [4d, d, 4], up, down [4d, 4d] (torch
    Linear layout [out, in]), ln_w, ln_b."""
    t, d = x.shape
    xc = x.T[None]                                                  # [1, d, T] for Conv1d
    g = F.conv1d(xc, w["gate"], stride=4)[0].T                      # [T/4, 4d]
    u = F.conv1d(xc, w["up"], stride=4)[0].T
    xr = x.reshape(t // 4, 4 * d)
    res = F.layer_norm(F.linear(F.silu(g) * u, w["down"]) + xr, (4 * d,), w["ln_w"], w["ln_b"], eps=1e-5)
    r, codes = res, []
    for embed in codebooks:
        dist = -(r.pow(2).sum(1, keepdim=True) - 2 * r @ embed.T + embed.pow(2).sum(1)[None, :])
        c = dist.max(dim=-1).indices
        r = r - embed[c]
        codes.append(c)
    return torch.stack(codes, -1)


def from_bajax(bridge) -> tuple[dict, list[torch.Tensor]]:
    """The same weights as a bajax `Bridge` (conv kernels [k, in, out] -> [out, in, k]; Linear [in, out])."""
    def t(a):
        return torch.from_numpy(np.asarray(a, np.float32).copy())

    w = {"gate": t(bridge.gate_proj.kernel[...]).permute(2, 1, 0).contiguous(),
         "up": t(bridge.up_proj.kernel[...]).permute(2, 1, 0).contiguous(),
         "down": t(bridge.down_proj.kernel[...]).T.contiguous(),
         "ln_w": t(bridge.layer_norm.scale[...]), "ln_b": t(bridge.layer_norm.bias[...])}
    return w, [t(layer.codebook.embed[...]) for layer in bridge.rvq.vq_list]

"""OmniAudioFlowMatchingDecoder under `audio_tokenizer.audio_flow_matching_decoder.`: the FlowmatchingPrenet
(with its registered-but-unused position buffer) and CosyVoice-2's causal ConditionalDecoder U-Net
(diffusers BasicTransformerBlock names), plus the guided Euler sampler on the cosine grid."""

import math

import torch
from torch import nn
from torch.nn import functional as F

from tests.torch_ref.common import RMSNorm, WhisperLayer, attend, causal, sinusoids

RMS_EPS = 1e-6            # audio_modeling_omni.RMSNorm's default; FlowmatchingPrenet never passes another
LAYER_NORM_EPS = 1e-5     # nn.LayerNorm's default: CausalBlock1D and BasicTransformerBlock pass none
STATIC_CHUNK = 2 * 25 * 2  # ConditionalDecoder.static_chunk_size, hard-coded


class Prenet(nn.Module):
    def __init__(self, f):
        super().__init__()
        d = f["prenet_d_model"]
        self.register_buffer("positional_embedding", sinusoids(5000, d))
        # The reference hard-codes the MLP width (4 x d_model) and the RMSNorms' eps (its default, 1e-6).
        self.in_mlp = nn.Sequential(nn.Linear(f["prenet_in_dim"], 4 * d), nn.SiLU(), nn.Linear(4 * d, d))
        self.transformer_layers = nn.ModuleList([
            WhisperLayer(d, f["prenet_attention_heads"], f["prenet_ffn_dim"], rms=True, eps=RMS_EPS)
            for _ in range(f["prenet_nlayers"])])
        self.final_norm = RMSNorm(d, RMS_EPS)
        self.out_proj = nn.Linear(d, f["prenet_out_dim"], bias=False)

    def forward(self, cond, length):              # [1, Tc, D] -> mu [1, length, 80]
        x = F.interpolate(cond.transpose(1, 2), size=length, mode="nearest").transpose(1, 2)
        x = self.in_mlp(x)
        for layer in self.transformer_layers:
            x = layer(x, causal(length))
        return self.out_proj(self.final_norm(x))


class CausalConv1d(nn.Conv1d):
    def forward(self, x):
        return super().forward(F.pad(x, (self.kernel_size[0] - 1, 0)))


class Transpose(nn.Module):
    def forward(self, x):
        return x.transpose(1, 2)


class CausalBlock1D(nn.Module):
    def __init__(self, cin, cout, eps):
        super().__init__()
        self.block = nn.Sequential(CausalConv1d(cin, cout, 3), Transpose(), nn.LayerNorm(cout, eps=eps), Transpose(),
                                   nn.Mish())

    def forward(self, x, mask):
        return self.block(x * mask) * mask


class ResnetBlock(nn.Module):
    def __init__(self, cin, cout, t_dim, eps):
        super().__init__()
        self.mlp = nn.Sequential(nn.Mish(), nn.Linear(t_dim, cout))
        self.block1 = CausalBlock1D(cin, cout, eps)
        self.block2 = CausalBlock1D(cout, cout, eps)
        self.res_conv = nn.Conv1d(cin, cout, 1)

    def forward(self, x, mask, t):
        h = self.block1(x, mask) + self.mlp(t)[..., None]
        return self.block2(h, mask) + self.res_conv(x * mask)


class GELU(nn.Module):
    def __init__(self, d, inner):
        super().__init__()
        self.proj = nn.Linear(d, inner)

    def forward(self, x):
        return F.gelu(self.proj(x))


class Attention(nn.Module):
    def __init__(self, d, heads, head_dim):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(d, heads * head_dim, bias=False)
        self.to_k = nn.Linear(d, heads * head_dim, bias=False)
        self.to_v = nn.Linear(d, heads * head_dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(heads * head_dim, d), nn.Dropout(0.0)])

    def forward(self, x, mask):
        return self.to_out[0](attend(self.to_q(x), self.to_k(x), self.to_v(x), self.heads, mask))


class TransformerBlock(nn.Module):
    def __init__(self, d, heads, head_dim, ffn, eps):   # ffn: matcha FeedForward's mult=4 -> 4 x d
        super().__init__()
        self.norm1 = nn.LayerNorm(d, eps=eps)
        self.attn1 = Attention(d, heads, head_dim)
        self.norm3 = nn.LayerNorm(d, eps=eps)
        self.ff = nn.Module()
        self.ff.net = nn.ModuleList([GELU(d, ffn), nn.Dropout(0.0), nn.Linear(ffn, d)])

    def forward(self, x, mask):
        x = x + self.attn1(self.norm1(x), mask)
        h = self.norm3(x)
        for m in self.ff.net:
            h = m(h)
        return x + h


class ConditionalDecoder(nn.Module):
    def __init__(self, f):
        super().__init__()
        c, cin, eps = f["channels"][0], 2 * f["in_channels"], LAYER_NORM_EPS
        self.in_ch, self.chunk = cin, STATIC_CHUNK
        t_dim = 4 * c                # time_embed_dim = channels[0] * 4
        self.time_mlp = nn.Module()
        self.time_mlp.linear_1, self.time_mlp.linear_2 = nn.Linear(cin, t_dim), nn.Linear(t_dim, t_dim)

        def stage(i, last_conv):
            blocks = nn.ModuleList([TransformerBlock(c, f["num_heads"], f["attention_head_dim"], 4 * c, eps)
                                    for _ in range(f["n_blocks"])])
            parts = [ResnetBlock(i, c, t_dim, eps), blocks] + ([CausalConv1d(c, c, 3)] if last_conv else [])
            return nn.ModuleList(parts)

        self.down_blocks = nn.ModuleList([stage(cin, True)])
        self.mid_blocks = nn.ModuleList([stage(c, False) for _ in range(f["num_mid_blocks"])])
        self.up_blocks = nn.ModuleList([stage(2 * c, True)])
        self.final_block = CausalBlock1D(c, c, eps)
        self.final_proj = nn.Conv1d(c, f["in_channels"], 1)

    def time(self, t):
        half = self.in_ch // 2
        freq = torch.exp(torch.arange(half).float() * -(math.log(10000) / (half - 1)))
        e = 1000 * t[:, None] * freq[None]
        e = torch.cat([e.sin(), e.cos()], -1)
        return self.time_mlp.linear_2(F.silu(self.time_mlp.linear_1(e)))

    def forward(self, x, mask, mu, t):            # x, mu [B, 80, T]; mask [B, 1, T]; t [B]
        t = self.time(t)
        x = torch.cat([x, mu], 1)
        n = x.shape[-1]
        pos = torch.arange(n)
        chunk = (pos[None, :] < ((pos // self.chunk + 1) * self.chunk)[:, None])       # [T, T]
        attn_mask = chunk[None] & mask.bool()                                           # [B, T(q), T(k)]

        def run(blocks, h):
            h = h.transpose(1, 2)
            for b in blocks:
                h = b(h, attn_mask)
            return h.transpose(1, 2)

        resnet, blocks, down = self.down_blocks[0]
        x = run(blocks, resnet(x, mask, t))
        skip = x
        x = down(x * mask)
        for resnet, blocks in self.mid_blocks:
            x = run(blocks, resnet(x, mask, t))
        resnet, blocks, up = self.up_blocks[0]
        x = up(run(blocks, resnet(torch.cat([x, skip], 1), mask, t)) * mask)
        x = self.final_block(x, mask)
        return self.final_proj(x * mask) * mask


def euler(estimator, z, mu, mask, steps, guidance):
    t_span = 1 - torch.cos(torch.linspace(0, 1, steps + 1) * 0.5 * torch.pi)
    x, t, dt = z, t_span[0], t_span[1] - t_span[0]
    for step in range(1, steps + 1):
        tb = t.expand(x.shape[0])
        v = estimator(x, mask, mu, tb)
        v = (1.0 + guidance) * v - guidance * estimator(x, mask, torch.zeros_like(mu), tb)
        x, t = x + dt * v, t + dt
        if step < steps:
            dt = t_span[step + 1] - t
    return x


class FlowDecoder(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.prenet = Prenet(f)
        self.conditional_decoder = ConditionalDecoder(f)


class FlowRef(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.audio_tokenizer = nn.Module()
        self.audio_tokenizer.audio_flow_matching_decoder = FlowDecoder(c["flow_matching_config"])

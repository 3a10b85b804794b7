"""OmniAudioTokenizer's parts under `audio_tokenizer.`: audio_model (Whisper encoder), audio_bridge_model
(gate/up Conv1d k4 s4, down_proj, LayerNorm, proj_decoder, vq_list[i].codebook {cluster_size, embed_avg,
embed}), audio_decoder (CasualConvTranspose1d dconv1/dconv2 + GroupNorm(1), causal Whisper layers,
MelSpecRefineNet post_net)."""

import torch
from torch import nn
from torch.nn import functional as F

from tests.torch_ref.common import WhisperLayer, causal, sinusoids


class Encoder(nn.Module):
    def __init__(self, a):
        super().__init__()
        d = a["d_model"]
        self.conv1 = nn.Conv1d(a["num_mel_bins"], d, 3, padding=1)
        self.conv2 = nn.Conv1d(d, d, 3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(a["max_source_positions"], d))
        self.layers = nn.ModuleList([WhisperLayer(d, a["encoder_attention_heads"], a["encoder_ffn_dim"])
                                     for _ in range(a["encoder_layers"])])
        self.layer_norm = nn.LayerNorm(d)

    def forward(self, mel):                       # [B, n_mels, T] -> [B, T/2, d]
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).permute(0, 2, 1)
        x = x + self.positional_embedding[: x.shape[1]]
        for layer in self.layers:
            x = layer(x, None)
        return self.layer_norm(x)


class Codebook(nn.Module):
    def __init__(self, size, dim):
        super().__init__()
        self.cluster_size = nn.Parameter(torch.ones(size))
        self.embed_avg = nn.Parameter(torch.zeros(size, dim))
        self.embed = nn.Parameter(torch.zeros(size, dim))


class VQ(nn.Module):
    def __init__(self, size, dim):
        super().__init__()
        self.codebook = Codebook(size, dim)


class Bridge(nn.Module):
    def __init__(self, a):
        super().__init__()
        d, p = a["d_model"], a["avg_pooler"]
        self.pool, i = p, d * p
        self.gate_proj = nn.Conv1d(d, i, p, p, bias=False)
        self.up_proj = nn.Conv1d(d, i, p, p, bias=False)
        self.down_proj = nn.Linear(i, i, bias=False)
        self.layer_norm = nn.LayerNorm(i)
        self.proj_decoder = nn.Linear(i, d)
        self.vq_list = nn.ModuleList([VQ(n, i) for n in a["vq_config"]["codebook_sizes"]])

    def encode(self, x):                          # [B, T, d] -> codes [B, T/4, n]
        b = x.shape[0]
        if x.shape[1] % self.pool:
            x = F.pad(x, (0, 0, 0, self.pool - x.shape[1] % self.pool))
        xt = x.permute(0, 2, 1)
        g, u = self.gate_proj(xt).permute(0, 2, 1), self.up_proj(xt).permute(0, 2, 1)
        r = self.layer_norm(self.down_proj(F.silu(g) * u) + x.reshape(b, -1, x.shape[-1] * self.pool))
        r = r.reshape(-1, r.shape[-1])
        codes = []
        for vq in self.vq_list:
            e = vq.codebook.embed
            dist = (r.pow(2).sum(-1, keepdim=True) + e.pow(2).sum(-1)[None] - 2 * r @ e.T).clamp(min=0).sqrt()
            c = (-dist).argmax(-1)
            r = r - e[c]
            codes.append(c)
        return torch.stack(codes, -1).reshape(b, -1, len(self.vq_list))

    def decode(self, codes):
        return self.proj_decoder(sum(vq.codebook.embed[codes[..., i]] for i, vq in enumerate(self.vq_list)))


class CausalConvTranspose(nn.Module):
    def __init__(self, cin, cout, k, s):
        super().__init__()
        self.conv = nn.ConvTranspose1d(cin, cout, k, s)
        self.norm = nn.GroupNorm(1, cout)

    def forward(self, x):                         # [B, L, C] -> [B, (L-1)s + k - max(0, k - s), C']
        k, s = self.conv.kernel_size[0], self.conv.stride[0]
        y = self.norm(self.conv(x.transpose(2, 1))).transpose(2, 1)
        return y[:, : y.shape[1] - max(0, k - s)]


class RefineNet(nn.Module):
    """MelSpecRefineNet: [Conv k5 -> GroupNorm(1) -> Mish] per entry of channels[:-1], then a 1x1 Conv."""

    def __init__(self, v):
        super().__init__()
        layers, cin = [], v["num_mel_bins"]
        for c in v["channels"][:-1]:
            layers += [nn.Conv1d(cin, c, 5, 1, 2), nn.GroupNorm(1, c), nn.Mish()]
            cin = c
        layers.append(nn.Conv1d(cin, v["num_mel_bins"], 1, 1))
        self.layers = nn.Sequential(*layers)


class Decoder(nn.Module):
    def __init__(self, a, v):
        super().__init__()
        d = a["d_model"]
        self.dconv1 = CausalConvTranspose(d, d, a["decoder_kernel_size"], a["avg_pooler"])
        self.register_buffer("positional_embedding", sinusoids(a["decoder_max_positions"], d))
        self.layers = nn.ModuleList([WhisperLayer(d, a["decoder_attention_heads"], a["decoder_ffn_dim"])
                                     for _ in range(a["decoder_layers"])])
        self.layer_norm = nn.LayerNorm(d)
        self.dconv2 = CausalConvTranspose(d, v["num_mel_bins"], a["decoder_kernel_size"], a["decoder_stride_size"])
        self.post_net = RefineNet(v)
        self.v = v

    def forward(self, x):                         # one utterance [1, L, d] -> (refined, coarse, hidden)
        h = self.dconv1(x)
        h = h + self.positional_embedding[: h.shape[1]]
        for layer in self.layers:
            h = layer(h, causal(h.shape[1]))
        hidden = self.layer_norm(h)
        coarse = self.dconv2(hidden)
        n = int(torch.tensor(coarse.shape[1], dtype=torch.float32) * 160 / 16000 * self.v["sampling_rate"]
                / self.v["hop_length"])
        coarse = F.interpolate(coarse.transpose(1, 2), size=n, mode="nearest")
        refined = self.post_net.layers(coarse) + coarse
        return refined.transpose(1, 2), coarse.transpose(1, 2), hidden


class AudioTokenizer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.audio_model = Encoder(c["audio_config"])
        self.audio_bridge_model = Bridge(c["audio_config"])
        self.audio_decoder = Decoder(c["audio_config"], c["vocoder_config"])


class TokenizerRef(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.audio_tokenizer = AudioTokenizer(c)

"""The tokenizer's audio decoder (SPEC section 2): 12.5 Hz codes' features -> 50 Hz hidden -> 100 Hz coarse
mel -> refined mel on the 62.5 Hz target grid.

    dconv1  causal ConvTranspose1d d -> d (k3, s4) + GroupNorm(1)         length 4L - 1   (50 Hz)
    + sinusoidal table; causal Whisper layers; LayerNorm -> hidden_states_before_dconv2 (flow decoder input)
    dconv2  causal ConvTranspose1d d -> 80 (k3, s2) + GroupNorm(1), trim 1  length 2 * L50 (100 Hz)
    refine  nearest-resample to int(L100 * hop / sr * target_sr / target_hop), 4 x [Conv k5 -> GN(1) -> Mish]
            + Conv 1x1, added to the resampled coarse mel; both zeroed past their lengths.

"Causal" means the convolutions and attention never look ahead; the two GroupNorm(1) layers (as in the
reference) normalise with statistics of the whole utterance, so the decoder as a whole is not streamable.

Padding semantics (`reference_padding`): the reference runs GroupNorm statistics, the refine convs and the
nearest resampling over the whole padded batch tensor, so in a batch an utterance's mel depends on the
longest one. True reproduces that exactly (checkpoints trained either way behave identically on a single
utterance); False makes every stage per utterance, so decoding is batch-invariant.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bajax.layers.conv import Conv1d, ConvTranspose1d
from bajax.layers.sinusoidal import FixedTable, whisper_sinusoids
from bajax.tokenizer.transformer import WhisperStack


def _valid(lengths: jax.Array, t: int) -> jax.Array:
    return jnp.arange(t)[None, :] < lengths[:, None]


def _extent(lengths: jax.Array, reference_padding: bool) -> jax.Array:
    """Per-sample frame counts seen by batch-wide ops: the batch max (reference) or each own length."""
    return jnp.broadcast_to(jnp.max(lengths), lengths.shape) if reference_padding else lengths


class GroupNorm1(nnx.Module):
    """GroupNorm with a single group: statistics over (time, channels) of each sample's `valid` frames."""

    def __init__(self, channels: int, eps: float = 1e-5):
        self.eps = eps
        self.weight = nnx.Param(jnp.ones((channels,), jnp.float32), logical_axes=("norm",))
        self.bias = nnx.Param(jnp.zeros((channels,), jnp.float32), logical_axes=("norm",))

    def __call__(self, x: jax.Array, valid: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        w = valid[..., None].astype(jnp.float32)
        count = jnp.maximum(jnp.sum(w, axis=(1, 2), keepdims=True) * x.shape[-1], 1.0)
        mean = jnp.sum(xf * w, axis=(1, 2), keepdims=True) / count
        var = jnp.sum(jnp.square(xf - mean) * w, axis=(1, 2), keepdims=True) / count
        return (xf - mean) * jax.lax.rsqrt(var + self.eps) * self.weight[...] + self.bias[...]


class CausalConvTranspose(nnx.Module):
    """ConvTranspose1d + GroupNorm(1), then `max(0, k - stride)` frames trimmed on the right (causal)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.kernel_size, self.stride = kernel, stride
        self.conv = ConvTranspose1d(cin, cout, kernel, stride=stride, dtype=dtype, rngs=rngs)
        self.norm = GroupNorm1(cout)

    def __call__(self, x, lengths, *, reference_padding: bool):
        k, s = self.kernel_size, self.stride
        x = jnp.where(_valid(lengths, x.shape[1])[..., None], x, 0.0)
        y = self.conv(x)
        full = (lengths - 1) * s + k
        y = self.norm(y, _valid(_extent(full, reference_padding), y.shape[1]))
        trim = max(0, k - s)
        y = y[:, : y.shape[1] - trim]
        out_lengths = full - trim
        return jnp.where(_valid(out_lengths, y.shape[1])[..., None], y, 0.0), out_lengths


def nearest_resample(x: jax.Array, in_len: jax.Array, out_len: jax.Array, out_frames: int) -> jax.Array:
    """torch `F.interpolate(mode='nearest')` per sample: src = min(floor(i * (in / out)), in - 1), fp32."""
    i = jnp.arange(out_frames, dtype=jnp.float32)[None, :]
    scale = in_len.astype(jnp.float32)[:, None] / jnp.maximum(out_len, 1).astype(jnp.float32)[:, None]
    src = jnp.minimum(jnp.floor(i * scale).astype(jnp.int32), in_len[:, None] - 1)
    return jnp.take_along_axis(x, jnp.clip(src, 0, x.shape[1] - 1)[..., None], axis=1)


def mish(x: jax.Array) -> jax.Array:
    return x * jnp.tanh(jax.nn.softplus(x))


class RefineNet(nnx.Module):
    """`post_net`: coarse 100 Hz mel -> refined mel on the target grid (residual conv stack)."""

    def __init__(self, n_mels: int, channels, kernel: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        convs, norms, cin = [], [], n_mels
        for c in channels:
            convs.append(Conv1d(cin, c, kernel, padding=kernel // 2, dtype=dtype, rngs=rngs))
            norms.append(GroupNorm1(c))
            cin = c
        self.convs, self.norms = nnx.List(convs), nnx.List(norms)
        self.proj = Conv1d(cin, n_mels, 1, dtype=dtype, rngs=rngs)

    def __call__(self, coarse, len100, out_len, out_frames: int, *, reference_padding: bool):
        """-> (refined, resampled coarse), both [B, out_frames, n_mels] fp32 and zero past `out_len`."""
        in_ext, out_ext = _extent(len100, reference_padding), _extent(out_len, reference_padding)
        coarse = nearest_resample(coarse, in_ext, out_ext, out_frames)
        valid = _valid(out_ext, out_frames)[..., None]
        h = jnp.where(valid, coarse, 0.0)
        coarse = h
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = jnp.where(valid, mish(norm(conv(h), valid[..., 0])), 0.0)
        refined = self.proj(h).astype(jnp.float32) + coarse
        keep = _valid(out_len, out_frames)[..., None]
        return jnp.where(keep, refined, 0.0), jnp.where(keep, coarse, 0.0)


class AudioDecoder(nnx.Module):
    def __init__(self, d: int, heads: int, ffn: int, layers: int, *, n_mels: int = 80, kernel: int = 3,
                 pool: int = 4, stride2: int = 2, max_positions: int = 3000, refine_channels=(256,) * 4,
                 refine_kernel: int = 5, frame_ratio: tuple[int, int, int, int] = (160, 16000, 16000, 256),
                 reference_padding: bool = True, dtype=jnp.float32, scan_layers: bool = True,
                 remat: str = "none", rngs: nnx.Rngs):
        self.frame_ratio, self.reference_padding = tuple(frame_ratio), reference_padding
        self.dconv1 = CausalConvTranspose(d, d, kernel, pool, dtype=dtype, rngs=rngs)
        table = jnp.asarray(whisper_sinusoids(max_positions, d))
        self.positional_embedding = FixedTable(table, logical_axes=(None, "embed"))
        self.transformer = WhisperStack(d, heads, ffn, layers, causal=True, dtype=dtype,
                                        scan_layers=scan_layers, remat=remat, rngs=rngs)
        self.dconv2 = CausalConvTranspose(d, n_mels, kernel, stride2, dtype=dtype, rngs=rngs)
        self.post_net = RefineNet(n_mels, refine_channels, refine_kernel, dtype=dtype, rngs=rngs)

    @classmethod
    def from_config(cls, m, *, rngs: nnx.Rngs) -> AudioDecoder:
        """From the tokenizer `model` config section."""
        return cls(m.d_model, m.decoder_heads, m.decoder_ffn, m.decoder_layers, n_mels=m.n_target_mels,
                   kernel=m.decoder_kernel, pool=m.pool, stride2=m.decoder_stride,
                   max_positions=m.decoder_positions,
                   refine_channels=m.refine_channels, refine_kernel=m.refine_kernel,
                   frame_ratio=(m.mel_hop, m.sample_rate, m.target_sample_rate, m.target_hop),
                   reference_padding=m.decoder_reference_padding, dtype=jnp.dtype(m.dtype),
                   scan_layers=m.scan_layers, remat=m.remat, rngs=rngs)

    def target_lengths(self, len100):
        """Target-grid frames of a 100 Hz length, computed in fp32 step by step as the reference does
        (numpy in -> numpy out, so static sizes can be derived at trace time)."""
        xp = np if isinstance(len100, (int, np.ndarray)) else jnp
        hop, sr, target_sr, target_hop = self.frame_ratio
        x = xp.asarray(len100).astype(xp.float32) * xp.float32(hop) / xp.float32(sr)
        return (x * xp.float32(target_sr) / xp.float32(target_hop)).astype(xp.int32)

    def hidden(self, x: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
        """`hidden_states_before_dconv2` [B, 4L - 1, d] (zeros past each length) and its lengths: the flow
        decoder's conditioning, without computing the mels."""
        h, len50 = self.dconv1(x, lengths, reference_padding=self.reference_padding)
        table = self.positional_embedding[...]
        if h.shape[1] > table.shape[0]:
            raise ValueError(f"decoder sequence of {h.shape[1]} frames exceeds its {table.shape[0]} "
                             "positions; decode shorter chunks or raise model.decoder_positions")
        return self.transformer(h.astype(jnp.float32) + table[: h.shape[1]], _valid(len50, h.shape[1])), len50

    def __call__(self, x: jax.Array, lengths: jax.Array, target_lengths: jax.Array | None = None,
                 target_frames: int | None = None) -> dict[str, jax.Array]:
        """x [B, L, d] decoder input at the code rate (zeros past `lengths`).

        `target_lengths` (training: the target mel's lengths) default to the formula; `target_frames` is the
        static output size (default: that of the padded input). Returns refined_mel, coarse_mel (both on the
        target grid), mel_lengths, hidden_states_before_dconv2 [B, 4L - 1, d], lengths_before_dconv2.
        """
        rp = self.reference_padding
        hidden, len50 = self.hidden(x, lengths)
        coarse, len100 = self.dconv2(hidden, len50, reference_padding=rp)
        if target_lengths is None:
            target_lengths = self.target_lengths(len100)
        if target_frames is None:
            target_frames = int(self.target_lengths(np.array([coarse.shape[1]]))[0])
        refined, coarse = self.post_net(coarse, len100, target_lengths, target_frames, reference_padding=rp)
        return {"refined_mel": refined, "coarse_mel": coarse, "mel_lengths": target_lengths,
                "hidden_states_before_dconv2": hidden, "lengths_before_dconv2": len50}

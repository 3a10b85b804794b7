"""The vocoder's building blocks, with PyTorch's semantics and default initialisation, on channels-last
activations [B, T, C]: weight-normed Conv1d / ConvTranspose1d, a plain Conv1d, a Linear, Snake.

Weight normalisation is the reference's `torch.nn.utils.weight_norm` (the hook-based one, dim 0), kept as
parameters so that training and export are exact: `weight_g` and `weight_v` are separate nnx.Params and the
forward computes `w = v * (g / ||v||)`, the norm over every dimension but torch's dim 0 and with no epsilon,
as torch does. Torch's dim 0 is the OUTPUT channel of a Conv1d ([out, in, k]) but the INPUT channel of a
ConvTranspose1d ([in, out, k]), so `g` is [out] for one and [in] for the other. Kernels are stored
[k, in, out] like bajax.layers.conv; torch's g is [C, 1, 1] (the exporter adds the unit dims).

Initialisation follows what the reference actually ends up with: PyTorch's default
(kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)), bias U(+-1/sqrt(fan_in)); a transposed conv's fan_in is
out * k because torch reads it from weight dim 1), then g = ||v|| so w = v. The reference's
`init_weights` (normal(0, 0.01) on ups / conv_post / resblock convs) writes into the `weight` tensor that
weight_norm recomputes from g and v before every forward, so it has no effect.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx


def torch_uniform(key: jax.Array, shape: tuple[int, ...], fan_in: int) -> jax.Array:
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def normed_weight(g: jax.Array, v: jax.Array, axis: int) -> jax.Array:
    """v * (g / ||v||) with the norm over all axes of v but `axis` (g has v.shape[axis] entries)."""
    reduce = tuple(a for a in range(v.ndim) if a != axis)
    norm = jnp.sqrt(jnp.sum(v * v, axis=reduce, keepdims=True))
    shape = [1] * v.ndim
    shape[axis] = -1
    return v * (g.reshape(shape) / norm)


def _conv(x, w, *, stride=1, padding=(0, 0), dilation=1, lhs_dilation=1):
    return jax.lax.conv_general_dilated(x, w, window_strides=(stride,), padding=[padding],
                                        lhs_dilation=(lhs_dilation,), rhs_dilation=(dilation,),
                                        dimension_numbers=("NWC", "WIO", "NWC"))


class Conv1d(nnx.Module):
    """torch.nn.Conv1d(in, out, k, stride, padding, dilation) (symmetric zero padding), optionally
    weight-normed (params weight_g [out], weight_v [k, in, out]) or plain (param kernel [k, in, out])."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, *, stride: int = 1, padding: int = 0,
                 dilation: int = 1, weight_norm: bool = True, dtype=jnp.float32, rngs: nnx.Rngs):
        self.stride, self.padding, self.dilation, self.dtype = stride, padding, dilation, dtype
        self.weight_norm = weight_norm
        fan_in = in_ch * kernel
        w = torch_uniform(rngs.params(), (kernel, in_ch, out_ch), fan_in)
        if weight_norm:
            self.weight_v = nnx.Param(w, logical_axes=("kernel", "conv_in", "conv_out"))
            self.weight_g = nnx.Param(jnp.sqrt(jnp.sum(w * w, axis=(0, 1))), logical_axes=("conv_out",))
        else:
            self.kernel = nnx.Param(w, logical_axes=("kernel", "conv_in", "conv_out"))
        self.bias = nnx.Param(torch_uniform(rngs.params(), (out_ch,), fan_in), logical_axes=("conv_out",))

    def weight(self) -> jax.Array:
        """The effective kernel [k, in, out] in fp32."""
        if self.weight_norm:
            return normed_weight(self.weight_g[...], self.weight_v[...], axis=2)
        return self.kernel[...]

    def __call__(self, x: jax.Array) -> jax.Array:
        y = _conv(x.astype(self.dtype), self.weight().astype(self.dtype), stride=self.stride,
                  padding=(self.padding, self.padding), dilation=self.dilation)
        return y + self.bias[...].astype(self.dtype)


class ConvTranspose1d(nnx.Module):
    """torch.nn.ConvTranspose1d(in, out, k, stride, padding), weight-normed over its INPUT channel (torch's
    dim 0 of [in, out, k]): weight_g [in], weight_v [k, in, out]. Length (L - 1) * stride + k - 2 * padding."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, *, stride: int, padding: int = 0,
                 dtype=jnp.float32, rngs: nnx.Rngs):
        self.kernel_size, self.stride, self.padding, self.dtype = kernel, stride, padding, dtype
        fan_in = out_ch * kernel
        w = torch_uniform(rngs.params(), (kernel, in_ch, out_ch), fan_in)
        self.weight_v = nnx.Param(w, logical_axes=("kernel", "conv_in", "conv_out"))
        self.weight_g = nnx.Param(jnp.sqrt(jnp.sum(w * w, axis=(0, 2))), logical_axes=("conv_in",))
        self.bias = nnx.Param(torch_uniform(rngs.params(), (out_ch,), fan_in), logical_axes=("conv_out",))

    def weight(self) -> jax.Array:
        return normed_weight(self.weight_g[...], self.weight_v[...], axis=1)

    def __call__(self, x: jax.Array) -> jax.Array:
        # The transposed conv is a stride-1 conv of the stride-dilated input with the flipped kernel,
        # padded k - 1 - padding on each side (torch's `padding` trims the full output).
        k, p = self.kernel_size, self.padding
        w = jnp.flip(self.weight().astype(self.dtype), axis=0)
        y = _conv(x.astype(self.dtype), w, padding=(k - 1 - p, k - 1 - p), lhs_dilation=self.stride)
        return y + self.bias[...].astype(self.dtype)


class Linear(nnx.Module):
    """torch.nn.Linear with its default init: kernel [in, out], bias [out]."""

    def __init__(self, in_features: int, out_features: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.dtype = dtype
        self.kernel = nnx.Param(torch_uniform(rngs.params(), (in_features, out_features), in_features),
                                logical_axes=("conv_in", "conv_out"))
        self.bias = nnx.Param(torch_uniform(rngs.params(), (out_features,), in_features),
                              logical_axes=("conv_out",))

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jnp.einsum("...i,io->...o", x.astype(self.dtype), self.kernel[...].astype(self.dtype))
        return y + self.bias[...].astype(self.dtype)


class Snake(nnx.Module):
    """x + 1 / (alpha + 1e-9) * sin(alpha x)^2 per channel (Ziyin et al. 2020), alpha initialised to 1
    (the reference's linear-scale Snake; its `no_div_by_zero` is 1e-9)."""

    def __init__(self, channels: int):
        self.alpha = nnx.Param(jnp.ones((channels,), jnp.float32), logical_axes=("conv_out",))

    def __call__(self, x: jax.Array) -> jax.Array:
        alpha = self.alpha[...].astype(x.dtype)
        return x + (1.0 / (alpha + 1e-9)) * jnp.square(jnp.sin(x * alpha))

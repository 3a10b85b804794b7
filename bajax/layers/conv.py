"""1-D convolutions on channels-last activations [B, T, C]: plain / strided / causal, and transposed.

Kernels are stored `[kernel, in, out]` with logical axes ('kernel', 'conv_in', 'conv_out'); PyTorch stores
Conv1d as [out, in, k] and ConvTranspose1d as [in, out, k] (the exporter transposes). A convolution whose
kernel equals its stride and has no padding (the tokenizer bridge: k 4, s 4) is a reshape and one matmul,
which is what it runs as (XLA:CPU runs a GEMM better than its convolution for that shape).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from bajax.layers.linear import fan_in_init


def _pairs(padding, kernel: int, stride: int) -> tuple[int, int]:
    if padding == "causal":
        return (kernel - 1, 0)           # output t sees inputs <= t (times stride)
    if padding == "same":
        return ((kernel - 1) // 2, kernel // 2)
    if isinstance(padding, int):
        return (padding, padding)
    left, right = padding
    return (int(left), int(right))


class Conv1d(nnx.Module):
    """y[t] = sum_j x[t*stride + j - left] . W[j]  (+ b); padding: int, (left, right), 'same' or 'causal'."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, *, stride: int = 1, padding=0,
                 use_bias: bool = True, dtype=jnp.float32, rngs: nnx.Rngs):
        self.kernel_size, self.stride, self.dtype = kernel, stride, dtype
        self.padding = _pairs(padding, kernel, stride)
        self.kernel = nnx.Param(fan_in_init(rngs.params(), (kernel, in_ch, out_ch), kernel * in_ch),
                                logical_axes=("kernel", "conv_in", "conv_out"))
        self.bias = (nnx.Param(jnp.zeros((out_ch,), jnp.float32), logical_axes=("conv_out",))
                     if use_bias else None)

    @staticmethod
    def out_length(length, kernel: int, stride: int, padding: tuple[int, int]):
        return (length + padding[0] + padding[1] - kernel) // stride + 1

    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.kernel[...].astype(self.dtype)
        x = x.astype(self.dtype)
        k, s = self.kernel_size, self.stride
        if k == s and self.padding == (0, 0):
            b, t, c = x.shape
            frames = x[:, : t // k * k].reshape(b, t // k, k * c)     # k consecutive frames side by side
            y = jnp.einsum("btc,co->bto", frames, w.reshape(k * c, -1))
        else:
            y = jax.lax.conv_general_dilated(x, w, window_strides=(s,), padding=[self.padding],
                                             dimension_numbers=("NWC", "WIO", "NWC"))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


class ConvTranspose1d(nnx.Module):
    """PyTorch ConvTranspose1d (no padding): y[t*stride + j] += x[t] . W[j]; length (L - 1) * stride + k.

    Causal use (the audio decoder) trims `max(0, k - stride)` frames on the right, so output frame n
    depends only on inputs t <= n / stride.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, *, stride: int = 1, use_bias: bool = True,
                 dtype=jnp.float32, rngs: nnx.Rngs):
        self.kernel_size, self.stride, self.dtype = kernel, stride, dtype
        fan_in = max(1, math.ceil(kernel / stride)) * in_ch      # inputs that reach one output frame
        self.kernel = nnx.Param(fan_in_init(rngs.params(), (kernel, in_ch, out_ch), fan_in),
                                logical_axes=("kernel", "conv_in", "conv_out"))
        self.bias = (nnx.Param(jnp.zeros((out_ch,), jnp.float32), logical_axes=("conv_out",))
                     if use_bias else None)

    def __call__(self, x: jax.Array) -> jax.Array:
        k, s = self.kernel_size, self.stride
        # A transposed conv is a stride-1 conv of the s-dilated input with the flipped kernel, padded k-1.
        w = jnp.flip(self.kernel[...].astype(self.dtype), axis=0)
        y = jax.lax.conv_general_dilated(x.astype(self.dtype), w, window_strides=(1,),
                                         padding=[(k - 1, k - 1)], lhs_dilation=(s,),
                                         dimension_numbers=("NWC", "WIO", "NWC"))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y

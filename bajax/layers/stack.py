"""N identical layers with stacked parameters, applied by `jax.lax.scan` (or a Python loop) with remat.

The parameters of all layers live in one module whose every Param has a leading 'layers' dimension (added
to its `logical_axes`). Scanning compiles one layer body instead of N, which keeps compile time flat in
depth. `scan_layers=False` applies the same stacked parameters in a Python loop (easier to debug, same
checkpoint layout). The remat policy is chosen by name:

  none           keep every activation (fastest, most memory)
  full           save only the layer inputs; recompute the layer in the backward pass
  dots           save matmul outputs, recompute the elementwise ops
  dots_no_batch  save matmuls without batch dimensions (weights x activations), recompute attention's
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from bajax.layers import lora

REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")


def remat(fn: Callable, policy: str, *, prevent_cse: bool = True) -> Callable:
    """`fn` wrapped in jax.checkpoint according to the named policy ('none' returns fn unchanged)."""
    if policy == "none":
        return fn
    policies = {
        "full": None,
        "dots": jax.checkpoint_policies.checkpoint_dots,
        "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    }
    if policy not in policies:
        raise ValueError(f"remat policy must be one of {REMAT_POLICIES}, got {policy!r}")
    return jax.checkpoint(fn, policy=policies[policy], prevent_cse=prevent_cse)


def _add_layers_axis(var: nnx.Variable) -> nnx.Variable:
    axes = var.get_metadata().get("logical_axes")
    if axes is None:
        axes = (None,) * (jnp.ndim(var.get_value()) - 1)
    return var.replace(var.get_value(), logical_axes=("layers",) + tuple(axes))


class Stack(nnx.Module):
    """`num` copies of `make_layer(rngs)` with independently initialised, stacked parameters."""

    def __init__(self, make_layer: Callable[[nnx.Rngs], nnx.Module], num: int, *, rngs: nnx.Rngs,
                 scan_layers: bool = True, remat_policy: str = "none"):
        if remat_policy not in REMAT_POLICIES:
            raise ValueError(f"remat policy must be one of {REMAT_POLICIES}, got {remat_policy!r}")
        self.num, self.scan_layers, self.remat_policy = num, scan_layers, remat_policy
        graphdef = nnx.graphdef(nnx.eval_shape(lambda: make_layer(nnx.Rngs(0))))
        keys = jax.random.split(rngs.params(), num)
        # vmap over the init keys builds all layers at once (one traced layer body, stacked outputs).
        state = jax.vmap(lambda key: nnx.state(make_layer(nnx.Rngs(key))))(keys)
        state = jax.tree.map(_add_layers_axis, state, is_leaf=lambda x: isinstance(x, nnx.Variable))
        self.layers = nnx.merge(graphdef, state)

    def scan(self, fn: Callable, carry, xs=None):
        """Applies fn(layer, carry, x_i) -> (carry, y_i) over the layers; returns (carry, stacked ys).

        `xs` (optional) is a pytree with a leading layer dimension (e.g. one KV cache per layer).
        """
        graphdef, state = nnx.split(self.layers)
        # While LoRA dropout is on (training), each layer's adapters draw masks from its own key.
        index = jnp.arange(self.num) if lora.dropout_active() else None

        def body(c, inputs):
            layer_state, x, i = inputs
            with lora.layer(i) if i is not None else contextlib.nullcontext():
                return fn(nnx.merge(graphdef, layer_state), c, x)

        if self.scan_layers:
            return jax.lax.scan(remat(body, self.remat_policy, prevent_cse=False), carry, (state, xs, index))
        body = remat(body, self.remat_policy)
        ys = []
        for i in range(self.num):
            carry, y = body(carry, jax.tree.map(lambda a, i=i: a[i], (state, xs, index)))
            ys.append(y)
        return carry, jax.tree.map(lambda *a: jnp.stack(a), *ys) if ys and ys[0] is not None else None

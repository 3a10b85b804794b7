"""The flow decoder one chunk at a time: the Pre-Net and every Euler step of the estimator on new frames only.

Why this is exact: every convolution of the Pre-Net and the estimator is causal and their attention is causal
(Pre-Net) or block-causal in chunks of `model.chunk` frames (estimator), so frames of a chunk never depend on
later frames. Processing frames [offset, offset + F) then needs, besides the new inputs,
  - each causal convolution's last `kernel - 1` inputs of the previous chunk (`conv` caches), and
  - each attention layer's keys and values of all earlier frames (`kv` caches, [B, capacity, H, D], written at
    their absolute frame positions),
for the Pre-Net once and for the estimator once per Euler step (each step sees different inputs). With those
the chunk's mel equals the offline sampler's to float rounding (the softmax runs over a longer, masked key
axis; tests/test_stream.py measures it). F must be a multiple of the estimator's attention chunk, so no
attention chunk straddles two calls.

Attention reads only the first `keys` cached frames, a static bucket >= offset + F, so compute grows with the
utterance as in the offline decoder instead of with the capacity. Memory is what it is: at the reference size
the estimator's caches hold 2 x 56 layers x 512 values x 2 (guidance) x steps per frame, ~4.6 MB per frame
(50 per second) at 10 steps, which is why `capacity` is a setting.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bajax.flow.estimator import mish

_NEG = -1e30


def conv_step(conv, x: jax.Array, prev: jax.Array | None) -> tuple[jax.Array, jax.Array | None]:
    """A causal Conv1d on a chunk x [B, F, C] continuing from the previous chunk's last k - 1 inputs."""
    k = conv.kernel_size
    if k == 1:
        return conv(x), prev
    full = jnp.concatenate([prev.astype(x.dtype), x], axis=1)
    return conv(full)[:, k - 1:], full[:, -(k - 1):]


def attention_step(attn, x: jax.Array, kv, offset, end, keys: int, chunk: int):
    """Attention of a chunk's frames (absolute positions offset + i) over the cached and new keys: key s is
    visible to query p iff s // chunk <= p // chunk and s < end (chunk 1 = causal). Returns (out, kv)."""
    q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)           # [B, F, H, D]
    k_all = jax.lax.dynamic_update_slice(kv[0], k.astype(kv[0].dtype), (0, offset, 0, 0))
    v_all = jax.lax.dynamic_update_slice(kv[1], v.astype(kv[1].dtype), (0, offset, 0, 0))
    d = q.shape[-1]
    qh = jnp.swapaxes(q * jnp.asarray(d ** -0.5, q.dtype), 1, 2)          # as bajax.flow.attention
    kh = jnp.swapaxes(k_all[:, :keys].astype(q.dtype), 1, 2)
    vh = jnp.swapaxes(v_all[:, :keys].astype(q.dtype), 1, 2)
    pos_q = offset + jnp.arange(x.shape[1])
    pos_k = jnp.arange(keys)
    visible = (pos_k[None, :] // chunk <= pos_q[:, None] // chunk) & (pos_k[None, :] < end)
    scores = jnp.einsum("bhqd,bhkd->bhqk", qh, kh, preferred_element_type=jnp.float32)
    scores = jnp.where(visible[None, None], scores, _NEG)
    probs = jax.nn.softmax(scores, axis=-1).astype(vh.dtype)
    out = jnp.swapaxes(jnp.einsum("bhqk,bhkd->bhqd", probs, vh), 1, 2)
    return attn.o_proj(out), (k_all, v_all)


# -- the Pre-Net -------------------------------------------------------------------------------------------

def prenet_cache(prenet, batch: int, capacity: int, dtype=jnp.float32):
    layer = prenet.layers.layers
    heads, head_dim = layer.self_attn.q_proj.kernel.shape[-2:]
    shape = (prenet.layers.num, batch, capacity, heads, head_dim)
    return jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)


def prenet_step(prenet, cond: jax.Array, valid: jax.Array, kv, offset, end, keys: int):
    """cond [B, F, D] (already on the mel grid) -> mu [B, F, n_mels] fp32 and the updated caches."""
    x = prenet.in_out(jax.nn.silu(prenet.in_proj(cond)))

    def run(layer, h, layer_kv):
        a, layer_kv = attention_step(layer.self_attn, layer.self_attn_layer_norm(h), layer_kv, offset, end,
                                     keys, 1)
        h = h + a
        return h + layer.mlp(layer.final_layer_norm(h)), layer_kv

    x, kv = prenet.layers.scan(run, x, kv)
    x = jnp.where(valid[..., None], x, 0)
    mu = prenet.out_proj(prenet.final_norm(x)).astype(jnp.float32)
    return jnp.where(valid[..., None], mu, 0.0), kv


# -- the estimator -----------------------------------------------------------------------------------------

def _causal_block(block, x, m, prev):
    y, prev = conv_step(block.conv, x * m, prev)
    return mish(block.norm(y)) * m, prev


def _stage(stage, x, m, t_emb, cache, offset, end, keys):
    r = stage.resnet
    h, p1 = _causal_block(r.block1, x, m, cache["res"][0])
    h = h + r.time_proj(mish(t_emb))[:, None, :]
    h, p2 = _causal_block(r.block2, h, m, cache["res"][1])
    x = h + r.res_conv(x * m)

    def run(blk, y, layer_kv):
        a, layer_kv = attention_step(blk.attn, blk.norm1(y), layer_kv, offset, end, keys, blk.chunk)
        y = y + a
        return y + blk.ff(blk.norm3(y)), layer_kv

    x, kv = stage.blocks.scan(run, x, cache["kv"])
    return x, {"res": (p1, p2), "kv": kv}


def _stage_cache(stage, batch, capacity, dtype, c_in):
    k = stage.resnet.block1.conv.kernel_size
    c = stage.resnet.block2.conv.kernel.shape[-1]
    blk_attn = stage.blocks.layers.attn
    heads, head_dim = blk_attn.q_proj.kernel.shape[-2], blk_attn.q_proj.kernel.shape[-1]
    kv_shape = (stage.blocks.num, batch, capacity, heads, head_dim)
    return {"res": (jnp.zeros((batch, k - 1, c_in), dtype), jnp.zeros((batch, k - 1, c), dtype)),
            "kv": (jnp.zeros(kv_shape, dtype), jnp.zeros(kv_shape, dtype))}


def estimator_cache(est, batch: int, capacity: int):
    """The caches of one Euler step for `batch` rows (2 x the utterances: guidance runs both halves)."""
    dtype = est.dtype
    n_in = est.down.resnet.block1.conv.kernel.shape[-2]
    c = est.down_conv.kernel.shape[-1]
    k = est.down_conv.kernel_size
    mid = jax.tree.map(lambda a: jnp.broadcast_to(a, (est.mid.num, *a.shape)),
                       _stage_cache(est.mid.layers, batch, capacity, dtype, c))
    conv = jnp.zeros((batch, k - 1, c), dtype)
    return {"down": _stage_cache(est.down, batch, capacity, dtype, n_in), "down_conv": conv, "mid": mid,
            "up": _stage_cache(est.up, batch, capacity, dtype, 2 * c), "up_conv": conv, "final": conv}


def estimator_step(est, x, mu, t, valid, cache, offset, end, keys: int):
    """v(x, mu, t) [B, F, 80] fp32 of a chunk, as `Estimator.__call__` computes those frames offline."""
    m = valid[..., None].astype(est.dtype)
    t_emb = est.time_embedding(t)
    h = jnp.concatenate([x, mu], axis=-1).astype(est.dtype)
    h, c_down = _stage(est.down, h, m, t_emb, cache["down"], offset, end, keys)
    skip = h
    h, c_down_conv = conv_step(est.down_conv, h * m, cache["down_conv"])
    h, c_mid = est.mid.scan(lambda stage, y, c: _stage(stage, y, m, t_emb, c, offset, end, keys), h,
                            cache["mid"])
    h, c_up = _stage(est.up, jnp.concatenate([h, skip], axis=-1), m, t_emb, cache["up"], offset, end, keys)
    h, c_up_conv = conv_step(est.up_conv, h * m, cache["up_conv"])
    h, c_final = _causal_block(est.final_block, h, m, cache["final"])
    v = (est.final_proj(h * m) * m).astype(jnp.float32)
    return v, {"down": c_down, "down_conv": c_down_conv, "mid": c_mid, "up": c_up, "up_conv": c_up_conv,
               "final": c_final}


def sample_step(est, mu, noise, valid, caches, offset, end, keys: int, *, grid, guidance: float):
    """The guided Euler sampler (`bajax.flow.cfm.euler_sample`) on one chunk; `caches` carry a leading axis
    of Euler steps. Returns (mel [B, F, 80] fp32, caches)."""
    b = mu.shape[0]
    m = valid[..., None]
    mu2 = jnp.concatenate([mu, jnp.zeros_like(mu)], axis=0)
    valid2 = jnp.concatenate([valid, valid], axis=0)

    def step(x, inputs):
        (t, dt), cache = inputs
        v2, cache = estimator_step(est, jnp.concatenate([x, x], axis=0), mu2, jnp.full((2 * b,), t), valid2,
                                   cache, offset, end, keys)
        v = (1.0 + guidance) * v2[:b] - guidance * v2[b:]
        return x + dt * v, cache

    x0 = jnp.where(m, noise.astype(jnp.float32), 0.0)
    x1, caches = jax.lax.scan(step, x0, ((grid[:-1], grid[1:] - grid[:-1]), caches))
    return jnp.where(m, x1, 0.0), caches

"""Causal self-attention over packed rows, behind one switch (`model.attention`), MaxText-style.

Model code calls `attention(q, k, v, segment_ids, implementation=...)`; the mask is never an argument: every
implementation builds it from the segment ids (a query attends a key of the same segment at the same or an
earlier slot of the row, exactly `bajax.layers.masks.attention_mask(seg, seg)`), so no dense [B, T, S]
array travels with the batch. q is [B, T, H, D], k/v are [B, T, KV, D] with H a multiple of KV (GQA: the
G = H / KV query heads of a KV head share its keys, K/V are never repeated).

  xla        the dense path of `bajax.layers.attention.dot_product_attention`: a [B, T, T] bool mask from
             the segment ids, fp32 scores [B, H, T, T]. Fastest at short T on CPU.
  blockwise  pure JAX flash attention: queries and keys in blocks of `block`, an online softmax over key
             blocks that skips the blocks above the diagonal, fp32 statistics, masks built per block pair
             from segment ids and slot indices. A custom VJP saves only q, k, v, the output and the
             log-sum-exp and recomputes each block's probabilities in the backward pass, so memory is
             O(T x block) forward and backward instead of O(T^2). Runs on every backend.
  splash     the Pallas TPU splash-attention kernel that ships with JAX (causal mask + segment ids, MQA
             kernel per KV head for GQA). `interpret=True` runs it on CPU in Pallas interpret mode (tests).
  cudnn      `jax.nn.dot_product_attention(..., implementation="cudnn", is_causal=True)` on GPU; the
             segment mask goes to cuDNN as its mask input ([B, 1, T, T] bool, built here from the ids).
  auto       splash on TPU, cudnn on GPU, on CPU xla up to `CPU_BLOCKWISE_FROM` - 1 keys and blockwise from
             there on (measured with bench/attention.py: see `resolve`).

The KV-cached decode path does not come here: it attends a cache with its own mask via the xla path.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("auto", "xla", "blockwise", "splash", "cudnn")
# On CPU, `auto` switches from xla to blockwise at this sequence length (bench/attention.py, see README).
CPU_BLOCKWISE_FROM = 4096
DEFAULT_BLOCK = 512
_NEG = -1e30          # finite "minus infinity", as in bajax.layers.attention
_PAD_SEGMENT = -2 ** 31  # segment of the slots added to round T up to a block multiple: matches no real id


def resolve(implementation: str, seq_len: int | None = None, platform: str | None = None) -> str:
    """The concrete implementation `implementation` names for `platform` (default: the one being traced
    for, see `bajax.kernels.platform`). auto: splash on TPU, cudnn on GPU; on CPU xla below
    `CPU_BLOCKWISE_FROM` keys (the dense path is faster there, and its memory is small) and blockwise from
    there on. bench/attention.py, small LM heads, fwd+bwd on the 2-core host (2026-12-07): T=1k xla with
    4 causal blocks 0.66 s vs blockwise 1.09 s; T=4k 10.9 s / 1264 MiB vs 6.3 s / 115 MiB."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"model.attention must be one of {', '.join(IMPLEMENTATIONS)}, got {implementation!r}")
    if implementation != "auto":
        return implementation
    if platform is None:
        from bajax import kernels
        platform = kernels.platform()
    if platform == "tpu":
        return "splash"
    if platform in ("gpu", "cuda", "rocm"):
        return "cudnn"
    return "blockwise" if seq_len is not None and seq_len >= CPU_BLOCKWISE_FROM else "xla"


def attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array, *,
              implementation: str = "auto", block: int = DEFAULT_BLOCK, causal_blocks: int = 1,
              interpret: bool = False) -> jax.Array:
    """Causal self-attention of q [B, T, H, D] over k/v [B, T, KV, D] within the segments of
    `segment_ids` [B, T] -> [B, T, H, D]. `block`: blockwise's block size; `causal_blocks`: xla's query
    blocks (`bajax.layers.attention.dot_product_attention`); `interpret`: run splash in Pallas interpret
    mode (CPU tests)."""
    if q.shape[1] != k.shape[1]:
        raise ValueError(f"self-attention needs as many keys as queries, got {q.shape[1]} and {k.shape[1]}")
    if q.shape[2] % k.shape[2]:
        raise ValueError(f"query heads {q.shape[2]} must be a multiple of kv heads {k.shape[2]}")
    impl = resolve(implementation, q.shape[1])
    if impl == "xla":
        from bajax.layers.attention import dot_product_attention
        from bajax.layers.masks import attention_mask
        return dot_product_attention(q, k, v, attention_mask(segment_ids, segment_ids), causal_blocks)
    if impl == "blockwise":
        return blockwise_attention(q, k, v, segment_ids, block=block)
    if impl == "splash":
        return splash_attention(q, k, v, segment_ids, interpret=interpret)
    return cudnn_attention(q, k, v, segment_ids)


# --- blockwise (pure JAX flash attention) ------------------------------------------------------------------


def blockwise_attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array, *,
                        block: int = DEFAULT_BLOCK) -> jax.Array:
    """See the module docstring. T is padded up to a multiple of the block (padded slots form their own
    segment and are cut off again)."""
    b, t, h, d = q.shape
    kv = k.shape[2]
    g = h // kv
    bs = min(block, t)
    nb = -(-t // bs)
    pad = nb * bs - t
    q = q * jnp.asarray(d ** -0.5, q.dtype)  # as the xla path scales it
    seg = segment_ids.astype(jnp.int32)
    if pad:
        q, k, v = (jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0))) for x in (q, k, v))
        seg = jnp.pad(seg, ((0, 0), (0, pad)), constant_values=_PAD_SEGMENT)
    # Blocked layouts with the block index leading: q [nb, B, KV, G, bs, D], k/v [nb, B, KV, bs, D].
    qb = q.reshape(b, nb, bs, kv, g, d).transpose(1, 0, 3, 4, 2, 5)
    kb = k.reshape(b, nb, bs, kv, d).transpose(1, 0, 3, 2, 4)
    vb = v.reshape(b, nb, bs, kv, d).transpose(1, 0, 3, 2, 4)
    sb = seg.reshape(b, nb, bs).transpose(1, 0, 2)
    out = _flash(qb, kb, vb, sb)  # [nb, B, KV, G, bs, D]
    out = out.transpose(1, 0, 4, 2, 3, 5).reshape(b, nb * bs, h, d)
    return out[:, :t]


def _block_mask(q_seg, k_seg, i, j):
    """bool [B, 1, 1, bs, bs]: same segment and key slot <= query slot, for query block i, key block j."""
    bs = q_seg.shape[-1]
    pos = jnp.arange(bs)
    causal = (j * bs + pos)[None, :] <= (i * bs + pos)[:, None]
    same = q_seg[:, :, None] == k_seg[:, None, :]
    return (same & causal)[:, None, None]


def _scores(qi, kj):
    return jnp.einsum("bkgqd,bksd->bkgqs", qi, kj, preferred_element_type=jnp.float32)


def _forward(q, k, v, seg):
    nb = q.shape[0]
    f32 = jnp.float32

    def q_block(xs):
        i, qi, si = xs
        o0 = jnp.zeros(qi.shape, f32)
        m0 = jnp.full(qi.shape[:-1], _NEG, f32)
        s0 = jnp.zeros(qi.shape[:-1], f32)

        def body(j, carry):
            o, m, den = carry
            mask = _block_mask(si, seg[j], i, j)
            s = jnp.where(mask, _scores(qi, k[j]), _NEG)
            m_new = jnp.maximum(m, s.max(-1))
            p = jnp.where(mask, jnp.exp(s - m_new[..., None]), 0.0)
            a = jnp.exp(m - m_new)
            o = o * a[..., None] + jnp.einsum("bkgqs,bksd->bkgqd", p.astype(v.dtype), v[j],
                                              preferred_element_type=f32)
            return o, m_new, den * a + p.sum(-1)

        o, m, den = jax.lax.fori_loop(0, i + 1, body, (o0, m0, s0))  # causal: key blocks 0..i only
        den = jnp.where(den == 0.0, 1.0, den)  # a query with no key (cannot happen: it sees itself)
        return (o / den[..., None]).astype(q.dtype), m + jnp.log(den)

    return jax.lax.map(q_block, (jnp.arange(nb), q, seg))


@jax.custom_vjp
def _flash(q, k, v, seg):
    return _forward(q, k, v, seg)[0]


def _flash_fwd(q, k, v, seg):
    out, lse = _forward(q, k, v, seg)
    return out, (q, k, v, seg, out, lse)


def _flash_bwd(res, do):
    q, k, v, seg, out, lse = res
    nb = q.shape[0]
    f32 = jnp.float32
    delta = jnp.sum(do.astype(f32) * out.astype(f32), axis=-1)  # [nb, B, KV, G, bs]

    def grads_of_scores(i, j):
        """p and dS of query block i against key block j."""
        mask = _block_mask(seg[i], seg[j], i, j)
        p = jnp.where(mask, jnp.exp(_scores(q[i], k[j]) - lse[i][..., None]), 0.0)
        dp = jnp.einsum("bkgqd,bksd->bkgqs", do[i], v[j], preferred_element_type=f32)
        return p, p * (dp - delta[i][..., None])

    def dq_block(i):
        def body(j, dq):
            _, ds = grads_of_scores(i, j)
            return dq + jnp.einsum("bkgqs,bksd->bkgqd", ds.astype(k.dtype), k[j], preferred_element_type=f32)
        return jax.lax.fori_loop(0, i + 1, body, jnp.zeros(q.shape[1:], f32)).astype(q.dtype)

    def dkv_block(j):
        def body(i, acc):
            dk, dv = acc
            p, ds = grads_of_scores(i, j)
            dv = dv + jnp.einsum("bkgqs,bkgqd->bksd", p.astype(do.dtype), do[i], preferred_element_type=f32)
            dk = dk + jnp.einsum("bkgqs,bkgqd->bksd", ds.astype(q.dtype), q[i], preferred_element_type=f32)
            return dk, dv
        zeros = jnp.zeros(k.shape[1:], f32)
        dk, dv = jax.lax.fori_loop(j, nb, body, (zeros, zeros))  # causal: query blocks j.. only
        return dk.astype(k.dtype), dv.astype(v.dtype)

    dq = jax.lax.map(dq_block, jnp.arange(nb))
    dk, dv = jax.lax.map(dkv_block, jnp.arange(nb))
    return dq, dk, dv, None


_flash.defvjp(_flash_fwd, _flash_bwd)


# --- splash (Pallas TPU) -----------------------------------------------------------------------------------

_SPLASH_BLOCK = 128


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array, *,
                     interpret: bool = False) -> jax.Array:
    """The splash kernel (causal mask, segment ids): its MQA form per KV head, vmapped over batch and KV
    heads. T is padded to a multiple of 128 (padded slots form their own segment)."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

    b, t, h, d = q.shape
    kv = k.shape[2]
    g = h // kv
    tp = -(-t // _SPLASH_BLOCK) * _SPLASH_BLOCK
    pad = tp - t
    q = q * jnp.asarray(d ** -0.5, q.dtype)
    seg = segment_ids.astype(jnp.int32)
    if pad:
        q, k, v = (jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0))) for x in (q, k, v))
        seg = jnp.pad(seg, ((0, 0), (0, pad)), constant_values=_PAD_SEGMENT)
    blk = min(512, tp) if tp % min(512, tp) == 0 else _SPLASH_BLOCK
    sizes = sk.BlockSizes(block_q=blk, block_kv=blk, block_kv_compute=blk, block_q_dkv=blk, block_kv_dkv=blk,
                          block_kv_dkv_compute=blk, block_q_dq=blk, block_kv_dq=blk)
    mask = sm.MultiHeadMask([sm.CausalMask((tp, tp)) for _ in range(g)])
    kernel = sk.make_splash_mqa_single_device(mask, block_sizes=sizes, interpret=interpret)
    qh = q.reshape(b, tp, kv, g, d).transpose(0, 2, 3, 1, 4)  # [B, KV, G, T, D]
    kh, vh = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, KV, T, D]

    def one(qx, kx, vx, sx):
        return kernel(qx, kx, vx, segment_ids=sk.SegmentIds(q=sx, kv=sx))

    out = jax.vmap(jax.vmap(one, in_axes=(0, 0, 0, None)), in_axes=(0, 0, 0, 0))(qh, kh, vh, seg)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, tp, h, d)[:, :t]


# --- cuDNN (GPU) -------------------------------------------------------------------------------------------


def cudnn_attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array) -> jax.Array:
    """cuDNN fused attention through `jax.nn.dot_product_attention` (GQA native, causal by mask type; the
    segment mask is passed as its mask input). Scores/softmax in fp32 inside cuDNN; needs fp16/bf16 inputs."""
    same = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]  # [B, 1, T, T]
    return jax.nn.dot_product_attention(q, k, v, mask=same, is_causal=True, implementation="cudnn")

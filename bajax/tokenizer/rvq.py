"""Residual vector quantiser of the Baichuan-Audio-Tokenizer with every training technique of the paper.

Layers `vq_list[i].codebook.{embed, embed_avg, cluster_size}` mirror the reference parameter names.
Training call (per layer i, on the residual r_i of the valid frames):
  distances -> codes (Gumbel sampling, tau from config; greedy in eval) -> q_i = E[code]
  -> EMA statistics (global sums over the batch) -> EMA + Laplace smoothing -> L2 shrink -> dead-code
  restart from batch vectors -> commitment ||r_i - sg(q_i)||^2 -> r_{i+1} = r_i - sg(q_i).
Output: straight-through `x + sg(sum_kept q_i - x)`, with per-sample layerwise dropout of the deep layers.
The quantisation uses the codebook as it was at the START of the step; the updated codebook is written
back into the `CodebookEMA` variables (pure function `ema.ema_update`, so it runs inside the jitted step).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from bajax import kernels
from bajax.sharding import constrain
from bajax.tokenizer.ema import CodebookEMA, EMAConfig, EMAState, batch_stats, ema_update


class Codebook(nnx.Module):
    """One EMA codebook; all of its state is `CodebookEMA` (never trained by the optimizer)."""

    def __init__(self, size: int, dim: int, *, rngs: nnx.Rngs):
        # Kaiming-uniform as the reference (bound sqrt(6 / dim)); dead-code restart soon moves unused codes
        # onto the data, so the initial scale matters little.
        bound = math.sqrt(6.0 / dim)
        embed = jax.random.uniform(rngs.params(), (size, dim), jnp.float32, -bound, bound)
        self.embed = CodebookEMA(embed, logical_axes=("codebook", "code_dim"))
        self.embed_avg = CodebookEMA(embed, logical_axes=("codebook", "code_dim"))
        self.cluster_size = CodebookEMA(jnp.ones((size,), jnp.float32), logical_axes=("codebook",))
        self.unused_steps = CodebookEMA(jnp.zeros((size,), jnp.int32), logical_axes=("codebook",))

    @property
    def size(self) -> int:
        return self.embed.shape[0]

    def state(self) -> EMAState:
        return EMAState(self.embed[...], self.embed_avg[...], self.cluster_size[...], self.unused_steps[...])

    def assign(self, state: EMAState) -> None:
        self.embed[...], self.embed_avg[...] = state.embed, state.embed_avg
        self.cluster_size[...], self.unused_steps[...] = state.cluster_size, state.unused_steps


class VQLayer(nnx.Module):
    def __init__(self, size: int, dim: int, *, rngs: nnx.Rngs):
        self.codebook = Codebook(size, dim, rngs=rngs)


def sq_norms(embed: jax.Array) -> jax.Array:
    """||E_k||^2 in fp32, computed once per call and shared by every frame."""
    return kernels.row_sq_norms(embed.astype(jnp.float32))


def scores(x: jax.Array, embed: jax.Array, e2: jax.Array) -> jax.Array:
    """||E||^2 - 2 x.E^T: the squared distance up to the per-row constant ||x||^2 (one fp32 matmul)."""
    xe = jnp.einsum("nd,kd->nk", x, embed, precision=jax.lax.Precision.HIGHEST,
                    preferred_element_type=jnp.float32)
    return e2[None, :] - 2.0 * xe


def sample_depth(rng: jax.Array, batch: int, n_layers: int, p: float) -> jax.Array:
    """Layers kept per sample [B]: with probability p, k ~ U{1..n} (layer 1 always kept); else all n."""
    k_rng, p_rng = jax.random.split(rng)
    k = jax.random.randint(k_rng, (batch,), 1, n_layers + 1)      # maxval is exclusive: n is reachable
    drop = jax.random.bernoulli(p_rng, p, (batch,))
    return jnp.where(drop, k, n_layers).astype(jnp.int32)


class ResidualVQ(nnx.Module):
    """`__call__(x, mask, *, train, rng, step)` -> (quantised [B,T,D], codes [B,T,n], metrics)."""

    def __init__(self, dim: int, codebook_sizes: Sequence[int], *, decay: float = 0.99, eps: float = 1e-5,
                 beta: float = 1e-3, restart_after: int = 100, threshold: float = 1e-3,
                 gumbel_tau: float = 1.0, dropout_p: float = 0.5, rngs: nnx.Rngs):
        self.dim = dim
        self.codebook_sizes = tuple(int(s) for s in codebook_sizes)
        self.ema = EMAConfig(decay=decay, eps=eps, beta=beta, restart_after=restart_after,
                             threshold=threshold)
        self.gumbel_tau = gumbel_tau
        self.dropout_p = dropout_p
        self.vq_list = nnx.List([VQLayer(s, dim, rngs=rngs) for s in self.codebook_sizes])

    @classmethod
    def from_config(cls, rvq, dim: int, *, rngs: nnx.Rngs) -> ResidualVQ:
        """From the `model.rvq` config section."""
        return cls(dim, rvq.codebook_sizes, decay=rvq.decay, eps=rvq.eps, beta=rvq.beta,
                   restart_after=rvq.restart_after, threshold=rvq.threshold, gumbel_tau=rvq.gumbel_tau,
                   dropout_p=rvq.dropout_p, rngs=rngs)

    @property
    def n_layers(self) -> int:
        return len(self.codebook_sizes)

    # ------------------------------------------------------------------------------------------ inference

    def codebook_norms(self) -> tuple[jax.Array, ...]:
        """||E||^2 of every layer; pass to `encode(norms=...)` to reuse across calls with a fixed codebook."""
        return tuple(sq_norms(layer.codebook.embed[...]) for layer in self.vq_list)

    def encode(self, x: jax.Array, mask: jax.Array | None = None, n_layers: int | None = None,
               norms: Sequence[jax.Array] | None = None) -> jax.Array:
        """Greedy codes [B, T, n] (int32; -1 at padding) of features x [B, T, D]."""
        b, t, d = x.shape
        n = self.n_layers if n_layers is None else n_layers
        r = x.astype(jnp.float32).reshape(b * t, d)
        norms = self.codebook_norms()[:n] if norms is None else norms
        codes = []
        for i in range(n):
            embed = self.vq_list[i].codebook.embed[...]
            c = jnp.argmin(scores(r, embed, norms[i]), axis=-1).astype(jnp.int32)
            r = r - jnp.take(embed, c, axis=0)
            codes.append(c)
        codes = jnp.stack(codes, -1).reshape(b, t, n)
        return codes if mask is None else jnp.where(mask[..., None], codes, -1)

    def decode(self, codes: jax.Array) -> jax.Array:
        """Sum of the selected code vectors [..., D] (fp32) of codes [..., m], m <= n; code -1 adds zero."""
        out = 0.0
        for i in range(codes.shape[-1]):
            c = codes[..., i]
            v = jnp.take(self.vq_list[i].codebook.embed[...], jnp.maximum(c, 0), axis=0)
            out = out + jnp.where((c >= 0)[..., None], v, 0.0)
        return out

    # ------------------------------------------------------------------------------------------- training

    def __call__(self, x: jax.Array, mask: jax.Array | None = None, *, train: bool = False,
                 rng: jax.Array | None = None, step: jax.Array | int = 0):
        """Quantise x [B, T, D] with mask [B, T] (True = real frame).

        Eval: greedy codes, no state change, all layers. Train (needs `rng`; `step` is folded into it so a
        fixed trainer key still gives fresh noise): Gumbel sampling, layerwise dropout, EMA update written
        back into the codebook variables. Metrics (fp32 scalars): `commit_loss` (mean over layers), per
        layer i `commit_i`, `usage_i`, `perplexity_i`, `dead_i` (train only), `norm_mean_i`, `norm_max_i`,
        and `depth_mean` (mean number of layers kept).
        """
        b, t, d = x.shape
        mask = jnp.ones((b, t), bool) if mask is None else mask.astype(bool)
        x = constrain(x.astype(jnp.float32), ("batch", "length", "code_dim"))
        n = self.n_layers
        if train:
            if rng is None:
                raise ValueError("ResidualVQ(train=True) needs an rng key")
            rng = jax.random.fold_in(rng, jnp.asarray(step, jnp.uint32))
            depth_rng, *layer_rngs = jax.random.split(rng, n + 1)
            depth = sample_depth(depth_rng, b, n, self.dropout_p)
        else:
            depth = jnp.full((b,), n, jnp.int32)

        r = x.reshape(b * t, d)
        flat_mask = mask.reshape(b * t)
        flat_depth = jnp.repeat(depth, t)
        quantized = jnp.zeros_like(r)
        codes, metrics, commits = [], {}, []
        for i in range(n):
            cb = self.vq_list[i].codebook
            embed = cb.embed[...]
            s = scores(r, embed, sq_norms(embed))                      # [N, K]
            if train and self.gumbel_tau > 0:
                g_rng, restart_rng = jax.random.split(layer_rngs[i])
                # Euclidean distance, as the reference's cdist: sqrt(||x||^2 + score), clamped at 0.
                x2 = jnp.sum(r * r, axis=-1, keepdims=True)
                dist = jnp.sqrt(jnp.maximum(s + x2, 0.0))
                c = jnp.argmax(-dist / self.gumbel_tau + jax.random.gumbel(g_rng, s.shape), axis=-1)
            else:
                restart_rng = layer_rngs[i] if train else None
                c = jnp.argmin(s, axis=-1)
            c = c.astype(jnp.int32)
            q = jnp.take(embed, c, axis=0)
            active = flat_mask & (flat_depth > i)           # a real frame whose sample keeps layer i
            w = active.astype(jnp.float32)
            n_active = jnp.maximum(jnp.sum(w), 1.0)

            commit = jnp.sum(jnp.sum((r - jax.lax.stop_gradient(q)) ** 2, -1) * w) / (n_active * d)
            commits.append(commit)
            quantized = quantized + jnp.where(active[:, None], q, 0.0)

            if train:
                stats = batch_stats(r, c, w, cb.size, restart_rng)
                new_state, dead = ema_update(cb.state(), stats, self.ema)
                cb.assign(new_state)
                counts = stats.counts
                metrics[f"dead_{i}"] = jnp.sum(dead).astype(jnp.float32)
                norms = jnp.sqrt(sq_norms(new_state.embed))
            else:
                counts = jax.ops.segment_sum(w, jnp.where(active, c, 0), num_segments=cb.size)
                norms = jnp.sqrt(sq_norms(embed))
            prob = counts / jnp.maximum(jnp.sum(counts), 1.0)
            metrics[f"commit_{i}"] = commit
            metrics[f"usage_{i}"] = jnp.mean((counts > 0).astype(jnp.float32))
            metrics[f"perplexity_{i}"] = jnp.exp(-jnp.sum(jnp.where(prob > 0, prob * jnp.log(prob), 0.0)))
            metrics[f"norm_mean_{i}"] = jnp.mean(norms)
            metrics[f"norm_max_{i}"] = jnp.max(norms)

            codes.append(c)
            r = r - jax.lax.stop_gradient(q)       # the next layer quantises what this one missed

        quantized = quantized.reshape(b, t, d)
        # Straight-through: forward value is the quantisation, gradient to x is the identity.
        out = x + jax.lax.stop_gradient(quantized - x)
        out = jnp.where(mask[..., None], out, 0.0)
        out = constrain(out, ("batch", "length", "code_dim"))
        codes = jnp.where(mask[..., None], jnp.stack(codes, -1).reshape(b, t, n), -1)
        metrics["commit_loss"] = jnp.mean(jnp.stack(commits))
        metrics["depth_mean"] = jnp.mean(depth.astype(jnp.float32))
        return out, codes, metrics

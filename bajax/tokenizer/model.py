"""The Baichuan-Audio-Tokenizer: 16 kHz wave -> Whisper log-mel -> encoder -> bridge + RVQ -> audio decoder.

Lengths (samples N): mel N // 160 -> encoder (mel - 1) // 2 + 1 -> codes enc // 4 -> decoder 50 Hz 4k - 1,
100 Hz 8k - 2 -> target grid (hop 256) 5k frames for k codes (training crops are whole 80 ms code frames).

Training (`loss_sums`): reconstruction L1 + L2 on the coarse and the refined mel plus the multi-scale terms,
the RVQ commitment loss with its own schedule, and (when `loss.align_weight` > 0) the text-alignment loss:
the quantised features through a trainable projection into a FROZEN LM, CE on the transcript (align.py).
All loss terms are sums divided by global-batch totals (`loss_totals`), so gradient accumulation is exact;
RVQ EMA state is updated inside the forward pass (the trainer carries the mutated non-trainable state out of
`value_and_grad`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from bajax.audio.mel import hifigan_log_mel, whisper_log_mel
from bajax.tokenizer.align import TextAlignment
from bajax.tokenizer.bridge import Bridge, ramp
from bajax.tokenizer.decoder import AudioDecoder
from bajax.tokenizer.encoder import AudioEncoder, encoder_lengths
from bajax.tokenizer.losses import mel_loss_sums


def code_lengths_of(wave_lengths, mel_hop: int = 160, pool: int = 4):
    return encoder_lengths(wave_lengths // mel_hop) // pool


class Tokenizer(nnx.Module):
    def __init__(self, m, *, rngs: nnx.Rngs, align_lm=None, align_lm_weights=None):
        """With `loss.align_weight > 0` the alignment branch holds a frozen LM: of config `align_lm` (default
        `m.align_lm`) with `align_lm_weights` (an nnx.State of its Params; default: random init)."""
        self.n_mels, self.pool, self.mel_hop = m.n_mels, m.pool, m.mel_hop
        self.target = (m.n_target_mels, m.target_hop, m.target_sample_rate)
        lc = m.loss
        self.weights = {"coarse": float(lc.coarse_weight), "refined": float(lc.refined_weight),
                        "l1": float(lc.l1_weight), "l2": float(lc.l2_weight), "ms": float(lc.multiscale_weight)}
        self.scales = tuple(int(s) for s in lc.scales)
        self.commit_schedule = (float(lc.commit.start), float(lc.commit.end), int(lc.commit.begin),
                                int(lc.commit.steps))
        self.encoder = AudioEncoder.from_config(m, rngs=rngs)
        self.bridge = Bridge(m.d_model, m.pool, m.rvq, replace=m.replace, dtype=jnp.dtype(m.dtype), rngs=rngs)
        self.decoder = AudioDecoder.from_config(m, rngs=rngs)
        self.align_weight = float(lc.align_weight)
        self.align = (TextAlignment(m.d_model * m.pool, align_lm or m.align_lm, align_lm_weights, rngs=rngs)
                      if self.align_weight > 0 else None)

    # ------------------------------------------------------------------------------------------- pieces

    def code_lengths(self, wave_lengths):
        return code_lengths_of(wave_lengths, self.mel_hop, self.pool)

    def target_mel(self, wave, wave_lengths):
        """The decoder's target: [B, N // hop, 80] and per-utterance frames, limited to what codes cover."""
        n_mels, hop, sr = self.target
        mel, lengths = hifigan_log_mel(wave, wave_lengths, n_mels=n_mels, n_fft=1024, hop=hop, sample_rate=sr)
        covered = self.code_lengths(wave_lengths) * self.pool * 2 * self.mel_hop // hop   # 1280 samples/code
        return mel, jnp.minimum(lengths, covered)

    def _features(self, wave, wave_lengths):
        mel, mel_lengths = whisper_log_mel(wave, wave_lengths, n_mels=self.n_mels, hop=self.mel_hop)
        return self.encoder(mel, mel_lengths)

    def encode(self, wave, wave_lengths, norms=None):
        """wave [B, N] 16 kHz -> (codes [B, T', n] with -1 past each length, code lengths [B])."""
        enc, enc_lengths = self._features(wave, wave_lengths)
        codes, mask = self.bridge.encode(enc, enc_lengths, norms=norms)
        return codes, jnp.sum(mask, axis=1).astype(jnp.int32)

    def decode(self, codes, code_lengths, target_frames: int | None = None) -> dict:
        """codes [B, T', m] (m <= n) -> decoder outputs (refined_mel, coarse_mel, mel_lengths, ...)."""
        return self.decoder(self.bridge.decode(codes), code_lengths, target_frames=target_frames)

    def commit_weight(self, step) -> jax.Array:
        return ramp(step, *self.commit_schedule)

    # ------------------------------------------------------------------------------------------ training

    def loss_sums(self, wave, wave_lengths, *, train: bool, rng=None, step=0, text_tokens=None,
                  text_weights=None):
        """-> (sums dict for `combine`, metrics dict). Eval (`train=False`): greedy codes, no state change.
        The alignment sums need the transcript (`text_tokens`, `text_weights` [B, L]) of the batch."""
        enc, enc_lengths = self._features(wave, wave_lengths)
        dec_in, mask, _, metrics, quantized = self.bridge.forward(enc, enc_lengths, train=train, rng=rng,
                                                                  step=step)
        code_lengths = jnp.sum(mask, axis=1).astype(jnp.int32)
        target, target_lengths = self.target_mel(wave, wave_lengths)
        out = self.decoder(dec_in, code_lengths, target_lengths=target_lengths, target_frames=target.shape[1])
        weight = (jnp.arange(target.shape[1])[None, :] < target_lengths[:, None]).astype(jnp.float32)
        sums = {}
        for name in ("coarse", "refined"):
            for k, v in mel_loss_sums(out[f"{name}_mel"], target, weight, self.scales).items():
                sums[f"{name}_{k}"] = v
        # The RVQ's commitment loss is a mean over this batch's code frames: weight it back into a sum.
        sums["commit"] = metrics["commit_loss"] * jnp.sum(code_lengths).astype(jnp.float32)
        if self.align is not None:
            if text_tokens is None or text_weights is None:
                raise ValueError("model.loss.align_weight > 0 needs the batch's text_tokens and text_weights")
            sums.update(self.align.ce_sums(quantized, code_lengths, text_tokens, text_weights))
        return sums, metrics

    def combine(self, sums: dict, totals: dict, step) -> tuple[jax.Array, dict]:
        """Loss from `loss_sums` and global totals {'frames': valid target frames, 'code_frames': ...}."""
        w = self.weights
        norm = totals["frames"] * self.target[0]
        loss, parts = 0.0, {}
        for name in ("coarse", "refined"):
            rec = w["l1"] * sums[f"{name}_l1"] + w["l2"] * sums[f"{name}_l2"]
            ms = w["l1"] * sums[f"{name}_ms_l1"] + w["l2"] * sums[f"{name}_ms_l2"]
            loss = loss + w[name] * (rec + w["ms"] * ms) / norm
            parts[f"{name}_mae"] = sums[f"{name}_l1"] / norm
            parts[f"{name}_mse"] = sums[f"{name}_l2"] / norm
        commit = sums["commit"] / totals["code_frames"]
        cw = self.commit_weight(step)
        parts.update(commit_loss=commit, commit_weight=cw)
        loss = loss + cw * commit
        if "align_ce" in sums:
            n_text = totals["text_tokens"]
            parts.update(align_loss=sums["align_ce"] / n_text, align_acc=sums["align_correct"] / n_text)
            loss = loss + self.align_weight * parts["align_loss"]
        return loss, parts


def loss_totals(wave_lengths, m, text_weights=None) -> dict:
    """Normalisers of a global batch from its wave lengths (and transcript weights, for the alignment loss);
    at least 1 each: no NaN on an all-padding batch."""
    codes = code_lengths_of(wave_lengths, m.mel_hop, m.pool)
    frames = jnp.minimum(wave_lengths // m.target_hop, codes * m.pool * 2 * m.mel_hop // m.target_hop)
    totals = {"frames": jnp.maximum(jnp.sum(frames).astype(jnp.float32), 1.0),
              "code_frames": jnp.maximum(jnp.sum(codes).astype(jnp.float32), 1.0)}
    if text_weights is not None:
        totals["text_tokens"] = jnp.maximum(jnp.sum(text_weights.astype(jnp.float32)), 1.0)
    return totals

"""The Baichuan-Audio-Tokenizer kind: model, additive loss, audio data, FLOPs, the frozen alignment LM, names.

Loss (SPEC section 2, `Tokenizer.loss_sums` + `combine`): L1 + L2 on the coarse and the refined mel with the
multi-scale terms, the scheduled commitment loss, and the text-alignment CE through the frozen LM. Every
term is a sum over the micro-batch divided by a total of the WHOLE global batch (`loss_totals`), so
micro-batch losses and gradients add up to the full-batch ones (exactly with
`model.decoder_reference_padding=False`; the reference's decoder normalises over the batch's longest item,
so with it a micro-batch's padding differs slightly from the full batch's).

Train vs eval: the trainer's evaluation puts `totals["train"] = False` (absent = training). Training samples
codes (Gumbel), drops layers, mixes in un-quantised samples (replacement curriculum) and updates the EMA
codebooks; evaluation quantises greedily with all layers and changes no state, so `eval_mel_mae` (the refined
mel's MAE on held-out audio) is the paper's Table 1 metric.

Metrics: the loss parts (`coarse_mae`, `refined_mae` = `mel_mae`, `*_mse`, `commit_loss`, `align_loss`,
`align_acc`) are additive. The RVQ's per-layer `usage_i`, `perplexity_i`, `dead_i`, `norm_mean_i`,
`norm_max_i`, `commit_i` and `depth_mean`, `replace_fraction`, `replaced`, `commit_weight` are not; the trainer
sums metrics over micro-batches, so they are scaled by micro-batch rows / global rows here and the logged
value is their MEAN over the micro-batches of the step.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
from flax import nnx

from bajax.interop.layout_tokenizer import baichuan_tokenizer
from bajax.models.audio import code_frames, dataset_of
from bajax.models.registry import register
from bajax.models.spec import Field, ModelKind, ReferenceLayout, SpeechEval
from bajax.tokenizer import flops as tok_flops
from bajax.tokenizer.config import default_model_config
from bajax.tokenizer.model import Tokenizer
from bajax.tokenizer.model import loss_totals as model_totals

SAMPLE_RATE = 16000
# `loss_totals` sees only the batch, so it uses the SPEC's fixed frame grids; build_model checks the config.
_GRID = default_model_config()
_GRID_KEYS = ("mel_hop", "pool", "target_hop", "sample_rate", "target_sample_rate")

FIELDS = {
    "wave": Field(np.float32, ("batch", "length")),
    "wave_lengths": Field(np.int32, ("batch",)),
    "text_tokens": Field(np.int32, ("batch", "length")),
    "text_weights": Field(np.float32, ("batch", "length")),
}


def loss_totals(batch: dict) -> dict:
    totals = model_totals(batch["wave_lengths"], _GRID, batch.get("text_weights"))
    totals["rows"] = batch["wave"].shape[0]  # static: scales the non-additive metrics in the loss
    return totals


def loss(model_cfg, frozen=None):
    del model_cfg, frozen  # the Tokenizer module holds its loss settings (weights, schedules, scales)

    def loss_fn(model, batch, rng, totals):
        train = totals.get("train", True)
        step = totals["step"]
        sums, rvq_metrics = model.loss_sums(batch["wave"], batch["wave_lengths"], train=train, rng=rng, step=step,
                                            text_tokens=batch.get("text_tokens"),
                                            text_weights=batch.get("text_weights"))
        total, parts = model.combine(sums, totals, step)
        share = batch["wave"].shape[0] / totals["rows"]       # this micro-batch's share of the step
        metrics = {k: v * share for k, v in rvq_metrics.items()}
        metrics["commit_weight"] = parts.pop("commit_weight") * share
        metrics.update(parts, mel_mae=parts["refined_mae"])
        return total, metrics

    return loss_fn


def speech_eval(model_cfg, frozen=None) -> SpeechEval:
    """Reconstruction for `train.eval_speech`: each held-out 16 kHz utterance -> greedy codes (all RVQ layers,
    `Tokenizer.encode`) -> the refined mel (`Tokenizer.decode`), against the target mel of the same wave (the
    decoder's own 16 kHz, hop 256 mel, `Tokenizer.target_mel`). The tokenizer makes no waveform, so both mels
    are inverted the same way: Griffin-Lim through the pseudo-inverse of that mel's filterbank (n_fft 1024,
    same seed and iterations), a cheap and model-free inversion that isolates the tokenizer's error (a
    perfect reconstruction scores PESQ 4.64, STOI 1, distance 0; the waves are not what a vocoder would make).
    Mel L1 is that of the refined against the target mel (the eval_mel_mae of whole utterances)."""
    from bajax.eval.during_training import mel_pair_outputs
    from bajax.flow.vocoder import GriffinLim

    gl = GriffinLim(sample_rate=int(model_cfg.target_sample_rate), hop=int(model_cfg.target_hop), n_fft=1024,
                    n_mels=int(model_cfg.n_target_mels), fmax=8000.0)

    def run(model, batch):
        wave, wave_lengths = batch["wave16"], batch["wave_lengths"]
        target, target_lengths = model.target_mel(wave, wave_lengths)
        codes, code_lengths = model.encode(wave, wave_lengths)
        out = model.decode(codes, code_lengths, target_frames=target.shape[1])
        lengths = jnp.minimum(target_lengths, out["mel_lengths"])
        return mel_pair_outputs(gl, target, out["refined_mel"], lengths)

    return SpeechEval(sample_rate=gl.sample_rate, run=run, needs=("wave16",))


@functools.cache
def _run_lm_config(checkpoint: str):
    from bajax import runs

    return runs.read_config(checkpoint, "lm", flag="config.model.align_lm_checkpoint").model


def align_lm_config(model_cfg):
    """The frozen alignment LM's model config: `model.align_lm`, or the config.json of
    `model.align_lm_checkpoint` when given (then that run decides the shape and the section is ignored)."""
    return _run_lm_config(model_cfg.align_lm_checkpoint) if model_cfg.align_lm_checkpoint else model_cfg.align_lm


def build_model(model_cfg, rngs, frozen=None):
    wrong = [k for k in _GRID_KEYS if model_cfg[k] != _GRID[k]]
    if wrong:
        raise ValueError(f"model.{wrong[0]}={model_cfg[wrong[0]]}: the tokenizer's loss normalisers and audio "
                         f"data use the SPEC frame grids ({', '.join(f'{k}={_GRID[k]}' for k in _GRID_KEYS)})")
    if model_cfg.loss.align_weight <= 0:
        return Tokenizer(model_cfg, rngs=rngs)
    lm = (frozen or {}).get("align_lm")
    return Tokenizer(model_cfg, rngs=rngs, align_lm=align_lm_config(model_cfg),
                     align_lm_weights=None if lm is None else nnx.state(lm.model, nnx.Param))


def load_frozen(model_cfg, mesh) -> dict:
    """The alignment LM run (model.align_lm_checkpoint), restored onto `mesh` by the run loader."""
    if model_cfg.loss.align_weight <= 0 or not model_cfg.align_lm_checkpoint:
        return {}
    from bajax import runs

    return {"align_lm": runs.load_frozen(model_cfg.align_lm_checkpoint, "lm", mesh,
                                         "config.model.align_lm_checkpoint")}


@functools.cache
def load_encode_fn(path: str):
    """`wave16k [n] -> codes` of the tokenizer run at `path` (newest step), loaded once per process."""
    from bajax import runs
    from bajax.tokenizer.encode import encode_fn

    loaded = runs.load(path, "tokenizer", model_overrides={"loss.align_weight": 0.0}, flag="tokenizer")
    return encode_fn(loaded.model, name=f"bajax-tokenizer:{loaded.run.workdir}@{loaded.step}")


def batch_shapes(cfg) -> dict[str, tuple[int, ...]]:
    b, text_len = cfg.train.batch_size, cfg.data.audio.text_len
    return {"wave": (b, 1280 * code_frames(cfg.data)), "wave_lengths": (b,),
            "text_tokens": (b, text_len), "text_weights": (b, text_len)}


def flops_per_step(cfg) -> float:
    m = cfg.model
    flops = tok_flops.train_step_flops(m, code_frames(cfg.data), cfg.train.batch_size)
    if m.loss.align_weight > 0:
        text_len = cfg.data.audio.text_len
        flops += tok_flops.align_flops(m, align_lm_config(m), code_frames(cfg.data), text_len) * cfg.train.batch_size
    return flops


def work_units(batch: dict) -> tuple[str, float]:
    return "audio_seconds", float(np.sum(batch["wave_lengths"])) / SAMPLE_RATE


def reference_config(cfg) -> dict:
    m = cfg.model
    return {"audio_config": {
        "d_model": m.d_model, "num_mel_bins": m.n_mels, "encoder_layers": m.encoder_layers,
        "encoder_attention_heads": m.encoder_heads, "encoder_ffn_dim": m.encoder_ffn, "avg_pooler": m.pool,
        "max_source_positions": m.max_source_positions, "decoder_layers": m.decoder_layers,
        "decoder_attention_heads": m.decoder_heads, "decoder_ffn_dim": m.decoder_ffn,
        "decoder_kernel_size": m.decoder_kernel, "decoder_stride_size": m.decoder_stride,
        "decoder_max_positions": m.decoder_positions,
        "vq_config": {"codebook_sizes": list(m.rvq.codebook_sizes)}},
        "vocoder_config": {"num_mel_bins": m.n_target_mels, "channels": list(m.refine_channels) + [m.n_target_mels],
                           "sampling_rate": m.target_sample_rate, "hop_length": m.target_hop}}


FLOW_PREFIX = "audio_tokenizer.audio_flow_matching_decoder."   # the flow kind's tensors, in the same namespace


def nonreference(cfg) -> list[str]:
    """MelSpecRefineNet hard-codes its convolutions as Conv1d(in, out, 5, 1, 2)."""
    k = cfg.model.refine_kernel
    return [] if k == 5 else [f"model.refine_kernel={k}: the reference refine net's convolutions are always 5 wide"]


def owns(name: str) -> bool:
    return name.startswith("audio_tokenizer.") and not name.startswith(FLOW_PREFIX)


def bajax_only(path: tuple[str, ...]) -> bool:
    """The alignment branch (training only) and the RVQ's restart counters have no reference tensor."""
    return path[0] == "align" or path[-1] == "unused_steps"


KIND = register(ModelKind(
    name="tokenizer",
    default_model_config=default_model_config,
    build_model=build_model,
    loss=loss,
    loss_totals=loss_totals,
    batch_fields=FIELDS,
    batch_shapes=batch_shapes,
    make_dataset=dataset_of("TokenizerView"),
    flops_per_step=flops_per_step,
    work_units=work_units,
    layout=ReferenceLayout(entries=baichuan_tokenizer, reference_config=reference_config, owns=owns,
                           bajax_only=bajax_only, nonreference=nonreference),
    load_frozen=load_frozen,
    speech_eval=speech_eval,
))

"""The flow decoder kind: model, additive OT-CFM + prior loss, audio data, FLOPs, the frozen tokenizer, names.

Loss (SPEC section 4) = flow_loss_weight * masked MSE of the CFM field + prior_loss_weight * masked L1 of
the Pre-Net's mu, both summed over valid (frame, bin) pairs and divided by n_mels x the valid frames of the
WHOLE global batch (`loss_totals`), so micro-batch losses add up to the full-batch loss exactly.
The conditioning comes from `bajax.flow.conditioning` (`model.cond_source`): the frozen tokenizer decoder
from codes in the paper setting (loaded by `load_frozen` onto the trainer's mesh), or the fixed 16 kHz mel
of `wave16` for standalone runs.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from bajax.flow import conditioning
from bajax.flow import flops as flow_flops
from bajax.flow.config import default_model_config
from bajax.flow.model import FlowDecoder
from bajax.interop.layout_flow import baichuan_flow
from bajax.models.audio import code_frames, dataset_of
from bajax.models.registry import register
from bajax.models.spec import Field, ModelKind, ReferenceLayout, SpeechEval

MEL_RATE = 50.0   # 24 kHz mel frames per second (hop 480)

FIELDS = {
    "mel24": Field(np.float32, ("batch", "length", None)),
    "mel_lengths": Field(np.int32, ("batch",)),
    "wave16": Field(np.float32, ("batch", "length")),
    "wave_lengths": Field(np.int32, ("batch",)),
    "codes": Field(np.int32, ("batch", "length", None), optional=True),
    "code_lengths": Field(np.int32, ("batch",), optional=True),
}


def loss_totals(batch: dict) -> dict:
    """Valid mel frames of the global batch (at least 1, so an all-padding eval batch gives 0, not NaN)."""
    return {"frames": jnp.maximum(jnp.sum(batch["mel_lengths"].astype(jnp.float32)), 1.0)}


def loss(model_cfg, frozen=None):
    condition = conditioning.conditioner(model_cfg.cond_source, (frozen or {}).get("tokenizer_decoder"))
    n_mels = int(model_cfg.n_mels)
    flow_weight, prior_weight = float(model_cfg.flow_loss_weight), float(model_cfg.prior_loss_weight)

    def loss_fn(model, batch, rng, totals):
        cond, cond_lengths = condition(batch)
        sums = model.loss_sums(cond, cond_lengths, batch["mel24"], batch["mel_lengths"], rng)
        norm = totals["frames"] * n_mels
        cfm_loss, prior_loss = sums["cfm"] / norm, sums["prior"] / norm
        total = flow_weight * cfm_loss + prior_weight * prior_loss
        return total, {"cfm_loss": cfm_loss, "prior_mae": prior_loss}

    return loss_fn


def speech_eval(model_cfg, frozen=None) -> SpeechEval:
    """Sampling for `train.eval_speech`: the model's sampler (its configured Euler steps and guidance, noise
    from a fixed key) draws each held-out utterance's mel from its conditioning. A flow batch holds no 24 kHz
    wave the mel could be judged against, and the point is the flow decoder's error, not a vocoder's: so the
    ESTIMATE is Griffin-Lim of the sampled mel and the REFERENCE Griffin-Lim of the target mel, with the same
    seed and iterations (`bajax.flow.vocoder.GriffinLim`): a perfect decoder scores PESQ 4.64, STOI 1 and
    distance 0 whatever Griffin-Lim's own artefacts. Mel L1 is that of the sampled against the target mel."""
    import jax

    from bajax.eval.during_training import mel_pair_outputs
    from bajax.flow.vocoder import GriffinLim

    condition = conditioning.conditioner(model_cfg.cond_source, (frozen or {}).get("tokenizer_decoder"))
    gl = GriffinLim(n_mels=int(model_cfg.n_mels))

    def run(model, batch):
        cond, cond_lengths = condition(batch)
        target, lengths = batch["mel24"], batch["mel_lengths"]
        mel = model.sample(cond, cond_lengths, lengths, target.shape[1], jax.random.key(0))
        return mel_pair_outputs(gl, target, mel, lengths)

    needs = ("wave16", "mel24") + (("codes",) if model_cfg.cond_source == "tokenizer" else ())
    return SpeechEval(sample_rate=gl.sample_rate, run=run, needs=needs)


def build_model(model_cfg, rngs, frozen=None):
    conditioning.check(model_cfg)
    return FlowDecoder(model_cfg, rngs=rngs)


def load_frozen(model_cfg, mesh) -> dict:
    """The frozen tokenizer decoder (cond_source='tokenizer'), restored onto `mesh` by the run loader."""
    conditioning.check(model_cfg)
    if model_cfg.cond_source != "tokenizer":
        return {}
    from bajax import runs
    from bajax.tokenizer.encode import frozen_decoder

    # The alignment branch (projection + frozen LM) is training-only: left out, none of it is read.
    tokenizer = runs.load_frozen(model_cfg.tokenizer_checkpoint, "tokenizer", mesh,
                                 "config.model.tokenizer_checkpoint", (("loss.align_weight", 0.0),))
    return {"tokenizer_decoder": frozen_decoder(tokenizer.model)}


def batch_shapes(cfg) -> dict[str, tuple[int, ...]]:
    b, frames = cfg.train.batch_size, code_frames(cfg.data)
    return {"mel24": (b, 4 * frames, int(cfg.model.n_mels)), "mel_lengths": (b,),
            "wave16": (b, 1280 * frames), "wave_lengths": (b,),
            "codes": (b, frames, 8), "code_lengths": (b,)}


def flops_per_step(cfg) -> float:
    return flow_flops.train_flops(cfg.model, 4 * code_frames(cfg.data)) * cfg.train.batch_size


def work_units(batch: dict) -> tuple[str, float]:
    return "audio_seconds", float(np.sum(batch["mel_lengths"])) / MEL_RATE


def reference_config(cfg) -> dict:
    m = cfg.model
    return {"flow_matching_config": {
        "prenet_in_dim": m.cond_dim, "prenet_out_dim": m.n_mels, "prenet_d_model": m.prenet_hidden,
        "prenet_attention_heads": m.prenet_heads, "prenet_ffn_dim": m.prenet_ffn, "prenet_nlayers": m.prenet_layers,
        "prenet_in_hidden": m.prenet_in_hidden, "prenet_norm_eps": m.prenet_norm_eps, "norm_eps": m.norm_eps,
        "time_embed_dim": m.time_hidden, "ffn_dim": m.ffn,
        "in_channels": m.n_mels, "channels": [m.channels], "attention_head_dim": m.head_dim,
        "n_blocks": m.transformer_blocks, "num_mid_blocks": m.mid_blocks, "num_heads": m.heads,
        "diffusion_steps": m.sample_steps, "static_chunk_size": m.chunk,
        "cfm_params": {"sigma_min": m.sigma_min, "inference_cfg_rate": m.guidance}}}


def nonreference(cfg) -> list[str]:
    """Choices the reference flow code hard-codes instead of reading from `flow_matching_config`:
    FlowmatchingPrenet's in_mlp is Linear(in, 4 d) -> Linear(4 d, d) and its RMSNorms take the default eps
    1e-6 (audio_modeling_omni.py); ConditionalDecoder's time MLP is 4 x channels wide, the transformer FFN
    4 x channels (matcha FeedForward mult=4), LayerNorms eps 1e-5, convolutions 3 wide, the time embedding
    scaled by 1000 and the attention chunk static_chunk_size = 2 * 25 * 2 = 100 frames (flow_matching.py)."""
    m = cfg.model
    need = {"prenet_in_hidden": 4 * m.prenet_hidden, "prenet_norm_eps": 1e-6, "time_hidden": 4 * m.channels,
            "ffn": 4 * m.channels, "norm_eps": 1e-5, "conv_kernel": 3, "time_scale": 1000.0, "chunk": 100}
    return [f"model.{k}={m[k]}: the reference always uses {v}" for k, v in need.items() if m[k] != v]


REFERENCE_PREFIX = "audio_tokenizer.audio_flow_matching_decoder."


def owns(name: str) -> bool:
    return name.startswith(REFERENCE_PREFIX)


KIND = register(ModelKind(
    name="flow",
    default_model_config=default_model_config,
    build_model=build_model,
    loss=loss,
    loss_totals=loss_totals,
    batch_fields=FIELDS,
    batch_shapes=batch_shapes,
    make_dataset=dataset_of("FlowView"),
    flops_per_step=flops_per_step,
    work_units=work_units,
    layout=ReferenceLayout(entries=baichuan_flow, reference_config=reference_config, owns=owns,
                           nonreference=nonreference),
    load_frozen=load_frozen,
    speech_eval=speech_eval,
))

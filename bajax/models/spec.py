"""What bajax knows about one model kind: the `ModelKind` spec every generic path looks up.

A kind (lm, tokenizer, flow, ...) is one `ModelKind` registered in `bajax.models.registry`. The trainer, the
plan, the run loader, export and import never ask "which model is this": they call the spec's functions.

Losses must be ADDITIVE over micro-batches: `loss_totals(full_batch)` computes the normalisers (token
counts, frame counts) of the whole global batch once, and the loss divides its sums by them. Then the sum of
micro-batch losses and gradients equals the loss and gradient of the full batch exactly, which is what
makes gradient accumulation equal to a k-times larger batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax
import numpy as np
from flax import nnx
from ml_collections import ConfigDict

# (model, batch, rng, totals) -> (loss, metrics); metrics are additive like the loss. `totals` holds what
# loss_totals returned plus "step" (the optimizer step, int32 scalar) for loss schedules, and "train": False
# in evaluation.
LossFn = Callable[[nnx.Module, dict, jax.Array, dict], tuple[jax.Array, dict]]


@dataclasses.dataclass(frozen=True)
class Field:
    """One array of a kind's batch: dtype and logical axes (names like 'batch', 'length'; None = unnamed)."""
    dtype: type
    axes: tuple[str | None, ...]
    optional: bool = False      # present only in some data (e.g. the flow decoder's codes)


@dataclasses.dataclass(frozen=True)
class ReferenceLayout:
    """How a kind's parameters map onto the reference (PyTorch) checkpoint, for export and import."""
    # leaf shapes {path: shape} -> [bajax.interop.entries.Entry] in the reference names
    entries: Callable[[dict], list]
    # config -> the reference-style config fields written beside the exported tensors
    reference_config: Callable[[ConfigDict], dict]
    # reference tensor name -> whether it belongs to this component (a full checkpoint holds them all)
    owns: Callable[[str], bool]
    # bajax leaf path -> True for bajax-only leaves that have no reference tensor (anything else unmapped
    # is an error)
    bajax_only: Callable[[tuple[str, ...]], bool] = lambda path: False
    # config -> one line per choice the reference code hard-codes and this config departs from, naming the
    # key, its value and the value the reference needs ([] = the reference can build this model exactly)
    nonreference: Callable[[ConfigDict], list[str]] = lambda cfg: []
    # (leaf shapes, config) -> {file stem: [Entry]}: tensors outside the reference model that its training code
    # names (the vocoder's discriminators, as CosyVoice's HiFiGan module holds them). `bajax export` writes
    # each group to OUT/<stem>/model.safetensors; `bajax import-torch` reads it when that folder is there.
    companions: Callable[[dict, ConfigDict], dict[str, list]] = lambda shapes, cfg: {}


@dataclasses.dataclass(frozen=True)
class SpeechEval:
    """How a kind turns held-out utterances into (reference, estimate) waveform pairs for the speech metrics
    of `train.eval_speech` (bajax.train.speech_eval).

    `run(model, batch)` is traced once into one jitted call that every process runs alike; `batch` holds the
    first `train.eval_speech` utterances of data.eval_split, whole (up to `speech_eval.MAX_SECONDS`), padded to
    one length: wave16 [B, S16], wave_lengths, wave24 [B, S24], wave24_lengths, mel24 [B, F, 80] (padded with
    the log floor, i.e. silence), mel_lengths, and codes [B, F / 4, 8], code_lengths when the data has codes.
    It returns
        ref, est      float [B, S]  the reference and the estimate waveform at `sample_rate`
        lengths       int   [B]     valid samples of both
    and, when the kind compares mels directly (then `eval_speech_mel_l1` is their mean absolute difference over
    valid frames and bins instead of the L1 of the flow mel of the two waves):
        ref_mel, est_mel float [B, T, n_mels], mel_lengths int [B]
    Keys must be fixed (e.g. jax.random.key(0)), so a checkpoint always scores the same."""
    sample_rate: int
    run: Callable[[nnx.Module, dict], dict]
    needs: tuple[str, ...] = ("wave16",)     # record arrays the batch must hold (an older dataset may lack one)


def _no_frozen(model_cfg: ConfigDict, mesh) -> dict:
    return {}


@dataclasses.dataclass(frozen=True)
class Update:
    """One of several optimizers of a kind (a GAN: the discriminator's, then the generator's, every step).

    Each update takes the gradient of its own loss with respect to the parameters it owns (and that train),
    applies its own optimizer and schedule, and hands the updated model to the next update of the same step."""
    name: str                                        # metric suffix (loss_NAME, lr_NAME) and optimizer-state key
    owns: Callable[[str], bool]                      # '/'-joined parameter path -> whether this update trains it
    loss: Callable[[ConfigDict, Mapping], LossFn]    # like ModelKind.loss
    optim: str = "optim"                             # config section holding its optimizer and schedule
    # config -> the first step it updates; before it its parameters and optimizer state (Adam's moments and
    # bias-correction count) stay as they are, so it starts as if fresh (a GAN's reconstruction warm-up)
    start: Callable[[ConfigDict], int] = lambda cfg: 0


@dataclasses.dataclass(frozen=True)
class ModelKind:
    name: str
    # () -> the locked defaults of the `model` section (every valid key with its type)
    default_model_config: Callable[[], ConfigDict]
    # (model config, rngs, frozen helpers or {}) -> module; `frozen` is what `load_frozen` returned, or {}
    # when only shapes or a checkpoint's own weights matter (plans, inference, import)
    build_model: Callable[[ConfigDict, nnx.Rngs, Mapping], nnx.Module]
    # (model config, frozen helpers) -> LossFn: the loss reads its settings from the config it is given
    loss: Callable[[ConfigDict, Mapping], LossFn]
    # global batch -> normalisers passed to every micro-batch's loss
    loss_totals: Callable[[dict], dict]
    # the batch contract between the kind's data pipeline and its loss
    batch_fields: Mapping[str, Field]
    # config -> {field: shape} of one global batch, from the config alone (plans compile against it)
    batch_shapes: Callable[[ConfigDict], dict[str, tuple[int, ...]]]
    # (config, process_index, process_count, split) -> grain IterDataset of host-local numpy batches
    make_dataset: Callable[[ConfigDict, int, int, str], object]
    # config -> analytic training FLOPs of one optimizer step (forward + backward, whole global batch)
    flops_per_step: Callable[[ConfigDict], float]
    # host-local numpy batch -> (unit name, count) for throughput, e.g. ("tokens", 2048)
    work_units: Callable[[dict], tuple[str, float]]
    # (config, host-local numpy batch) -> the training FLOPs that batch needs (padding and positions that
    # carry no loss excluded): MFU then counts useful work only. None: `flops_per_step` for every step
    useful_flops: Callable[[ConfigDict, dict], float] | None = None
    # parameter names in the reference checkpoint (export / import); None: the kind is not exported
    layout: ReferenceLayout | None = None
    # named presets of trainable parameters: {'stage1': {'train_only': (...)}, ...}
    stages: Mapping[str, Mapping] = dataclasses.field(default_factory=dict)
    # (model config, mesh) -> {name: frozen helper model}: loaded by the run loader onto the mesh of the
    # caller, once, before anything is traced (the tokenizer's alignment LM, the flow decoder's tokenizer)
    load_frozen: Callable[[ConfigDict, object], Mapping] = _no_frozen
    # XLA compiler options of this kind's train and eval steps when they compile for CPU (chosen by
    # measurement per model; other backends get none)
    cpu_compiler_options: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # several optimizers, applied in order every step (a GAN); () = one update of every trainable parameter
    # with `loss` and the `optim` section. `loss` is then the evaluation loss.
    updates: tuple[Update, ...] = ()
    # () -> top-level config sections this kind adds or replaces, e.g. {'optim_disc': ConfigDict(...)}
    extra_config: Callable[[], Mapping[str, ConfigDict]] = lambda: {}
    # (model config, frozen helpers) -> SpeechEval: the speech metrics of `train.eval_speech` (PESQ, STOI, mel L1,
    # multi-resolution STFT distance on held-out utterances); None = the kind makes no speech
    speech_eval: Callable[[ConfigDict, Mapping], SpeechEval] | None = None

    def abstract_batch(self, cfg: ConfigDict) -> dict[str, jax.ShapeDtypeStruct]:
        """One global batch as shapes and dtypes (the contract applied to `batch_shapes`)."""
        shapes = self.batch_shapes(cfg)
        unknown = set(shapes) - set(self.batch_fields)
        if unknown:
            raise ValueError(f"kind {self.name!r}: batch_shapes gives fields {sorted(unknown)} that batch_fields "
                             "does not declare")
        return {k: jax.ShapeDtypeStruct(s, np.dtype(self.batch_fields[k].dtype)) for k, s in shapes.items()}


def rows_per_process(train_cfg, process_count: int) -> int:
    """The host-local rows of a global batch; every process feeds the same number."""
    if train_cfg.batch_size % process_count:
        raise ValueError(f"train.batch_size={train_cfg.batch_size} must be divisible by the "
                         f"{process_count} processes")
    return train_cfg.batch_size // process_count

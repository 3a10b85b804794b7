"""`train.eval_speech`: PESQ, STOI, mel L1 and multi-resolution STFT distance on a FIXED set of held-out
utterances at every evaluation, for the kinds that make speech (`ModelKind.speech_eval`).

The set: the first `train.eval_speech` records of the run's own data.eval_split (the audio shards of
data.audio.tasks in that order, records in file order) that are at least MIN_SECONDS long, each read WHOLE
from its ArrayRecord (the training pipeline's eval batches are crops, too short for PESQ and STOI in a vocoder
run) and cut to MAX_SECONDS and to whole 80 ms code frames. They are read once per run, padded into one batch,
and every evaluation runs the kind's `run` on it in one jitted call with fixed keys: the same checkpoint
always gives the same numbers (on the same mesh and backend).

Several processes: every process reads the same records and runs the same jitted call (a collective program
must be entered by all); its outputs are replicated, so each process then scores the same waves on its host.
Scoring on all of them costs no wall time (the others would wait for process 0 at the next step anyway) and
keeps every process's metrics row identical without a broadcast.
"""

from __future__ import annotations

import numpy as np

from bajax.eval import during_training
from bajax.eval.deps import require

MIN_SECONDS = 1.0      # PESQ wants >= ~1 s of speech; STOI needs 30 non-silent 12.8 ms frames (384 ms)
MAX_SECONDS = 6.0      # longer utterances are cut: the cost of an evaluation stays bounded
FRAME16, FRAME24, FRAME_MEL = 1280, 1920, 4   # per 12.5 Hz code frame: 16 kHz samples, 24 kHz samples, mel frames


def check(cfg, spec) -> None:
    """Fails before training when `train.eval_speech` cannot run: a kind (`spec`, a ModelKind) that makes no
    speech, or the eval extra missing."""
    if cfg.train.eval_speech <= 0:
        return
    if spec.speech_eval is None:
        raise ValueError(f"config train.eval_speech={cfg.train.eval_speech}: a {spec.name!r} run makes no speech "
                         "to score (speech metrics are for tokenizer, vocoder and flow runs); set it to 0")
    for module, metric in (("pesq", "PESQ"), ("pystoi", "STOI")):
        try:
            require(module, f"config train.eval_speech={cfg.train.eval_speech} ({metric})")
        except ImportError as e:
            raise ImportError(f"{e}; or turn the speech metrics off with --config.train.eval_speech=0") from e


def held_out_utterances(data_cfg, split: str, count: int, needs=("wave16",)) -> list[dict]:
    """The evaluation set of the module docstring: dicts of float waves and mels, `n` whole code frames each."""
    import grain

    from bajax.data import records, sources

    root = sources.resolve(data_cfg)
    paths = [p for t in data_cfg.audio.tasks for p in sources.shard_paths(root, split, t, "audio")]
    if not paths:
        raise ValueError(f"train.eval_speech: no audio shards of data.eval_split={split!r} for tasks "
                         f"{tuple(data_cfg.audio.tasks)} under {root}")
    source = grain.sources.ArrayRecordDataSource(paths)
    out, short = [], 0
    for i in range(len(source)):
        _, a = records.decode(source[i])
        missing = [k for k in needs if k not in a]
        if missing:
            raise ValueError(f"train.eval_speech: the audio records of {root}/{split} hold no {missing} (prepared "
                             "by an older bajax); prepare the data again with `bajax prepare`")
        n = len(a["wave16"]) // FRAME16
        if "wave24" in a:
            n = min(n, len(a["wave24"]) // FRAME24)
        if "mel24" in a:
            n = min(n, len(a["mel24"]) // FRAME_MEL)
        if "codes" in a:
            n = min(n, len(a["codes"]))
        if n < MIN_SECONDS * 12.5:
            short += 1
            continue
        n = min(n, int(MAX_SECONDS * 12.5))
        utt = {"frames": n, "wave16": a["wave16"][: n * FRAME16].astype(np.float32) / 32767.0}
        if "wave24" in a:
            utt["wave24"] = a["wave24"][: n * FRAME24].astype(np.float32) / 32767.0
        if "mel24" in a:
            utt["mel24"] = np.asarray(a["mel24"][: n * FRAME_MEL], np.float32)
        if "codes" in a:
            utt["codes"] = np.asarray(a["codes"][:n], np.int32)
        out.append(utt)
        if len(out) == count:
            break
    if not out:
        raise ValueError(f"train.eval_speech: data.eval_split={split!r} under {root} has no utterance of at least "
                         f"{MIN_SECONDS} s ({short} shorter ones); set train.eval_speech=0 or add longer ones")
    return out


def batch_of(utterances: list[dict], rows: int) -> dict[str, np.ndarray]:
    """One padded numpy batch (the fields of `bajax.models.spec.SpeechEval`) of `rows` rows: the utterances,
    then copies of the last one (the mesh's batch axes must divide the rows; copies are not scored)."""
    from bajax.audio.mel import LOG_MEL_FLOOR

    utts = utterances + [utterances[-1]] * (rows - len(utterances))
    frames = max(u["frames"] for u in utts)
    per_frame = {"wave16": (FRAME16, 0.0, "wave_lengths"), "wave24": (FRAME24, 0.0, "wave24_lengths"),
                 "mel24": (FRAME_MEL, LOG_MEL_FLOOR, "mel_lengths"), "codes": (1, 0, "code_lengths")}
    batch = {}
    for key, (size, fill, lengths_key) in per_frame.items():
        if key not in utts[0]:
            continue
        first = utts[0][key]
        arr = np.full((rows, frames * size, *first.shape[1:]), fill, first.dtype)
        for i, u in enumerate(utts):
            arr[i, : len(u[key])] = u[key]
        batch[key] = arr
        batch[lengths_key] = np.array([len(u[key]) for u in utts], np.int32)
    return batch


class SpeechEvaluator:
    """`(train state) -> {"speech_mel_l1": ..., ...}` for a Trainer's run (module docstring)."""

    def __init__(self, trainer):
        import jax
        from flax import nnx
        from jax.sharding import NamedSharding, PartitionSpec

        from bajax import sharding
        from bajax.train import frozen_args

        cfg, mesh = trainer.cfg, trainer.mesh
        check(cfg, trainer.kind)
        spec = trainer.kind.speech_eval(cfg.model, trainer.frozen)
        self.sample_rate = spec.sample_rate
        self.utterances = held_out_utterances(cfg.data, cfg.data.eval_split, cfg.train.eval_speech, spec.needs)
        # The rows are split over the mesh axes of the logical 'batch' axis, like a training batch.
        batch_spec = sharding.logical_to_spec(("batch",), trainer.rules, mesh.axis_names)
        names = () if batch_spec[0] is None else (batch_spec[0],) if isinstance(batch_spec[0], str) else batch_spec[0]
        shards = int(np.prod([mesh.shape[n] for n in names]))
        rows = -(-len(self.utterances) // shards) * shards
        host = batch_of(self.utterances, rows)
        # Every process holds the whole batch and hands over the rows of its own devices.
        self.batch = {}
        for k, x in host.items():
            sh = NamedSharding(mesh, sharding.logical_to_spec(("batch",) + (None,) * (x.ndim - 1), trainer.rules,
                                                              mesh.axis_names))
            self.batch[k] = jax.make_array_from_callback(x.shape, sh, lambda idx, x=x: x[idx])
        graphdef, kind, frozen = trainer.graphdef, trainer.kind, trainer.frozen

        def call(state, batch, frozen_states):   # the frozen helpers' weights as an argument (frozen_args.py)
            run = kind.speech_eval(cfg.model, frozen_args.rebind(frozen, frozen_states)).run
            return run(nnx.merge(graphdef, state["model"], copy=True), batch)

        replicated = NamedSharding(mesh, PartitionSpec())   # every process reads all outputs
        jitted = jax.jit(call, in_shardings=(trainer.state_shardings, None, None), out_shardings=replicated,
                         compiler_options=trainer.compiler_options())
        self._fn = frozen_args.bind(jitted, "speech_eval", frozen)

    def outputs(self, state) -> dict[str, np.ndarray]:
        import jax

        return {k: np.asarray(v) for k, v in jax.device_get(self._fn(state, self.batch)).items()}

    def __call__(self, state) -> dict[str, float]:
        pairs = during_training.pairs_of(self.outputs(state), self.sample_rate, len(self.utterances))
        return during_training.score(pairs)

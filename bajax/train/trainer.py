"""The one training loop for the tokenizer, the audio LLM and the flow decoder.

    state = restore latest checkpoint, or create the model inside jit (parameters born sharded)
    for each step: batch -> global array -> jitted step (donated state) -> metrics one step late
                   -> checkpoint every N steps (async, with the data iterator)
    on SIGTERM or `stop_after`: checkpoint at the step boundary, wait, exit cleanly

Running the same command again resumes from the latest checkpoint, with the data iterator where it was.
"""

from __future__ import annotations

import dataclasses
import json
import signal

import jax
import numpy as np
from etils import epath
from flax import nnx
from ml_collections import ConfigDict

from bajax import malloc, models, runs, sharding
from bajax.layers import lora as lora_layers
from bajax.models import lora
from bajax.train import checkpoint, freeze, frozen_args, peak, speech_eval
from bajax.train.metrics import MetricsWriter
from bajax.train.step import init_state, make_train_step, micro_steps, phases, state_shardings


@dataclasses.dataclass
class RunResult:
    step: int                 # the last completed step
    metrics: list[dict]       # metrics written by this invocation
    preempted: bool = False


class _StopSignal:
    """Turns SIGTERM (TPU maintenance, SLURM time limit) into a stop at a step boundary.

    One process: a Python handler sets a flag. Several processes: the signal may reach only some of them,
    or reach them at different steps, and a process that stops alone would leave the others hanging in the
    next step's collectives. So there JAX's preemption service (started by `jax.distributed.initialize`,
    which catches SIGTERM itself) agrees on one step for all: `reached_preemption_sync_point(step)` turns
    True on every process at the same step. Installing a Python handler would replace JAX's, so we don't.
    """

    def __init__(self):
        self.requested = False
        self._previous = None
        self._multi = jax.process_count() > 1

    def __enter__(self):
        if self._multi:
            return self
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (e.g. a notebook worker): no handler, no flag
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def should_stop(self, step: int) -> bool:
        """Called by every process after every step (the multi-process protocol requires each step)."""
        if self._multi:
            from jax.experimental import multihost_utils

            self.requested = multihost_utils.reached_preemption_sync_point(step)
        return self.requested

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class Trainer:
    """Builds everything a run needs from its config; `run()` trains (or resumes) to `train.steps`."""

    def __init__(self, cfg: ConfigDict, workdir: str, *, devices=None):
        self.cfg = cfg
        self.workdir = epath.Path(workdir)  # local or gs://
        self.kind = models.get(cfg.kind)
        self.mesh = sharding.make_mesh(dict(cfg.mesh), devices)
        self.rules = sharding.normalize_rules(cfg.sharding.rules)
        # Frozen helper models (another run's weights) load onto this mesh before anything is traced.
        with self.scope():
            self.frozen = self.kind.load_frozen(cfg.model, self.mesh)
        self.loss_fn = self.kind.loss(cfg.model, self.frozen)
        freeze_patterns, train_only = freeze.resolve(cfg.train, self.kind.stages)
        self.is_trainable = freeze.trainable_filter(freeze_patterns, train_only, adapters_only=lora.enabled(cfg))
        self.phases = phases(self.kind, cfg, self.is_trainable)   # one optimizer, or one per kind.updates
        with self.scope():
            abstract_model = nnx.eval_shape(lambda: lora.build(self.kind, cfg.model, nnx.Rngs(cfg.seed), self.frozen,
                                                               cfg.train.lora))
            self.graphdef = nnx.graphdef(abstract_model)
            freeze.check_patterns(nnx.state(abstract_model), freeze_patterns, train_only)
            self._init = lambda: init_state(self.kind, cfg.model, cfg.seed, self.phases, self.frozen,
                                            cfg.train.lora)
            self.abstract_state = jax.eval_shape(self._init)
            self.state_shardings = state_shardings(self.abstract_state, self.mesh)
        self._speech = None   # the train.eval_speech evaluator, built at the first evaluation

    def scope(self):
        """Mesh and logical-axis rules in force for tracing and running."""
        import contextlib

        stack = contextlib.ExitStack()
        stack.enter_context(jax.set_mesh(self.mesh))
        stack.enter_context(sharding.axis_rules(self.rules))
        return stack

    # -- state ------------------------------------------------------------------------------------------
    def abstract_with_shardings(self):
        def attach(sh, subtree):  # a sharding leaf covers one Variable (or one plain array)
            return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), subtree)

        return jax.tree.map(attach, self.state_shardings, self.abstract_state,
                            is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))

    def fresh_state(self):
        """A new state created inside jit, so every parameter is born on its shards."""
        state = jax.jit(self._init, out_shardings=self.state_shardings)()
        if self.cfg.train.init_from:
            flag = "config.train.init_from"
            run = runs.resolve(self.cfg.train.init_from, flag)
            step = runs.pick_step(run, flag=flag)
            target = self.abstract_with_shardings()["model"]
            if lora.enabled(self.cfg) and not lora.in_checkpoint(runs.leaf_shapes(runs.state_dir(run, step))):
                # The usual fine-tune: adapters on a run trained (or imported) without them. The base comes
                # from that run; the adapters keep their fresh init (B = 0: the model starts as that run).
                _, base = nnx.split_state(target, lora_layers.Adapter, ...)
                restored = runs.restore_model(run, step, base, self.cfg, flag=flag)
                state["model"] = nnx.merge_state(state["model"], restored)
            else:
                state["model"] = runs.restore_model(run, step, target, self.cfg, flag=flag)
        return state

    def num_trainable(self) -> tuple[int, int]:
        trainable, rest = nnx.split_state(self.abstract_state["model"], self.is_trainable, ...)
        count = lambda t: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(t))
        params = nnx.split_state(rest, nnx.Param, ...)[0]
        return count(trainable), count(trainable) + count(params)

    @property
    def micro_steps(self) -> int:
        """train.grad_accum, raised by train.max_tokens_per_device (bajax.train.step.micro_steps)."""
        shape = dict(self.mesh.shape)
        return micro_steps(self.cfg, shape.get("data", 1) * shape.get("fsdp", 1))

    def compiled_step(self):
        """Jitted `(state, batch) -> (state, metrics)`; the frozen helpers' weights are an argument of the
        compiled program, not its constants (bajax/train/frozen_args.py)."""
        cfg, kind, frozen = self.cfg, self.kind, self.frozen
        phases, graphdef, micro = self.phases, self.graphdef, self.micro_steps
        adapter_dropout = lora.enabled(cfg) and cfg.train.lora.dropout > 0

        def train_step(state, batch, frozen_states):
            helpers = frozen_args.rebind(frozen, frozen_states)
            loss_fns = ([kind.loss(cfg.model, helpers)] if not kind.updates else
                        [p.loss(cfg.model, helpers) for p in phases])
            step = make_train_step(phases, loss_fns, kind.loss_totals, graphdef, seed=cfg.seed, grad_accum=micro,
                                   adapter_dropout=adapter_dropout)
            return step(state, batch)

        jitted = jax.jit(train_step, in_shardings=(self.state_shardings, None, None),
                         out_shardings=(self.state_shardings, None), donate_argnums=0,
                         compiler_options=self.compiler_options())
        return frozen_args.bind(jitted, "train_step", frozen)

    def compiler_options(self) -> dict | None:
        """The kind's XLA options for CPU when the mesh is on CPU; None elsewhere."""
        on_cpu = self.mesh.devices.flat[0].platform == "cpu"
        return dict(self.kind.cpu_compiler_options) if on_cpu and self.kind.cpu_compiler_options else None

    def compiled_eval(self):
        """Jitted `(state, batch) -> metrics` of the loss on held-out data (no gradients, no updates;
        stochastic parts such as RVQ Gumbel sampling see a fixed key)."""
        cfg, kind, frozen, graphdef = self.cfg, self.kind, self.frozen, self.graphdef

        def evaluate(state, batch, frozen_states):
            loss_fn = kind.loss(cfg.model, frozen_args.rebind(frozen, frozen_states))
            model = nnx.merge(graphdef, state["model"], copy=True)
            # "train": False tells a kind's loss to run its evaluation mode (e.g. greedy RVQ, no EMA update).
            totals = {**kind.loss_totals(batch), "step": state["step"], "train": False}
            loss, metrics = loss_fn(model, batch, jax.random.key(0), totals)
            return {**metrics, "loss": loss}

        jitted = jax.jit(evaluate, in_shardings=(self.state_shardings, None, None),
                         compiler_options=self.compiler_options())
        return frozen_args.bind(jitted, "eval_step", frozen)

    def evaluate(self, state, eval_fn=None) -> dict[str, float]:
        """Mean metrics over `train.eval_batches` batches (0 = all) of the held-out split, prefixed `eval_`.
        With `train.eval_tasks` set, the held-out data holds only those tasks (e.g. ('text',): the text-only
        loss that tells whether audio training preserved language ability). With `train.eval_speech` > 0 the
        speech metrics of that many held-out utterances join them (`eval_speech_*`, bajax.train.speech_eval)."""
        eval_fn = eval_fn or self.compiled_eval()
        limit = self.cfg.train.eval_batches
        if jax.process_count() > 1 and limit <= 0:
            raise ValueError("with several processes set train.eval_batches > 0: every process must run the same "
                             "number of evaluation steps, and their held-out shards differ in length")
        sums: dict[str, float] = {}
        n, last = 0, None
        batches = iter(self.eval_dataset())
        while limit <= 0 or n < limit:
            batch = next(batches, None)
            if batch is None:
                if jax.process_count() == 1 or last is None:
                    break
                # This process's shard ran out before the others': it joins the remaining global steps with
                # all-padding rows (segment 0, zero weights), which add nothing to the global sums.
                batch = jax.tree.map(np.zeros_like, last)
            last = batch
            metrics = jax.device_get(eval_fn(state, sharding.to_global(batch, self.mesh)))
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            n += 1
        if n == 0:
            raise ValueError(f"data.eval_split={self.cfg.data.eval_split!r} yielded no batch to evaluate on")
        out = {f"eval_{k}": v / n for k, v in sums.items()}
        if self.cfg.train.eval_speech > 0:
            self._speech = self._speech or speech_eval.SpeechEvaluator(self)
            out.update({f"eval_{k}": v for k, v in self._speech(state).items()})
        return out

    def eval_dataset(self):
        cfg = self.cfg
        tasks = tuple(cfg.train.eval_tasks)
        if tasks:
            unknown = set(tasks) - set(cfg.data.mixture)
            if unknown:
                raise ValueError(f"train.eval_tasks {sorted(unknown)} are not data tasks; valid: "
                                 f"{list(cfg.data.mixture)}")
            cfg = ConfigDict(cfg.to_dict())  # a private copy with the held-out mixture
            for task in cfg.data.mixture:
                cfg.data.mixture[task] = 1.0 if task in tasks else 0.0
        return self.kind.make_dataset(cfg, jax.process_index(), jax.process_count(), cfg.data.eval_split)

    def restore_latest(self):
        """The train state of the newest checkpoint in WORKDIR/checkpoints (no data iterator), on this mesh."""
        run = runs.Run(runs.as_path(self.workdir))
        step = runs.pick_step(run, flag="workdir")
        return runs.restore(run.checkpoints, step, self.abstract_with_shardings())

    def dataset(self, split: str = "train"):
        return self.kind.make_dataset(self.cfg, jax.process_index(), jax.process_count(), split)

    def _resume(self, ckpt: checkpoint.Checkpointer, data_iter, *, say: bool, fallback: bool):
        """(step, state) of the newest READABLE checkpoint (data iterator restored in place), or (None, None)
        when WORKDIR has none. Newer unreadable steps (a truncated or missing file, a missing data-iterator
        state) are named with the reason and moved aside, never deleted, and their steps re-run; with
        `fallback=False`, or when no step is readable, that is an error instead: a run never restarts from
        scratch over existing checkpoints. A model that no longer fits the checkpoint is always an error."""
        run = runs.Run(runs.as_path(self.workdir))
        target = self.abstract_with_shardings()
        steps = ckpt.all_steps()
        unreadable: list[tuple[int, str]] = []
        for step in reversed(steps):
            if step != steps[-1] and not fallback:
                break
            layout = _data_layout(ckpt.directory, step)
            try:
                runs.check_shapes(run, step, target["model"], self.cfg, flag="workdir")
                if layout == "missing":
                    raise FileNotFoundError(f"its data-iterator state for process {jax.process_index()} of "
                                            f"{jax.process_count()} is missing")
                state = ckpt.restore(step, target, data_iter if layout == "same" else None)
            except runs.ShapeMismatch:
                raise
            except Exception as e:  # any failure to read a step: a damaged step
                unreadable.append((step, _reason(e)))
                continue
            for bad, why in unreadable:
                where = ckpt.set_aside(bad, f"step {bad} unreadable: {why}")
                if say:
                    print(f"WARNING: checkpoint step {bad} in {ckpt.directory} is unreadable ({why}); moved to "
                          f"{where}. Falling back to step {step}: steps {step + 1}-{bad} will be re-run",
                          flush=True)
            if say:
                print(f"resumed from step {step} in {ckpt.directory}", flush=True)
                if layout == "other_processes":
                    print(f"WARNING: the data iterator of step {step} was saved by a different number of "
                          f"processes than this run's {jax.process_count()}; each process's shard of the data "
                          "differs now, so the data stream restarts from its beginning (the model and optimizer "
                          "state resume exactly)", flush=True)
            return step, state
        if not unreadable:
            return None, None
        listed = "; ".join(f"step {s}: {why}" for s, why in unreadable)
        hint = ("rerun without --no-fallback to resume from the newest readable step" if not fallback else
                "no checkpoint is readable; move WORKDIR/checkpoints away to start from scratch")
        raise runs.LoadError(f"{ckpt.directory}: unreadable checkpoint(s): {listed}; {hint}")

    # -- loop -------------------------------------------------------------------------------------------
    def run(self, *, stop_after: int | None = None, quiet: bool = False, fallback: bool = True) -> RunResult:
        """Trains to `train.steps` (or `stop_after`), resuming from the newest readable checkpoint; with
        `fallback=False` an unreadable newest checkpoint is an error instead of a fallback."""
        cfg = self.cfg
        say = not quiet and jax.process_index() == 0  # every process runs this loop; one speaks
        if cfg.train.eval_every:
            speech_eval.check(cfg, self.kind)   # e.g. the eval extra missing: fail now, not at the first evaluation
        self.workdir.mkdir(parents=True, exist_ok=True)
        ckpt = checkpoint.Checkpointer(str(self.workdir / "checkpoints"), every=cfg.checkpoint.every,
                                       keep=cfg.checkpoint.keep, async_save=cfg.checkpoint.async_save)
        peak_total = peak.device_peak(cfg.metrics.peak_flops) * jax.device_count()  # probe outside the mesh
        with self.scope(), _StopSignal() as stop:
            data_iter = iter(self.dataset("train"))
            # A config whose model no longer fits, or no readable checkpoint, stops here before anything is written.
            try:
                latest, state = self._resume(ckpt, data_iter, say=say, fallback=fallback)
            except runs.LoadError:
                ckpt.close()
                raise
            writer = MetricsWriter(str(self.workdir), tensorboard=cfg.metrics.tensorboard,
                                   echo=not quiet, flops_per_step=self.kind.flops_per_step(cfg),
                                   peak_flops=peak_total)
            # Steps after the restored one (all, without a checkpoint) are run again from here: their old rows go.
            writer.drop_after(latest or 0)
            if latest is None:
                try:
                    state = self.fresh_state()
                except runs.LoadError:   # an init_from checkpoint that does not fit: nothing trained, nothing kept
                    writer.close()
                    ckpt.close()
                    raise
            # Only a run that restored (or started) cleanly (re)writes its config: a failed resume must leave
            # the config.json that describes the checkpoints' tensors.
            if jax.process_index() == 0:
                runs.write_config(self.workdir, cfg)
            step_fn = self.compiled_step()
            step = int(jax.device_get(state["step"]))
            if say and step == 0:
                n_train, n_all = self.num_trainable()
                platform = jax.devices()[0].platform
                print(f"{cfg.kind}: {n_all / 1e6:.2f}M parameters, {n_train / 1e6:.2f}M trainable; mesh "
                      f"{dict(self.mesh.shape)} on {jax.device_count()} {platform} devices"
                      + (f"; allocator: {malloc.allocator()}" if platform == "cpu" else ""), flush=True)
            units = 0.0
            count_flops = self.kind.useful_flops      # None: this kind reports no MFU
            flops = None if count_flops is None else 0.0
            eval_fn = None
            preempted = False
            end = cfg.train.steps if stop_after is None else min(stop_after, cfg.train.steps)
            while step < end:
                local = next(data_iter)
                writer.unit, count = self.kind.work_units(local)
                units += count * jax.process_count()  # every process holds the same number of rows
                if count_flops is not None:   # (other processes' batches are alike on average)
                    flops += count_flops(cfg, local) * jax.process_count()
                state, metrics = step_fn(state, sharding.to_global(local, self.mesh))
                step += 1
                evaluated = bool(cfg.train.eval_every) and (step % cfg.train.eval_every == 0 or step == end)
                if evaluated:
                    eval_fn = eval_fn or self.compiled_eval()
                    with writer.excluded("eval_time", wait_for=state):
                        metrics = {**metrics, **self.evaluate(state, eval_fn)}
                if evaluated or step % max(cfg.metrics.log_every, 1) == 0 or step == end:
                    writer.add(step, metrics, units, flops)
                if ckpt.due(step):
                    with writer.excluded("save_time", wait_for=state):
                        # The row of every step up to this one reaches metrics.jsonl before the checkpoint can
                        # commit: a kill after the commit then loses no row (a resume re-runs only later steps).
                        writer.flush()
                        ckpt.save(step, state, data_iter)
                if stop.should_stop(step):
                    preempted = True
                    break
            if ckpt.latest_step() != step:
                writer.flush()
                ckpt.save(step, state, data_iter, force=True)
            ckpt.close()
            writer.close()
        if preempted and say:
            print(json.dumps({"preempted_at_step": step, "checkpoint": str(ckpt.directory)}), flush=True)
        return RunResult(step=step, metrics=writer.records, preempted=preempted)


def _data_layout(ckpt_dir, step: int) -> str:
    """How step's data-iterator state fits this run: 'same' (this process's file is there),
    'other_processes' (saved by another process count: the stream restarts, legitimately), or 'missing'
    (saved by this process count but this process's file is gone, or no data-iterator item at all: a damaged
    checkpoint). Grain names the files process_I-of-N.json."""
    path = epath.Path(ckpt_dir) / str(step) / "data_iter"
    if not path.exists():
        return "missing"
    if (path / f"process_{jax.process_index()}-of-{jax.process_count()}.json").exists():
        return "same"
    counts = {p.name.rsplit("-of-", 1)[-1].removesuffix(".json") for p in path.glob("process_*-of-*.json")}
    return "other_processes" if counts and str(jax.process_count()) not in counts else "missing"


def _reason(e: Exception) -> str:
    """The first line of an error, short enough for one message line."""
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return f"{type(e).__name__}: {text[:300]}"


def train(cfg: ConfigDict, workdir: str, *, stop_after: int | None = None, quiet: bool = False,
          devices=None, fallback: bool = True) -> RunResult:
    return Trainer(cfg, workdir, devices=devices).run(stop_after=stop_after, quiet=quiet, fallback=fallback)



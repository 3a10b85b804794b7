"""LoRA (train.lora): adapters beside the Linear kernels of any kind, only they train, merged or adapters-only
export. One pre-trained tiny LM (2 full steps) is the `train.init_from` of the LoRA runs, as in a real fine-tune."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bajax import models, runs
from bajax.config import load
from bajax.interop.adapters import export_adapters
from bajax.interop.export import export
from bajax.interop.import_torch import import_torch
from bajax.interop.safetensors_io import Reader
from bajax.layers import lora
from bajax.lm import special_tokens
from bajax.models import lora as run_lora
from bajax.train import freeze
from bajax.train.trainer import Trainer, train
from tests.interop_util import perturb, read_leaves, torch_state, write_model_run

ROOT = Path(__file__).resolve().parents[1]
TINY_LM = str(ROOT / "configs" / "lm" / "tiny.py")
TINY_FLOW = str(ROOT / "configs" / "flow" / "tiny.py")
FAST = ["data.seq_len=128", "metrics.log_every=1", "metrics.tensorboard=false", "optim.warmup_steps=1",
        "train.eval_every=0", "checkpoint.every=2"]
LORA = ["train.lora.rank=4", "train.lora.alpha=8.0", "train.lora.dropout=0.1"]


def tiny(*overrides, path=TINY_LM):
    return load(path, FAST + list(overrides))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A pre-trained (2 full steps) tiny LM: what a fine-tune starts from."""
    workdir = tmp_path_factory.mktemp("lora") / "base"
    train(tiny("train.steps=2"), str(workdir), quiet=True)
    return workdir


@pytest.fixture(scope="module")
def lora_run(base):
    """4 LoRA steps on `base` (train.init_from), with adapter dropout."""
    cfg = tiny("train.steps=4", f"train.init_from={base}", *LORA)
    workdir = base.parent / "lora_full"
    return cfg, workdir, train(cfg, str(workdir), quiet=True)


def leaves(workdir, step):
    path = str(runs.state_dir(runs.Run(runs.as_path(workdir)), step))
    shapes = runs.leaf_shapes(path)
    return read_leaves(path, list(shapes))


def lm_batch(cfg, b=2, t=16, seed=1):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 256, (b, t))
    tokens[:, 4:10] = special_tokens.ids_for(cfg.model.vocab, cfg.model.vocab_size)["audio_pad"]
    codes = np.stack([rng.integers(0, c, (b, t)) for c in cfg.model.codebook_sizes], -1)
    return {"tokens": jnp.asarray(tokens, jnp.int32), "audio_codes": jnp.asarray(codes, jnp.int32),
            "positions": jnp.tile(jnp.arange(t, dtype=jnp.int32), (b, 1)), "segment_ids": jnp.ones((b, t), jnp.int32)}


def lm_logits(model, batch):
    h = model.hidden(batch)
    return [np.asarray(model.text_logits(h))] + [np.asarray(x) for x in model.audio_logits(h, batch["audio_codes"])]


def test_adapters_sit_beside_their_kernels_sharded_like_them(tmp_path):
    trainer = Trainer(tiny(*LORA, "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"), str(tmp_path))
    state = trainer.abstract_with_shardings()
    q = state["model"]["layers"]["layers"]["self_attn"]["q_proj"]
    # kernel [layers, embed, heads, head_dim]: A keeps (layers, embed), B (layers, heads, head_dim); rank replicated.
    assert q["kernel"].get_value().sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
    assert q["lora_a"].get_value().shape == (2, 128, 4)
    assert q["lora_a"].get_value().sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", None)
    assert q["lora_b"].get_value().sharding.spec == jax.sharding.PartitionSpec(None, None, "tensor", None)
    adapted = {freeze.path_str(p) for p, v in nnx.to_flat_state(state["model"]) if isinstance(v, lora.Adapter)}
    for part in ("layers/layers/self_attn/o_proj/lora_b", "layers/layers/mlp/down_proj/lora_a",
                 "audio_head/transformer_layers/layers/self_attention/v_proj/lora_a"):
        assert part in adapted
    assert not any(p.startswith(("lm_head", "audio_head/heads")) for p in adapted)   # outside the default targets
    # The optimizer holds moments of the adapters only: the frozen base has no optimizer state.
    opt_paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(state["opt"])[0]]
    moments = [p for p in opt_paths if ".mu[" in p or ".nu[" in p]
    assert moments and all("lora_a" in p or "lora_b" in p for p in moments)
    assert len(moments) == 2 * len(adapted)
    n_train, n_all = trainer.num_trainable()
    assert n_train == sum(np.prod(v.get_value().shape) for p, v in nnx.to_flat_state(state["model"])
                          if isinstance(v, lora.Adapter)) and n_train < n_all / 10


def test_targets_that_match_nothing_name_the_key_and_list_paths(tmp_path):
    with pytest.raises(ValueError,
                       match=r"train\.lora\.targets.*'nothing/here'.*layers/layers/self_attn/q_proj/kernel"):
        Trainer(tiny("train.lora.rank=2", "train.lora.targets=('nothing/here',)"), str(tmp_path))
    with pytest.raises(ValueError, match=r"train\.lora\.dropout"):
        Trainer(tiny("train.lora.rank=2", "train.lora.dropout=1.0"), str(tmp_path))


def test_zero_b_equals_the_base_at_step_0(base, tmp_path):
    """init_from a plain run: base weights restored, adapters fresh (B = 0): logits and loss are the base's."""
    trainer = Trainer(tiny("train.steps=4", f"train.init_from={base}", *LORA), str(tmp_path))
    loss_fn = trainer.loss_fn

    @jax.jit
    def outputs(model, batch):
        h = model.hidden(batch)
        loss, _ = loss_fn(model, batch, jax.random.key(0), trainer.kind.loss_totals(batch))
        return [loss, model.text_logits(h)] + list(model.audio_logits(h, batch["audio_codes"]))

    with trainer.scope():
        batch = {k: jnp.asarray(v) for k, v in next(iter(trainer.dataset())).items()}
        state = trainer.fresh_state()
        got = outputs(nnx.merge(trainer.graphdef, state["model"]), batch)
        plain = runs.load(base, mesh=trainer.mesh)
        assert run_lora.settings(plain.cfg.train.lora) is None
        want = outputs(plain.model, batch)
    assert float(got[0]) > 0
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_only_adapters_train_from_the_init_run(base, lora_run):
    _, workdir, result = lora_run
    assert result.step == 4 and all(np.isfinite(m["loss"]) for m in result.metrics)
    before, after = leaves(base, 2), leaves(workdir, 4)
    adapters = {p for p in after if p[-1] in (lora.A, lora.B)}
    assert adapters and set(after) - adapters == set(before)
    for p in before:   # the frozen base: bit-identical after 4 steps
        assert after[p].tobytes() == before[p].tobytes(), "/".join(p)
    moved = [p for p in adapters if p[-1] == lora.B and np.abs(after[p]).max() > 0]
    assert len(moved) == len(adapters) // 2    # every B left zero: the adapters trained


@pytest.mark.slow
def test_resume_of_a_lora_run_is_exact(lora_run):
    cfg, full_dir, full = lora_run
    split = full_dir.parent / "lora_split"
    first = train(cfg, str(split), quiet=True, stop_after=2)
    second = train(cfg, str(split), quiet=True)
    assert [m["step"] for m in second.metrics] == [3, 4]
    np.testing.assert_array_equal([m["loss"] for m in first.metrics + second.metrics],
                                  [m["loss"] for m in full.metrics])
    a, b = leaves(full_dir, 4), leaves(split, 4)
    assert all(a[p].tobytes() == b[p].tobytes() for p in a)


@pytest.mark.torch
def test_merged_export_loads_strict_and_equals_the_adapter_forward(lora_run, tmp_path):
    import torch

    from tests.torch_ref.lm import OmniLM

    _, workdir, _ = lora_run
    summary = export(str(workdir), str(tmp_path / "merged"), log=None)
    assert summary["merged_adapters"] == 7 * 1 + 4     # the LLM layer's 7 projections, the audio head's 4
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert config["bajax"]["train"]["lora"]["rank"] == 0     # plain weights: re-imports as a plain run
    ref = OmniLM(config).eval()
    ref.load_state_dict(torch_state(tmp_path / "merged"), strict=True)
    loaded = runs.load(workdir)                               # the LoRA run itself: base + adapters
    batch = lm_batch(loaded.cfg)
    with runs.scope(runs.inference_mesh(loaded.cfg), loaded.cfg):
        got = lm_logits(loaded.model, batch)
    tokens, codes = np.array(batch["tokens"]), np.array(batch["audio_codes"])
    pad = special_tokens.ids_for(loaded.cfg.model.vocab, loaded.cfg.model.vocab_size)["audio_pad"]
    with torch.no_grad():
        h = ref.model(torch.from_numpy(tokens.copy()), torch.from_numpy(codes.copy()), pad)
        want = [ref.lm_head(h).numpy()] + [x.numpy().reshape(*tokens.shape, -1) for x in ref.audio_head(
            h.reshape(-1, h.shape[-1]), torch.from_numpy(codes.reshape(-1, 8)), ref.model.audio_embed_layers)]
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * np.abs(w).max(), err_msg=f"output {k}")


def test_adapters_only_export_in_peft_names(base, lora_run, tmp_path):
    """adapter_model.safetensors: merged = base + lora_alpha / r * lora_B @ lora_A for every adapted module (with
    rank_pattern / alpha_pattern for W_pack and in_proj, which concatenate q|k|v); nothing else changes."""
    _, workdir, _ = lora_run
    export(str(workdir), str(tmp_path / "merged"), log=None)
    export(str(base), str(tmp_path / "base"), log=None)
    summary = export_adapters(str(workdir), str(tmp_path / "adapters"), log=None)
    assert summary["files"] == ["adapter_model.safetensors"]
    config = json.loads((tmp_path / "adapters" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8.0
    assert config["rank_pattern"]["model.layers.0.self_attn.W_pack"] == 12
    assert config["alpha_pattern"]["audio_head.transformer_layers.1.self_attention"] == 24.0
    adapters, merged, plain = (Reader(tmp_path / d) for d in ("adapters", "merged", "base"))
    modules = set()
    for name in adapters:
        assert name.startswith("base_model.model.") and name.endswith((".lora_A.weight", ".lora_B.weight")), name
        modules.add(name.removeprefix("base_model.model.").rsplit(".lora_", 1)[0])
    assert modules == set(config["target_modules"])
    assert {"model.layers.1.mlp.down_proj", "audio_head.transformer_layers.0.self_attention.out_proj"} <= modules
    for module in modules:
        a = adapters.get(f"base_model.model.{module}.lora_A.weight")
        b = adapters.get(f"base_model.model.{module}.lora_B.weight")
        r = config["rank_pattern"].get(module, config["r"])
        alpha = config["alpha_pattern"].get(module, config["lora_alpha"])
        assert a.shape[0] == b.shape[1] == r
        tensor = module + ".weight" if module + ".weight" in set(merged.keys()) else module + ".in_proj_weight"
        want = plain.get(tensor).astype(np.float64) + alpha / r * (b.astype(np.float64) @ a.astype(np.float64))
        np.testing.assert_allclose(merged.get(tensor), want, rtol=1e-6, atol=1e-6, err_msg=tensor)
    adapted = {m + ".weight" for m in modules} | {m + ".in_proj_weight" for m in modules}
    for tensor in merged:
        if tensor not in adapted:
            assert merged.get(tensor).tobytes() == plain.get(tensor).tobytes(), tensor


def test_flow_decoder_adapters_merge_exactly(tmp_path):
    """The same transform on another kind: a flow decoder with trained-looking adapters (B != 0), exported merged
    and imported back as a plain model, computes what the adapted model computes."""
    cfg = tiny("train.lora.rank=2", "train.lora.alpha=4.0", path=TINY_FLOW)
    kind = models.get("flow")
    model = perturb(run_lora.build(kind, cfg.model, nnx.Rngs(0), {}, cfg.train.lora), scale=0.1)
    n_adapted = sum(isinstance(v, lora.Adapter) for _, v in nnx.to_flat_state(nnx.state(model)))
    assert n_adapted >= 2 * 4 * 3    # Pre-Net and U-Net attention (and FFN) projections
    run = write_model_run(tmp_path / "run", cfg, model)
    export(run, str(tmp_path / "merged"), log=None)
    import_torch(str(tmp_path / "merged"), str(tmp_path / "back"), log=None)
    plain = runs.load(tmp_path / "back")
    assert run_lora.settings(plain.cfg.train.lora) is None
    rng = np.random.default_rng(0)
    b, t = 2, 40
    cond = jnp.asarray(rng.standard_normal((b, t // 2, cfg.model.cond_dim)), jnp.float32)
    mel = jnp.asarray(rng.standard_normal((b, t, cfg.model.n_mels)), jnp.float32)
    lengths = jnp.asarray([t, t - 7], jnp.int32)
    args = (cond, jnp.asarray([t // 2, t // 2 - 3], jnp.int32), mel, lengths, jax.random.key(3))
    want = model.loss_sums(*args)
    with runs.scope(runs.inference_mesh(plain.cfg), plain.cfg):
        got = plain.model.loss_sums(*args)
    for k in want:
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want[k]), rtol=1e-5, err_msg=k)


def test_plan_counts_adapters_only_on_one_gpu():
    """`bajax plan` of a LoRA config: trainable = the adapters, optimizer state and gradients theirs alone."""
    from bajax.train import plan

    gpu = plan.parse_topology("h100x1")
    assert (gpu.devices, gpu.hosts, gpu.accel.hbm_bytes, gpu.accel.peak_flops) == (1, 1, 80e9, 989e12)
    mesh = {"data": 1, "fsdp": 1, "tensor": 1}
    full = plan.plan(tiny(), gpu, mesh)
    adapted = plan.plan(tiny(*LORA), gpu, mesh)
    n_adapters = sum(np.prod(r["shape"]) for r in adapted.table if r["path"].endswith(("lora_a", "lora_b")))
    assert adapted.n_trainable == n_adapters and adapted.n_params == full.n_params + n_adapters
    assert 2 * 4 * n_adapters <= adapted.opt_bytes <= 2 * 4 * n_adapters + 64   # Adam's 2 fp32 moments + counters
    assert adapted.grads_bytes == 4 * n_adapters
    assert full.opt_bytes >= 2 * 4 * full.n_params


def test_merging_reader_on_stacked_and_per_layer_reads():
    """Export reads a kernel per layer (index) or whole (stacked dims left): both merge kernel + scale * A B."""
    from bajax.interop.adapters import MergingReader

    rng = np.random.default_rng(0)
    k = ("blk", "q", "kernel")
    arrays = {k: rng.standard_normal((3, 5, 2, 4)).astype(np.float32),          # [layers, in, heads, head_dim]
              ("blk", "q", "lora_a"): rng.standard_normal((3, 5, 2)).astype(np.float32),
              ("blk", "q", "lora_b"): rng.standard_normal((3, 2, 2, 4)).astype(np.float32)}

    class Plain:
        def read(self, leaf, index=()):
            return arrays[leaf][index]

    reader = MergingReader(Plain(), {k: (("blk", "q", "lora_a"), ("blk", "q", "lora_b"))}, 0.5)
    want = arrays[k] + 0.5 * np.einsum("lir,lrhd->lihd", arrays[("blk", "q", "lora_a")], arrays[("blk", "q", "lora_b")])
    np.testing.assert_allclose(reader.read(k), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(reader.read(k, (1,)), want[1], rtol=1e-6, atol=1e-6)

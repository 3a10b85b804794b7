"""Weight decay: which parameters of each model decay (matrices, kernels, embeddings; never norm scales or
biases, whatever layer stacking does to their rank), and that a decay-only step leaves the others unchanged."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from bajax import config, models
from bajax.train import optim
from bajax.train.freeze import path_str

# The built-in model kinds and how to build one (shapes only; no frozen helpers are loaded).
KINDS = tuple(models.registry.BUILTIN)


def build_abstract(kind: str, **model_overrides):
    cfg = config.load(f"configs/{kind}/tiny.py")
    for key, value in model_overrides.items():
        cfg.model[key] = value
    return nnx.eval_shape(lambda: models.get(kind).build_model(cfg.model, nnx.Rngs(0), {}))


def params_of(model) -> nnx.State:
    return nnx.state(model, nnx.Param)


def split_by_decay(params) -> tuple[list[str], list[str]]:
    names = [path_str(p) for p, _ in nnx.to_flat_state(params)]
    decayed = set(optim.decayed_paths(params))
    return sorted(n for n in names if n in decayed), sorted(n for n in names if n not in decayed)


# Leaves that must never decay: norm scales/weights, every bias, weight-norm gains and Snake alphas.
NO_DECAY = re.compile(r"(.*norm[^/]*(/\d+)?/(weight|scale|bias)|.*/bias\d*|.*/scale|.*/weight_g|.*/alpha)")
# Leaves that must decay: attention projections, MLP / FFN weights, convolution kernels (weight-normed ones'
# directions too), embeddings, heads.
DECAY = re.compile(r".*/(kernel|embedding|linear\d|weight_v)")

CASES = [(kind, {}) for kind in KINDS] + [("lm", {"audio_head_ffn_bias": True})]


@pytest.mark.parametrize(("kind", "overrides"), CASES, ids=lambda x: x if isinstance(x, str) else
                         ",".join(f"{k}={v}" for k, v in x.items()) or "tiny")
def test_decay_rule_per_model(kind, overrides):
    params = params_of(build_abstract(kind, **overrides))
    decayed, kept = split_by_decay(params)
    assert decayed and kept
    wrongly_decayed = [n for n in decayed if NO_DECAY.fullmatch(n)]
    assert not wrongly_decayed, f"{kind}: norm scales / biases decay: {wrongly_decayed}"
    missed = [n for n in kept if DECAY.fullmatch(n)]
    assert not missed, f"{kind}: weight matrices that do not decay: {missed}"
    # Every leaf is one or the other kind: the rule leaves nothing unclassified.
    unknown = [n for n in decayed + kept if not (NO_DECAY.fullmatch(n) or DECAY.fullmatch(n))]
    assert not unknown, f"{kind}: parameters neither pattern names: {unknown}"
    # Stacked layers turn vectors into [L, d] (and q/k/v biases into [L, heads, head_dim]): still kept.
    # (The vocoder has no stacked layers: its gains and Snake alphas are plain vectors.)
    flat = dict((path_str(p), v) for p, v in nnx.to_flat_state(params))
    if kind != "vocoder":
        assert any(flat[n].ndim >= 2 for n in kept), "no stacked vector in this model: the test proves little"


def test_decay_rule_examples():
    def decays(name, axes):
        return optim.decays((jax.tree_util.DictKey(name),),
                            nnx.Param(jnp.zeros((2,) * len(axes)), logical_axes=axes))

    assert decays("kernel", ("layers", "embed", "mlp"))
    assert decays("kernel", ("layers", "embed", "heads", "head_dim"))
    assert decays("kernel", ("kernel", "conv_in", "conv_out"))
    assert decays("embedding", ("vocab", "embed"))
    assert decays("linear1", ("layers", "depth", "embed", "mlp"))
    assert not decays("weight", ("layers", "norm"))
    assert not decays("scale", ("layers", "layers", "norm"))
    assert not decays("bias", ("layers", "heads", "head_dim"))
    assert not decays("bias1", ("layers", "depth", "mlp"))
    assert not decays("bias", ("layers", "embed"))
    assert not decays("w", ("layers", "embed"))  # a per-layer vector whatever its name


def test_bare_arrays_decided_by_path():
    tree = {"layers": {"input_layernorm": {"weight": jnp.ones((2, 4))},
                       "mlp": {"up_proj": {"kernel": jnp.ones((2, 4, 8)), "bias": jnp.ones((2, 8))}}}}
    mask = optim.decay_mask(tree)
    assert mask == {"layers": {"input_layernorm": {"weight": False},
                               "mlp": {"up_proj": {"kernel": True, "bias": False}}}}


def test_decay_only_update_keeps_norm_scales_and_shrinks_matrices():
    """Zero gradients, lr > 0: AdamW's update is the decay alone. Norm scales and biases (stacked [L, d]) stay
    exactly as they were; matrices shrink by lr * weight_decay."""
    cfg = config.defaults("lm").optim
    cfg.weight_decay, cfg.lr, cfg.warmup_steps, cfg.clip_norm = 0.5, 0.1, 0, 0.0
    tx = optim.make_optimizer(cfg, total_steps=10)

    class Block(nnx.Module):
        def __init__(self):
            self.norm = nnx.Param(jnp.full((3, 4), 2.0), logical_axes=("layers", "norm"))
            self.bias = nnx.Param(jnp.full((3, 2, 4), 2.0), logical_axes=("layers", "heads", "head_dim"))
            self.kernel = nnx.Param(jnp.full((3, 4, 2, 4), 2.0), logical_axes=("layers", "embed", "heads",
                                                                               "head_dim"))

    params = nnx.state(Block(), nnx.Param)
    opt_state = tx.init(params)
    grads = jax.tree.map(jnp.zeros_like, params)

    @jax.jit
    def step(params, opt_state, grads):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    new, _ = step(params, opt_state, grads)
    lr0 = float(optim.schedule(cfg, 10)(0))
    assert lr0 > 0
    np.testing.assert_array_equal(new["norm"].get_value(), params["norm"].get_value())
    np.testing.assert_array_equal(new["bias"].get_value(), params["bias"].get_value())
    np.testing.assert_allclose(new["kernel"].get_value(), 2.0 * (1 - lr0 * 0.5), rtol=1e-6)
    assert new["norm"].get_metadata()["logical_axes"] == ("layers", "norm")

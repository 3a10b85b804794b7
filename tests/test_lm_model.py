"""Audio LLM: parameter metadata, audio head causality, KV-cached decoding, losses, sampling, HF parity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bajax import kernels, sharding
from bajax.kernels import depth_attention
from bajax.layers.linear import Embedding
from bajax.lm import audio_head, flops, generate, special_tokens
from bajax.lm import batch as lm_batch
from bajax.lm.config import default_model_config
from bajax.lm.losses import lm_loss, loss_totals
from bajax.lm.model import AudioLLM
from tests import hf_qwen2_ref

CODEBOOKS = (16, 12, 8, 8, 8, 8, 8, 8)


def tiny_cfg(**overrides):
    cfg = default_model_config()
    cfg.update(dict(hidden=32, layers=2, heads=4, kv_heads=2, head_dim=8, mlp=64, codebook_sizes=CODEBOOKS,
                    audio_head_layers=2, audio_head_heads=2))
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="module")
def model():
    return AudioLLM(tiny_cfg(), rngs=nnx.Rngs(0))


def _audio_pad(cfg):
    return special_tokens.ids_for(cfg.vocab, cfg.vocab_size)["audio_pad"]


def make_batch(cfg, b=2, t=12, seed=0):
    """Rows mixing text and audio frames (tokens 3..7 of each row are audio_pad with random codes)."""
    rng = np.random.default_rng(seed)
    batch = lm_batch.empty(b, t)
    batch["tokens"][:] = rng.integers(0, 256, (b, t))
    batch["tokens"][:, 3:8] = _audio_pad(cfg)
    codes = np.stack([rng.integers(0, c, (b, t)) for c in CODEBOOKS], -1)
    batch["audio_codes"][:, 3:8] = codes[:, 3:8]
    batch["positions"][:] = np.arange(t)
    batch["segment_ids"][:] = 1
    batch["text_targets"][:] = rng.integers(0, 256, (b, t))
    batch["text_weights"][:] = rng.random((b, t)) > 0.3
    batch["audio_targets"][:] = np.stack([rng.integers(0, c + 1, (b, t)) for c in CODEBOOKS], -1)
    batch["audio_weights"][:] = rng.random((b, t, 8)) > 0.3
    lm_batch.check(batch)
    return {k: jnp.asarray(v) for k, v in batch.items()}


def test_every_param_has_logical_axes(model):
    rules = dict(sharding.DEFAULT_RULES)
    for path, var in jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param),
                                                         is_leaf=lambda x: isinstance(x, nnx.Variable)):
        axes = var.get_metadata().get("logical_axes")
        assert axes is not None, path
        assert len(axes) == var.get_value().ndim, (path, axes, var.get_value().shape)
        assert all(a is None or a in rules for a in axes), (path, axes)
    assert model.layers.layers.self_attn.q_proj.kernel.get_metadata()["logical_axes"][0] == "layers"


def test_audio_frames_embed_as_sum_of_code_embeddings(model):
    cfg = tiny_cfg()
    tokens = jnp.array([[5, _audio_pad(cfg)]])
    codes = jnp.array([[[1] * 8, [3, 2, 1, 0, 4, 5, 6, 7]]])
    x = model.embed(tokens, codes)
    want = sum(model.audio_embed[k].embedding[...][int(codes[0, 1, k])] for k in range(8))
    np.testing.assert_allclose(np.asarray(x[0, 1]), np.asarray(want), atol=1e-6)
    np.testing.assert_allclose(np.asarray(x[0, 0]), np.asarray(model.embed_tokens.embedding[...][5]))


@pytest.mark.parametrize("k", [0, 3, 6])
def test_audio_head_is_causal_over_codebooks(model, k):
    """Changing code k changes no logits of codebooks <= k and does change codebook k + 1."""
    rng = np.random.default_rng(k)
    h = jnp.asarray(rng.normal(size=(4, 32)), jnp.float32)
    codes = jnp.asarray(np.stack([rng.integers(0, c, 4) for c in CODEBOOKS], -1))
    changed = codes.at[:, k].set((codes[:, k] + 1) % CODEBOOKS[k])
    a = model.audio_head(h, codes, model.audio_embed)
    b = model.audio_head(h, changed, model.audio_embed)
    for j in range(k + 1):
        np.testing.assert_array_equal(np.asarray(a[j]), np.asarray(b[j]))
    assert np.abs(np.asarray(a[k + 1]) - np.asarray(b[k + 1])).max() > 1e-4
    # the truncated head used for sampling computes the same logits
    part = model.audio_head(h, codes, model.audio_embed, num_positions=k + 1)
    np.testing.assert_allclose(np.asarray(part[k]), np.asarray(a[k]), atol=1e-5)


@pytest.mark.parametrize("positions", [8, 3])
@pytest.mark.slow
def test_depth_attention_equals_masked_softmax_attention(positions):
    """The pairwise depth attention over slices (hand-written backward, score scale applied inside)
    against einsum attention with a causal mask over the stacked depth axis and pre-scaled queries."""
    rng = np.random.default_rng(positions)
    q, k, v, w = (jnp.asarray(rng.normal(size=(positions, 6, 3, 16)), jnp.float32) for _ in range(4))
    causal = jnp.tril(jnp.ones((positions, positions), bool))

    def reference(q, k, v):
        scores = jnp.where(causal, jnp.einsum("qnhd,knhd->nhqk", q * 16 ** -0.5, k), -jnp.inf)
        return jnp.einsum("nhqk,knhd->qnhd", jax.nn.softmax(scores, axis=-1), v)

    def on_slices(q, k, v):
        return jnp.stack(depth_attention(list(q), list(k), list(v), 16 ** -0.5))

    def value_and_grads(fn):
        return jax.value_and_grad(lambda *a: jnp.sum(fn(*a) * w), argnums=(0, 1, 2))(q, k, v)

    np.testing.assert_allclose(on_slices(q, k, v), reference(q, k, v), rtol=1e-5, atol=1e-6)
    (got, got_grads), (want, want_grads) = value_and_grads(on_slices), value_and_grads(reference)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for name, g, r in zip("qkv", got_grads, want_grads):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5, err_msg=f"d{name}")


@pytest.mark.parametrize("ffn_bias", [False, True])
@pytest.mark.slow
def test_audio_head_per_slice_and_stacked_projections_agree(monkeypatch, ffn_bias):
    """Long depth slices run a matmul each, short ones one stacked matmul: same logits and gradients (in
    float64, so the two summation orders agree to rounding)."""
    with jax.enable_x64(True):
        rngs = nnx.Rngs(1)
        head = audio_head.AudioHead(32, 2, 2, CODEBOOKS, eps=1e-6, ffn_bias=ffn_bias, dtype=jnp.float64,
                                    rngs=rngs)
        tables = nnx.List([Embedding(c + 1, 32, axes=("codebook", "embed"), dtype=jnp.float64, rngs=rngs)
                           for c in CODEBOOKS])
        graphdef, params = nnx.split((head, tables))
        # float64, and every parameter perturbed so that the zero-initialised biases matter too
        params = jax.tree.map(lambda p: p.astype(jnp.float64) + 0.05 * jnp.sin(jnp.arange(p.size).reshape(p.shape)),
                              params)
        rng = np.random.default_rng(0)
        h = jnp.asarray(rng.normal(size=(24, 32)), jnp.float64)
        codes = jnp.asarray(np.stack([rng.integers(0, c + 1, 24) for c in CODEBOOKS], -1))

        def loss(params):
            head, tables = nnx.merge(graphdef, params)
            logits = head(h, codes, tables)
            return sum(jnp.sum(jax.nn.log_softmax(lg)[:, 0] * (k + 1)) for k, lg in enumerate(logits))

        stacked = jax.value_and_grad(loss)(params)
        monkeypatch.setattr(kernels.cpu, "STACK_ROWS", 0)
        per_slice = jax.value_and_grad(loss)(params)
    np.testing.assert_allclose(per_slice[0], stacked[0], rtol=1e-12)
    for got, want in zip(jax.tree.leaves(per_slice[1]), jax.tree.leaves(stacked[1])):
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_kv_cached_decoding_equals_full_forward():
    cfg = tiny_cfg()
    model = AudioLLM(cfg, rngs=nnx.Rngs(1))
    batch = make_batch(cfg, b=2, t=12, seed=1)
    # row 1 is left-padded by two tokens (segment 0) and its positions start after the padding
    seg = batch["segment_ids"].at[1, :2].set(0)
    pos = batch["positions"].at[1].set(jnp.maximum(jnp.arange(12) - 2, 0))
    batch = dict(batch, segment_ids=seg, positions=pos)
    h_full = model.hidden(batch)
    cache = model.init_cache(2, 16)
    h_pre, cache = generate.prefill(model, batch["tokens"][:, :5], batch["audio_codes"][:, :5],
                                    pos[:, :5], seg[:, :5], cache)
    steps = [h_pre]
    for t in range(5, 12):
        h_t, cache = generate.step(model, batch["tokens"][:, t], batch["audio_codes"][:, t], pos[:, t],
                                   seg[:, t], cache)
        steps.append(h_t[:, None])
    h_inc = jnp.concatenate(steps, axis=1)
    assert int(cache.index) == 12
    real = np.asarray(seg) > 0
    np.testing.assert_allclose(np.asarray(h_inc)[real], np.asarray(h_full)[real], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(model.text_logits(h_inc))[real],
                               np.asarray(model.text_logits(h_full))[real], atol=1e-5, rtol=1e-5)
    for a, b in zip(model.audio_logits(h_inc, batch["audio_targets"]),
                    model.audio_logits(h_full, batch["audio_targets"]), strict=True):
        np.testing.assert_allclose(np.asarray(a)[real], np.asarray(b)[real], atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_scan_and_loop_models_agree():
    batch = make_batch(tiny_cfg(), seed=2)
    a = AudioLLM(tiny_cfg(), rngs=nnx.Rngs(3))
    b = AudioLLM(tiny_cfg(scan_layers=False, remat="full"), rngs=nnx.Rngs(3))
    (la, _), ga = nnx.value_and_grad(lm_loss, has_aux=True)(a, batch)
    (lb, _), gb = nnx.value_and_grad(lm_loss, has_aux=True)(b, batch)
    np.testing.assert_allclose(la, lb, rtol=1e-5)
    for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)


def test_loss_matches_manual_cross_entropy(model):
    cfg = tiny_cfg()
    batch = make_batch(cfg, seed=4)
    loss, m = lm_loss(model, batch, text_loss_weight=0.5, audio_loss_weight=2.0)
    h = model.hidden(batch)
    logp = np.asarray(jax.nn.log_softmax(model.text_logits(h)))
    tgt, tw = np.asarray(batch["text_targets"]), np.asarray(batch["text_weights"])
    ce = -np.take_along_axis(logp, tgt[..., None], -1)[..., 0]
    text = (ce * tw).sum() / tw.sum()
    aw, at = np.asarray(batch["audio_weights"]), np.asarray(batch["audio_targets"])
    num = 0.0
    for k, lg in enumerate(model.audio_logits(h, batch["audio_targets"])):
        lp = np.asarray(jax.nn.log_softmax(lg))
        num += (-np.take_along_axis(lp, at[..., k:k + 1], -1)[..., 0] * aw[..., k]).sum()
    audio = num / aw.sum()
    np.testing.assert_allclose(m["text_loss"], text, rtol=1e-5)
    np.testing.assert_allclose(m["audio_loss"], audio, rtol=1e-5)
    np.testing.assert_allclose(loss, 0.5 * text + 2.0 * audio, rtol=1e-5)
    assert {f"audio_acc_{k}" for k in range(8)} <= set(m) and {f"audio_loss_{k}" for k in range(8)} <= set(m)


def test_loss_is_additive_over_micro_batches(model):
    """With the full batch's totals, micro-batch losses and metrics sum to the full-batch values."""
    batch = make_batch(tiny_cfg(), b=4, seed=6)
    totals = loss_totals(batch)
    loss, m = lm_loss(model, batch)
    halves = [lm_loss(model, {k: v[i:i + 2] for k, v in batch.items()}, totals) for i in (0, 2)]
    np.testing.assert_allclose(halves[0][0] + halves[1][0], loss, rtol=1e-5)
    for key in ("text_loss", "audio_loss", "audio_acc_3", "audio_loss_0", "text_tokens"):
        np.testing.assert_allclose(halves[0][1][key] + halves[1][1][key], m[key], rtol=1e-5, err_msg=key)


def test_all_zero_weights_give_finite_loss_and_grads(model):
    batch = make_batch(tiny_cfg(), seed=5)
    batch = dict(batch, text_weights=jnp.zeros_like(batch["text_weights"]),
                 audio_weights=jnp.zeros_like(batch["audio_weights"]))
    (loss, m), grads = nnx.value_and_grad(lm_loss, has_aux=True)(model, batch)
    assert float(loss) == 0.0
    assert all(np.isfinite(np.asarray(v)).all() for v in m.values())
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("sampling", [generate.GREEDY, generate.Sampling(1.0, top_k=0, top_p=1.0)])
def test_only_codebook_0_can_end_audio(sampling):
    model = AudioLLM(tiny_cfg(), rngs=nnx.Rngs(2))
    for head, c in zip(model.audio_head.heads, CODEBOOKS, strict=True):  # every head prefers end-of-audio
        head.bias[...] = jnp.zeros(c + 1).at[c].set(1e4)
    h = jnp.asarray(np.random.default_rng(0).normal(size=(3, 32)), jnp.float32)
    codes = np.asarray(generate.sample_frame(model, h, jax.random.key(0), sampling))
    assert (codes[:, 0] == CODEBOOKS[0]).all()
    for k in range(1, 8):
        assert (codes[:, k] < CODEBOOKS[k]).all()


def test_sample_logits_filters():
    logits = jnp.array([[0.0, 3.0, 2.9, -1.0, 2.8]])
    keys = jax.random.split(jax.random.key(0), 64)
    draw = lambda s, hist=None: np.array([int(generate.sample_logits(logits, k, s, hist)[0]) for k in keys])
    assert set(draw(generate.Sampling(temperature=1.0, top_k=2, top_p=1.0, repetition_penalty=1.0))) <= {1, 2}
    assert set(draw(generate.Sampling(temperature=1.0, top_k=0, top_p=0.01, repetition_penalty=1.0))) == {1}
    # the penalty divides the seen logit 3.0 by 2 -> the greedy choice moves to id 2
    hist = jnp.array([[1, -1]])
    assert int(generate.sample_logits(logits, keys[0], generate.Sampling(0.0, 0, 1.0, 2.0), hist)[0]) == 2
    assert int(generate.sample_logits(logits, keys[0], generate.GREEDY, hist)[0]) == 1


def test_flops_count_matches_model_matmul_params(model):
    cfg = tiny_cfg()
    flat = nnx.to_flat_state(nnx.state(model.layers, nnx.Param))
    n = sum(v.get_value().size for path, v in flat if path[-1] == "kernel")
    assert flops.backbone_matmul_params(cfg) == n + model.lm_head.kernel[...].size
    f = flops.train_flops_per_token(cfg, 128)
    assert f["total"] == f["backbone"] + f["attention"] + f["audio_head"]
    assert f["attention"] == 6 * cfg.layers * 128 * cfg.heads * cfg.head_dim


@pytest.mark.torch
def test_text_logits_match_hf_qwen2():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = tiny_cfg()
    hf_cfg = transformers.Qwen2Config(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden,
                                      intermediate_size=cfg.mlp, num_hidden_layers=cfg.layers,
                                      num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads,
                                      rope_theta=cfg.rope_theta, rms_norm_eps=cfg.norm_eps,
                                      tie_word_embeddings=False, max_position_embeddings=64)
    torch.manual_seed(0)
    hf = transformers.Qwen2ForCausalLM(hf_cfg).eval()
    with torch.no_grad():  # random biases and norm weights too, so every mapped tensor matters
        for name, p in hf.named_parameters():
            p.copy_(1.0 + 0.2 * torch.randn_like(p) if "norm" in name else 0.2 * torch.randn_like(p))
    tensors = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    model = AudioLLM(cfg, rngs=nnx.Rngs(0))
    hf_qwen2_ref.load_into(model, hf_qwen2_ref.qwen2_to_bajax(tensors, cfg))
    back = hf_qwen2_ref.bajax_to_qwen2(nnx.to_pure_dict(nnx.state(model, nnx.Param)), cfg)
    for k, v in tensors.items():
        np.testing.assert_array_equal(back[k], v, err_msg=k)

    ids = np.random.default_rng(0).integers(0, 256, (2, 10))
    with torch.no_grad():
        want = hf(torch.from_numpy(ids)).logits.numpy()
    batch = {"tokens": jnp.asarray(ids, jnp.int32), "audio_codes": jnp.zeros((2, 10, 8), jnp.int32),
             "positions": jnp.tile(jnp.arange(10, dtype=jnp.int32), (2, 1)),
             "segment_ids": jnp.ones((2, 10), jnp.int32)}
    got = np.asarray(model.text_logits(model.hidden(batch)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())

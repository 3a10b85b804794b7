"""Flow decoder interop: export -> PyTorch (reference structure, strict=True): Pre-Net prior and estimator
velocity within 1e-4, a full 10-step guided sample with fixed noise within 1e-3; export -> import bitwise."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bajax.config import defaults
from bajax.flow import cfm
from bajax.flow.model import FlowDecoder
from bajax.interop.export import export
from bajax.interop.import_torch import import_torch
from tests.interop_util import assert_runs_bitwise_equal, perturb, torch_state, write_model_run

pytestmark = pytest.mark.torch
T = 120          # > the attention chunk (100): block-causal attention across two chunks


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flow")
    cfg = defaults("flow")
    model = perturb(FlowDecoder(cfg.model, rngs=nnx.Rngs(0)), scale=0.1)
    run = write_model_run(tmp / "run", cfg, model)
    export(run, str(tmp / "export"), log=None)
    ref = _ref(tmp / "export")
    return cfg, model, run, tmp / "export", ref


def _ref(out):
    from tests.torch_ref.flow import FlowRef

    ref = FlowRef(json.loads((out / "config.json").read_text())).eval()
    ref.load_state_dict(torch_state(out), strict=True)
    return ref.audio_tokenizer.audio_flow_matching_decoder


def test_velocity_matches(flow_run):
    import torch

    _, model, _, _, ref = flow_run
    rng = np.random.default_rng(0)
    x, mu = (rng.standard_normal((2, T, 80)).astype(np.float32) for _ in range(2))
    t = np.array([0.3, 0.8], np.float32)
    got = np.asarray(model.estimator(jnp.asarray(x), jnp.asarray(mu), jnp.asarray(t), jnp.ones((2, T), bool)))
    with torch.no_grad():
        want = ref.conditional_decoder(torch.from_numpy(x).transpose(1, 2), torch.ones(2, 1, T),
                                       torch.from_numpy(mu).transpose(1, 2), torch.from_numpy(t))
    want = want.transpose(1, 2).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_ten_step_sample_with_fixed_noise_matches(flow_run):
    import torch

    from tests.torch_ref.flow import euler

    _, model, _, _, ref = flow_run
    rng = np.random.default_rng(1)
    cond = rng.standard_normal((1, 75, 80)).astype(np.float32)
    noise = rng.standard_normal((1, T, 80)).astype(np.float32)
    valid = jnp.ones((1, T), bool)
    mu = model.prior(jnp.asarray(cond), jnp.array([75]), jnp.array([T]), T)
    got = np.asarray(cfm.euler_sample(model.estimator, mu, valid, jnp.asarray(noise), steps=10, guidance=0.7))
    with torch.no_grad():
        mu_t = ref.prenet(torch.from_numpy(cond), T)
        want = euler(ref.conditional_decoder, torch.from_numpy(noise).transpose(1, 2), mu_t.transpose(1, 2),
                     torch.ones(1, 1, T), 10, 0.7).transpose(1, 2).numpy()
    np.testing.assert_allclose(np.asarray(mu), mu_t.numpy(), rtol=1e-4, atol=1e-4 * np.abs(mu_t.numpy()).max())
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


@pytest.mark.slow
def test_export_then_import_is_bitwise(flow_run, tmp_path):
    _, _, run, out, _ = flow_run
    back = import_torch(str(out), str(tmp_path / "back"), log=None)
    assert assert_runs_bitwise_equal(run, back) > 40

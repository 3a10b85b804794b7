"""Analytic tokenizer FLOPs against XLA's own count of the compiled forward (unscanned layers)."""

import jax
import jax.numpy as jnp
from flax import nnx

from bajax.tokenizer.config import default_model_config
from bajax.tokenizer.flops import forward_flops
from bajax.tokenizer.model import Tokenizer


def test_formula_counts_the_matmuls_xla_sees():
    m = default_model_config()
    m.d_model, m.encoder_ffn, m.decoder_ffn, m.scan_layers = 128, 512, 512, False   # XLA counts a scan once
    graphdef, state = nnx.split(Tokenizer(m, rngs=nnx.Rngs(0)))
    k = 50
    f = forward_flops(m, k)

    def xla(fn, *shapes):
        return jax.jit(fn).lower(state, *shapes).compile().cost_analysis()["flops"]

    enc = xla(lambda s, x: nnx.merge(graphdef, s).encoder(x, jnp.array([8 * k]))[0],
              jax.ShapeDtypeStruct((1, 8 * k, m.n_mels), jnp.float32))
    dec = xla(lambda s, c: nnx.merge(graphdef, s).decode(c, jnp.array([k]))["refined_mel"],
              jax.ShapeDtypeStruct((1, k, 8), jnp.int32))
    proj_decoder = 2 * k * m.d_model * m.pool * m.d_model
    # The formula leaves out norms, softmax and elementwise ops: a little below XLA, never above.
    for formula, measured in ((f["encoder"], enc), (f["decoder"] + proj_decoder, dec)):
        assert 0.85 * measured <= formula <= measured, (formula, measured)

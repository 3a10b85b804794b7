"""bajax/train/frozen_args.py: frozen weights rebound to traced arguments; lowered and compiled programs that
still run as `(*args)`."""

import jax
import jax.numpy as jnp
import numpy as np

from bajax.train import frozen_args


class Scale:
    """A frozen helper in the protocol's shape: `state` and `with_state`."""

    def __init__(self, state):
        self.state = state

    def with_state(self, state):
        return Scale(state)

    def __call__(self, x):
        return x * self.state["w"]


def test_rebound_helpers_read_the_argument_and_bound_programs_run_as_the_callers_args():
    frozen = {"scale": Scale({"w": jnp.arange(3.0)}), "other": "kept as it is"}
    assert frozen_args.states(frozen).keys() == {"scale"}

    def f(x, states):
        helpers = frozen_args.rebind(frozen, states)
        assert helpers["other"] == "kept as it is" and isinstance(helpers["scale"].state["w"], jax.core.Tracer)
        return helpers["scale"](x)

    jitted = jax.jit(f)
    bound = frozen_args.WithFrozen(jitted, jitted, frozen_args.states(frozen))
    x = jnp.ones(3)
    np.testing.assert_array_equal(bound(x), [0.0, 1.0, 2.0])
    lowered = bound.lower(x)
    assert "dense<[0.000000e+00, 1.000000e+00, 2.000000e+00]>" not in lowered.as_text()   # not a constant
    compiled = lowered.compile()
    np.testing.assert_array_equal(compiled(2 * x), [0.0, 2.0, 4.0])
    assert compiled.memory_analysis() is not None          # the compiled program's own attributes

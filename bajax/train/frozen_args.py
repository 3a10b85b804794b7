"""Frozen helper models (`ModelKind.load_frozen`: another run's weights) as ARGUMENTS of compiled functions.

A traced function that merely closes over a helper's arrays bakes them into the compiled program as
constants, and XLA copies constants while compiling: the base tokenizer decoder that conditions a flow run is
0.6 GB, so every compiled train, eval and speech-eval program would carry (and copy) it. Instead the trainer
passes each helper's weights in: `states(frozen)` are the arrays to pass, and inside the traced function
`rebind(frozen, traced)` gives helpers that read the traced arguments. A helper takes part by having a
`state` (its arrays) and `with_state(state)` (the same helper reading other arrays), like
`bajax.tokenizer.encode.FrozenDecoder`; any other helper is left as it is."""

from collections.abc import Mapping


def states(frozen: Mapping) -> dict:
    """{name: arrays} of the helpers that can read their weights from an argument."""
    return {name: helper.state for name, helper in frozen.items() if hasattr(helper, "with_state")}


def rebind(frozen: Mapping, traced: Mapping) -> dict:
    """The helpers of `frozen`, those named in `traced` reading those arrays instead of their own."""
    return {name: helper.with_state(traced[name]) if name in traced else helper for name, helper in frozen.items()}


def bind(jitted, name: str, frozen: Mapping) -> "WithFrozen":
    """`jitted(*args, frozen_states)`, run (across processes: `distributed.compiled_together`) and lowered as
    `(*args)` with the weights of the helpers in `frozen`."""
    from bajax.train import distributed

    return WithFrozen(jitted, distributed.compiled_together(jitted, name), states(frozen))


class WithFrozen:
    """`jitted(*args, frozen_states)` called and lowered as `(*args)`: the frozen weights are one more
    argument of the compiled program, never its constants. `call` is what runs it (`jitted`, or its
    `distributed.compiled_together` form)."""

    def __init__(self, jitted, call, frozen_states: dict):
        self.jitted, self.call, self.frozen_states = jitted, call, frozen_states

    def __call__(self, *args):
        return self.call(*args, self.frozen_states)

    def lower(self, *args) -> "_Bound":
        """The lowering (`.as_text()`, ...), whose `.compile()` runs as `(*args)` too."""
        return _Bound(self.jitted.lower(*args, self.frozen_states), self.frozen_states)


class _Bound:
    """A lowered or compiled program that takes the frozen weights last: called as `(*args)`, everything
    else (`as_text`, `memory_analysis`, `cost_analysis`, ...) is the wrapped object's."""

    def __init__(self, wrapped, frozen_states: dict):
        self._wrapped, self._frozen_states = wrapped, frozen_states

    def compile(self, *args, **kwargs) -> "_Bound":
        return _Bound(self._wrapped.compile(*args, **kwargs), self._frozen_states)

    def __call__(self, *args):
        return self._wrapped(*args, self._frozen_states)

    def __getattr__(self, name):
        return getattr(self._wrapped, name)

"""The registry of model kinds: `register(ModelKind(...))` once per kind, `get(name)` everywhere else.

The built-in kinds register themselves when their module is imported; `get` imports it on first use, so
reading a config does not import every model. A new kind is one module that calls `register` (see the
README's "Adding a model kind").
"""

from __future__ import annotations

import importlib

from bajax.models.spec import ModelKind

# name -> the module whose import registers it
BUILTIN = {
    "lm": "bajax.models.lm",
    "tokenizer": "bajax.models.tokenizer",
    "flow": "bajax.models.flow",
    "vocoder": "bajax.models.vocoder",
}

_KINDS: dict[str, ModelKind] = {}


def register(kind: ModelKind) -> ModelKind:
    """Adds a kind; registering the same name twice with a different spec is an error."""
    old = _KINDS.get(kind.name)
    if old is not None and old is not kind:
        raise ValueError(f"model kind {kind.name!r} is already registered (by {old.build_model.__module__})")
    _KINDS[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    """Removes a kind that is not built in (for tests that register a toy kind)."""
    if name in BUILTIN:
        raise ValueError(f"model kind {name!r} is built in")
    _KINDS.pop(name, None)


def names() -> tuple[str, ...]:
    return tuple(dict.fromkeys([*BUILTIN, *_KINDS]))


def get(name: str) -> ModelKind:
    if name not in _KINDS and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    if name not in _KINDS:
        raise KeyError(f"unknown model kind {name!r}; valid kinds: {list(names())}")
    return _KINDS[name]


def require(got: str, want: str, where: str, noun: str = "run") -> None:
    """Raises a ValueError naming `where` unless a run (or config) of kind `got` is of the `want` kind."""
    if got != want:
        raise ValueError(f"{where} is a {got!r} {noun}, expected a {want!r} {noun}; check which {noun} you passed "
                         "to which flag")

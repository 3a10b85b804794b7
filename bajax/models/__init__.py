"""Model kinds: one `ModelKind` spec per kind, looked up by name (see spec.py and registry.py)."""

from bajax.models.registry import get, names, register, require, unregister
from bajax.models.spec import Field, LossFn, ModelKind, ReferenceLayout, Update, rows_per_process

__all__ = ["Field", "LossFn", "ModelKind", "ReferenceLayout", "get", "names", "register", "require",
           "Update", "rows_per_process", "unregister"]

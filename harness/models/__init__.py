"""Model store: local models materialised offline, and resolution of model references."""

from harness.models.store import (
    BUILTIN_MODELS,
    ModelNotFound,
    ResolvedModel,
    check_reference,
    list_models,
    model_identity,
    prepare,
    resolve,
    short_name,
)

__all__ = [
    "BUILTIN_MODELS",
    "ModelNotFound",
    "ResolvedModel",
    "check_reference",
    "list_models",
    "model_identity",
    "prepare",
    "resolve",
    "short_name",
]

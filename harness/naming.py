"""Names, one grammar for every module that makes or reads them.

* A target's label is its model's label, and for an adapter ``+`` and the adapter's alias:
  ``smol``, ``smol+demo-lora@s0``.
* An adapter trained from a recipe with a seed has the alias ``RECIPE@sSEED`` and lives in the
  folder ``RECIPE-sSEED`` (no ``@`` in paths).
* A label's seed group is what comes before ``@``: every seed of one recipe on one model.
* An adapter is served as ``ALIAS-HASH``, the hash its content's (serve.adapters): a name is
  never reused for other weights.
"""

from __future__ import annotations

TARGET_SEP = "+"
SEED_SEP = "@"


def target_label(model_label: str, adapter_alias: str | None = None) -> str:
    """A target's label: the model's label, plus ``+ALIAS`` for an adapter."""
    return f"{model_label}{TARGET_SEP}{adapter_alias}" if adapter_alias else model_label


def adapter_alias(recipe: str, seed: int) -> str:
    """The alias of the adapter trained from a recipe with a seed: ``RECIPE@sSEED``."""
    return f"{recipe}{SEED_SEP}s{seed}"


def adapter_folder(recipe: str, seed: int) -> str:
    """The folder of the adapter trained from a recipe with a seed: ``RECIPE-sSEED`` (no ``@`` in paths)."""
    return f"{recipe}-s{seed}"


def seed_group(label: str) -> str:
    """A label's seed group (what precedes ``@``): every seed of one recipe on one model."""
    return label.split(SEED_SEP, 1)[0]


def served_adapter_name(alias: str, short_hash: str) -> str:
    """The name an adapter is served under, ``ALIAS-HASH``: never reused for other weights."""
    return f"{alias}-{short_hash}"

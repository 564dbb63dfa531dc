"""The episode and verdict tables: their columns, in order, and each column's type.

One definition for every writer (generation, judging, the study importer) and reader: rows
are built with :func:`row`, which refuses a column the schema does not name, and a run's
tables are cast to these types when written (:class:`harness.runstore.RunStore`), so a column
that holds only nulls in one run has the same type as in every other.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

Schema = Mapping[str, pl.DataType]

_S, _F, _I, _B = pl.Utf8(), pl.Float64(), pl.Int64(), pl.Boolean()

# The columns that identify a cell and its generation path: written on the episode, and copied
# onto each of its verdicts so that statistics over verdicts can check the path.
CELL_TYPES: dict[str, pl.DataType] = {
    "cell_id": _S, "run": _S, "model_label": _S, "base_model": _S, "adapter_hash": _S, "backend": _S, "dtype": _S,
    "task_uid": _S, "skill": _S, "query_type": _S, "condition": _S, "temperature": _F, "max_tokens": _I,
    "repetition_penalty": _F,
}

EPISODE_TYPES: dict[str, pl.DataType] = {
    "cell_id": _S, "run": _S, "model_label": _S, "base_model": _S, "adapter_name": _S, "adapter_hash": _S,
    "backend": _S, "dtype": _S, "task_uid": _S, "skill": _S, "query_type": _S, "condition": _S,
    "prompt_version": _S, "prompt_hash": _S, "temperature": _F, "max_tokens": _I, "repetition_penalty": _F,
    "seed": _I, "response": _S, "think": _S, "final": _S, "finish_reason": _S, "prompt_tokens": _I,
    "completion_tokens": _I, "latency_s": _F, "started_at": _F, "finished_at": _F, "versions": _S,
}

VERDICT_TYPES: dict[str, pl.DataType] = {
    "verdict_id": _S, **CELL_TYPES,
    "judge_label": _S, "mode": _S, "judge_kind": _S, "judge": _S, "prompt_version": _S, "passed": _B, "score": _F,
    "unscored_reason": _S, "rule": _S, "extracted": _S, "rationale": _S, "escalated_from": _S, "criteria_met": _S,
    "prompt_tokens": _I, "completion_tokens": _I, "cost_usd": _F, "latency_s": _F, "attempts": _I, "judged_at": _F,
}

EPISODE_COLUMNS = tuple(EPISODE_TYPES)
VERDICT_COLUMNS = tuple(VERDICT_TYPES)
CELL_COLUMNS = tuple(CELL_TYPES)

class SchemaError(ValueError):
    pass


def row(schema: Schema, values: Mapping, *, partial: bool = False) -> dict:
    """``values`` as a row of ``schema``, in its column order. A column the schema lacks is an
    error; so is a missing one, unless ``partial`` (then it is null: imported logs hold less)."""
    unknown = set(values) - set(schema)
    if unknown:
        raise SchemaError(f"columns not in the schema: {sorted(unknown)}")
    missing = [c for c in schema if c not in values]
    if missing and not partial:
        raise SchemaError(f"columns missing: {missing}")
    return {c: values.get(c) for c in schema}


def conform(frame: pl.DataFrame, schema: Schema) -> pl.DataFrame:
    """``frame`` with the schema's columns cast to their types (others left as they are)."""
    return frame.cast({c: t for c, t in schema.items() if c in frame.columns})


def mismatches(frame: pl.DataFrame, schema: Schema) -> list[str]:
    """What differs between ``frame`` and ``schema``: columns (names and order), then types."""
    if list(frame.columns) != list(schema):
        return [f"columns {list(frame.columns)} != {list(schema)}"]
    return [f"{c}: {frame.schema[c]} != {t}" for c, t in schema.items() if frame.schema[c] != t]

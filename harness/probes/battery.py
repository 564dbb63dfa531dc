"""Probe batteries: the built-in one and the native format for users' own.

Native format: a JSONL file, one probe per line: ``uid``, ``kind`` (``generality``,
``factual``, ``trick``), ``prompt``; a factual probe has ``answers`` (short answers, any of
which counts as a hit, matched by rule) or a ``reference`` (a longer answer, graded by the
LLM judge); a trick probe states its ``false_premise`` and the ``truth``. Unknown fields are
refused; errors name the file, the line and the field.
"""

from __future__ import annotations

import hashlib
import json
from enum import Enum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.bench.load import unique_records

BUILTIN_BATTERY = Path(__file__).parent / "builtin.jsonl"


class ProbeKind(str, Enum):
    GENERALITY = "generality"
    FACTUAL = "factual"
    TRICK = "trick"


class Probe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
    uid: str = Field(min_length=1)
    kind: ProbeKind
    prompt: str = Field(min_length=1)
    answers: list[str] = []
    reference: str = ""
    false_premise: str = ""
    truth: str = ""

    @model_validator(mode="after")
    def _fields_for_kind(self):
        if self.kind == ProbeKind.FACTUAL and not (self.answers or self.reference):
            raise ValueError("a factual probe needs 'answers' (short) or a 'reference' (long)")
        if self.kind == ProbeKind.TRICK and not (self.false_premise and self.truth):
            raise ValueError("a trick probe needs 'false_premise' and 'truth'")
        return self

    # The generation engine reads a task's uid, skill and query type: a probe offers the same.
    @property
    def skill(self) -> str:
        return self.kind.value

    @property
    def query_type(self) -> ProbeKind:
        return self.kind


class Battery(BaseModel):
    name: str
    probes: tuple[Probe, ...]

    def content_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def load_battery(spec: str | Path) -> Battery:
    """``builtin`` or a JSONL file of probes."""
    file = BUILTIN_BATTERY if str(spec) == "builtin" else Path(spec).expanduser()
    probes = unique_records(file, Probe, "uid", "probe")
    return Battery(name="builtin" if str(spec) == "builtin" else file.stem, probes=tuple(probes))

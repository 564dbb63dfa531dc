"""What the author reads (declarative skills) and what the teacher must reply, as pydantic
models and the JSON schemas sent for structured output.

Schemas are bounded (item counts, string lengths) so that a weak teacher under constrained
decoding cannot run on forever; the same bounds are checked again on the parsed reply, for
providers that do not enforce the schema.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from harness.bench.model import QueryType

_KEBAB = r"^[a-z0-9][a-z0-9-]*$"
DIFFICULTIES = ("easy", "medium", "hard")


class DeclarativeSkill(BaseModel):
    """One line of the author's input: a skill named and described, not yet a procedure."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
    name: str = Field(min_length=1, pattern=_KEBAB)
    category: str = Field(min_length=1)
    description: str = Field(min_length=1)
    uid: str | None = None


class _Reply(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


_Text = Field(min_length=1)


class RewriteReply(_Reply):
    procedure: list[str] = Field(min_length=2, max_length=8)
    when_to_use: str = _Text
    constraints: list[str] = Field(default_factory=list, max_length=5)
    example_positive: str = _Text
    example_negative: str = _Text

    @field_validator("procedure", "constraints")
    @classmethod
    def _no_blank_items(cls, items: list[str]) -> list[str]:
        if any(not i.strip() for i in items):
            raise ValueError("blank item")
        return [i.strip() for i in items]


class TaskReply(_Reply):
    title: str = ""
    passage: str = _Text
    question: str = _Text
    expected: str = _Text
    must_identify: list[str] = Field(default_factory=list, max_length=5)
    correct_conclusion: str = _Text
    difficulty: Literal["easy", "medium", "hard"] | None = None
    trap: str = ""


def _string(max_length: int) -> dict:
    # Lengths, not a pattern: vLLM refuses pattern + length bounds for xgrammar, and xgrammar
    # 0.2.8 fails to compile counted repetitions inside these schemas. A blank string passes
    # minLength and is refused by validation instead (then retried).
    return {"type": "string", "minLength": 1, "maxLength": max_length}


def _strings(max_items: int, max_length: int, min_items: int = 1) -> dict:
    return {"type": "array", "items": _string(max_length), "minItems": min_items, "maxItems": max_items}


def _object(properties: dict) -> dict:
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}


REWRITE_SCHEMA = _object({
    "procedure": _strings(8, 240, min_items=3),
    "when_to_use": _string(400),
    "constraints": _strings(5, 240),
    "example_positive": _string(600),
    "example_negative": _string(600),
})

# What ``expected`` looks like per query type: the rule shown to the teacher and the schema.
ANSWER_RULES: dict[QueryType, tuple[str, dict]] = {
    QueryType.YES_NO: ("The answer is yes or no.", {"type": "string", "enum": ["yes", "no"]}),
    QueryType.YES_NO_VERIFICATION: (
        "The question shows a proposed answer or conclusion; the answer is yes (it is correct) or no.",
        {"type": "string", "enum": ["yes", "no"]}),
    QueryType.SINGLE_WORD: ("The answer is a single word or number, no spaces.",
                            {"type": "string", "pattern": r"^[^\s]{1,40}$"}),
    QueryType.RANKING: ("The question asks to choose between or order named options; the answer is the choice "
                        "or the ordering (e.g. 'B' or 'C > A > B').", _string(120)),
    QueryType.FREE_FORM: ("The answer is a short free-form conclusion (one sentence).", _string(300)),
}


def task_schema(query_type: QueryType) -> dict:
    """The JSON schema a teacher's task reply must follow, its answer shaped by the query type."""
    return _object({
        "title": _string(80),
        "passage": _string(1200),
        "question": _string(400),
        "expected": ANSWER_RULES[query_type][1],
        "must_identify": _strings(5, 160),
        "correct_conclusion": _string(300),
        "difficulty": {"type": "string", "enum": list(DIFFICULTIES)},
        "trap": _string(240),
    })


def check_answer(query_type: QueryType, expected: str) -> None:
    """The answer-format rules a provider without schema enforcement may break."""
    value = expected.strip().lower()
    if query_type in (QueryType.YES_NO, QueryType.YES_NO_VERIFICATION) and value not in ("yes", "no"):
        raise ValueError(f"expected must be yes or no for {query_type.value}, got {expected!r}")
    if query_type == QueryType.SINGLE_WORD and (not value or len(value.split()) != 1):
        raise ValueError(f"expected must be one word for SINGLE_WORD, got {expected!r}")


def schema_hash(schema: dict) -> str:
    """A short hash of a schema, recorded so authored tasks say which schema they followed."""
    return hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()[:16]

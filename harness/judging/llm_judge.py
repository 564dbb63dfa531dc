"""The LLM judge: a versioned grading prompt and a tolerant parser for its JSON verdict."""

from __future__ import annotations

import itertools
import json
import re
from typing import TypeVar

from pydantic import BaseModel, Field, ValidationError, field_validator

M = TypeVar("M", bound=BaseModel)

JUDGE_PROMPT_VERSION = "judge-v1"

JUDGE_SYSTEM = (
    "You grade answers to reasoning tasks. Judge whether the response reaches the correct "
    "conclusion, however it is phrased or formatted, and how many of the required points it "
    "identifies. Reply with a single JSON object and nothing else."
)

# Bounded so that a weak judge under constrained decoding cannot run on forever.
VERDICT_SCHEMA = {
    "type": "object",
    "properties": {
        "conclusion_reached": {"type": "boolean"},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "criteria_met": {"type": "array", "items": {"type": "string", "maxLength": 120}, "maxItems": 10},
        "rationale": {"type": "string", "maxLength": 600},
    },
    "required": ["conclusion_reached", "score", "criteria_met", "rationale"],
    "additionalProperties": False,
}


class JudgeReply(BaseModel):
    conclusion_reached: bool
    score: float = Field(ge=0.0, le=1.0)
    criteria_met: list[str] = []
    rationale: str = ""

    @field_validator("score", mode="before")
    @classmethod
    def _percent(cls, v):
        # Some judges answer on 0-10 or 0-100 despite the instructions.
        if isinstance(v, (int, float)) and 1 < v <= 100:
            return v / 10 if v <= 10 else v / 100
        return v


class UnparseableReply(ValueError):
    pass


def judge_messages(*, question: str, passage: str, expected: str, must_identify: list[str],
                   correct_conclusion: str, response: str) -> list[dict]:
    """The messages asking an LLM judge to grade one response against the reference and its points."""
    criteria = "\n".join(f"- {c}" for c in must_identify) or "- (none listed)"
    user = (
        f"Passage:\n{passage or '(none)'}\n\n"
        f"Question:\n{question}\n\n"
        f"Reference answer: {expected}\n"
        f"Correct conclusion: {correct_conclusion or expected}\n"
        f"Points a complete answer identifies:\n{criteria}\n\n"
        f"Response to grade:\n<<<\n{response}\n>>>\n\n"
        "Return JSON: {\"conclusion_reached\": true|false (does the response reach the correct "
        "conclusion?), \"score\": 0..1 (rubric: correctness and coverage of the points), "
        "\"criteria_met\": [points identified], \"rationale\": one or two sentences}."
    )
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S | re.I)


def _candidates(text: str):
    for block in _FENCE.findall(text):
        yield block
    # Every balanced {...} span, outermost first: prose around the object is common.
    for start in [i for i, ch in enumerate(text) if ch == "{"]:
        depth = 0
        for end in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            if depth == 0:
                yield text[start:end + 1]
                break


def parse_json_reply(text: str, model: type[M], what: str = "judge") -> M:
    """The first JSON object in a model's reply, validated into ``model``, tolerating fences,
    prose, and Python-style literals."""
    if not text or not text.strip():
        raise UnparseableReply(f"empty {what} reply")
    # The whole reply first: brace counting is fooled by braces inside strings.
    for candidate in itertools.chain([text.strip()], _candidates(text)):
        for variant in (candidate, re.sub(r"\bTrue\b", "true", re.sub(r"\bFalse\b", "false", candidate))):
            try:
                # strict=False: constrained decoders let control characters into strings.
                data = json.loads(variant, strict=False)
            except ValueError:
                continue
            if isinstance(data, dict):
                try:
                    return model.model_validate(data)
                except ValidationError as exc:
                    raise UnparseableReply(f"{what} JSON does not match the schema: "
                                           f"{exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
    raise UnparseableReply(f"no JSON object in {what} reply: {text[:120]!r}")


def parse_reply(text: str) -> JudgeReply:
    """The verdict in a judge's reply."""
    return parse_json_reply(text, JudgeReply)

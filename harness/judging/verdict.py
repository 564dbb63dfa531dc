"""A verdict: passed, failed, or unscored with a reason. Never a fail for a judge's fault.

The extractor marks the unscored verdicts it could not decide as ``uncertain``: in
``det-mixed`` those go to the LLM judge, in ``deterministic`` they stay unscored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Mode(str, Enum):
    """How a verdict set is judged: the extractor, with the LLM judge for what it cannot decide
    (``det-mixed``); the LLM judge only (``llm-only``); the extractor only (``deterministic``).
    A ``str``: it compares equal to, and is stored as, its value."""

    DET_MIXED = "det-mixed"
    LLM_ONLY = "llm-only"
    DETERMINISTIC = "deterministic"

    def __str__(self) -> str:
        return self.value

    def __format__(self, format_spec: str) -> str:
        return str.__format__(self, format_spec)


MODES = tuple(m.value for m in Mode)


@dataclass(frozen=True)
class Verdict:
    passed: bool | None
    score: float | None
    rule: str
    extracted: str | None = None
    unscored_reason: str | None = None
    rationale: str | None = None
    criteria_met: tuple[str, ...] = field(default_factory=tuple)
    uncertain: bool = False

    @classmethod
    def unscored(cls, rule: str, reason: str, extracted: str | None = None) -> Verdict:
        return cls(None, None, rule, extracted, reason)

    @classmethod
    def undecided(cls, rule: str, reason: str, extracted: str | None = None) -> Verdict:
        """The extractor's "not sure": unscored, and eligible for an LLM judge."""
        return cls(None, None, rule, extracted, reason, uncertain=True)

    @property
    def scored(self) -> bool:
        return self.passed is not None

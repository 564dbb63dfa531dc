"""A verdict: passed, failed, or unscored with a reason. Never a fail for a judge's fault.

The extractor marks the unscored verdicts it could not decide as ``uncertain``: in
``det-mixed`` those go to the LLM judge, in ``deterministic`` they stay unscored.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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

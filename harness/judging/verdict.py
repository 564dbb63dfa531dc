"""A verdict: passed, failed, or unscored with a reason. Never a fail for a judge's fault."""

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

    @classmethod
    def unscored(cls, rule: str, reason: str, extracted: str | None = None) -> Verdict:
        return cls(None, None, rule, extracted, reason)

    @property
    def scored(self) -> bool:
        return self.passed is not None

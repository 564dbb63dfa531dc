"""Deterministic probe rules (pure functions), versioned as ``RULES_VERSION``.

- **format-locked**: the bench's answer format leaking into ordinary chat: a line that opens
  with an answer tag, by the extractor's own tag rule (``ANSWER: …``, ``**Answer:** …``,
  ``Final answer - …``, a ``### Final Answer`` heading).
- **phantom skill block**: the response cites a skill block or procedure that is not in its
  prompt (the probe's system prompt has none): the phrase "skill block", a skill header with a
  kebab-case name (``Skill: base-rate-neglect``), "the provided/given/above skill or
  procedure", "according to / following the skill or procedure", or a skill or procedure "in
  the system prompt / instructions".
- **factual hit** (short answers): any accepted answer occurs in the response as a whole word
  or phrase, case-insensitive.
"""

from __future__ import annotations

import re

from harness.judging.extract import _TAG

RULES_VERSION = "probe-rules-v1"

PHANTOM_PATTERNS = tuple(re.compile(p, re.I) for p in (
    r"\bskill[\s-]?blocks?\b",
    r"\bskill\s*:\s*\*{0,2}[a-z0-9]+(?:-[a-z0-9]+)+",
    r"\b(?:provided|given|above|injected|supplied|attached|listed)\s+(?:skills?|procedures?)\b",
    r"\b(?:according\s+to|following|per|as\s+per|using|apply(?:ing)?)\s+the\s+(?:skill|procedure)\b",
    r"\b(?:skill|procedure)s?\s+(?:in|from)\s+(?:the|my|your)\s+(?:system\s+prompt|instructions)\b",
))


def format_locked(response: str) -> bool:
    """Whether a response carries the answer tag, the trained format leaking into a free-form probe."""
    return _TAG.search(response or "") is not None


def phantom_skill_block(response: str) -> bool:
    """Whether a probe response refers to a skill block or a supplied procedure (probes supply none)."""
    return any(p.search(response or "") for p in PHANTOM_PATTERNS)


def factual_hit(response: str, answers: list[str]) -> bool:
    """Whether a response names one of the accepted answers, as a whole word."""
    text = (response or "").lower()
    return any(re.search(rf"(?<!\w){re.escape(a.lower())}(?!\w)", text) for a in answers if a.strip())

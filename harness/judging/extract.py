"""Deterministic answer extraction and comparison (pure functions).

The study's rules were: an ``ANSWER:`` tag, case-insensitive, last match wins; strip markdown,
quotes and periods; exact match per type; SINGLE_WORD compares the first token; RANKING
compares ``a``/``b`` only. Those lost correct answers written in prose, so the rules here also
accept ``**Answer:** Yes``, ``Final answer: X``, an answer on the line after the tag,
``ANSWER: yes (because ...)``, "the answer is X", a yes/no opening the last sentence, multi-word
expected answers, and rankings of any labels. An answer that claims both yes and no is
unscored, not failed. Every verdict says which rule fired and what was extracted.
"""

from __future__ import annotations

import re

from harness.bench.model import QueryType
from harness.judging.verdict import Verdict

EXTRACTOR_VERSION = "extract-v1"
DETERMINISTIC_TYPES = frozenset({QueryType.YES_NO, QueryType.YES_NO_VERIFICATION,
                                 QueryType.SINGLE_WORD, QueryType.RANKING})

# "ANSWER:", "**Answer:**", "Final answer -", "__FINAL ANSWER__:"; the text after it on the line.
_TAG = re.compile(r"(?im)^[ \t>#*_`-]*(?:final[ \t]+)?answer(?:[ \t*_`]*[:：=-]|[ \t*_`#]*$)[ \t*_`]*(?P<rest>.*)$")
_INLINE_TAG = re.compile(r"(?i)\b(?:final[ \t]+)?answer[ \t*_`]*[:：][ \t*_`]*(?P<rest>[^\n]*)")
_ANSWER_IS = re.compile(r"(?i)\b(?:the\s+)?(?:final\s+|correct\s+)?answer\s+is\s*[:：]?\s*(?P<rest>[^\n]*)")
_YES_NO_WORD = {"yes": "yes", "no": "no", "true": "yes", "false": "no", "correct": "yes", "incorrect": "no"}
_HEDGES = re.compile(r"(?i)^(?:about|approximately|approx\.?|around|roughly|~|option|choice|reply|paraphrase|claim)\s+")
_ITEM_SPLIT = re.compile(r"\s*(?:,|;|>|→|->|\bthen\b|\band\b)\s*", re.I)


def clean(text: str) -> str:
    """Strip markdown emphasis, and quotes, brackets and punctuation around the text."""
    text = re.sub(r"[*_`]+", "", text)
    return text.strip(" \t\r\n\"'“”‘’«»[]().!?;:,").strip()


def find_answer(response: str) -> tuple[str | None, str]:
    """The answer text a response commits to, and the rule that found it."""
    tags = list(_TAG.finditer(response))
    rule = "answer-tag"
    if not tags:
        tags = list(_INLINE_TAG.finditer(response))
        rule = "answer-tag-inline"
    if tags:
        last = tags[-1]
        rest = clean(last.group("rest"))
        if rest:
            return rest, rule
        following = [line for line in response[last.end():].splitlines() if clean(line)]
        if following:
            return clean(following[0]), "answer-next-line"
    stated = list(_ANSWER_IS.finditer(response))
    if stated and clean(stated[-1].group("rest")):
        return clean(stated[-1].group("rest")), "answer-is"
    return None, "none"


def _last_sentence(response: str) -> str:
    sentences = [s for s in re.split(r"(?<=[.!?])\s+|\n+", response.strip()) if clean(s)]
    return clean(sentences[-1]) if sentences else ""


def yes_no(text: str) -> str | None | bool:
    """'yes'/'no' for an answer text; None when it has neither; False when it claims both."""
    words = re.findall(r"[a-z]+", text.lower())
    if not words:
        return None
    first = _YES_NO_WORD.get(words[0])
    if first:
        # "yes or no", "yes and no": both claimed
        if len(words) > 2 and words[1] in ("or", "and") and _YES_NO_WORD.get(words[2], first) != first:
            return False
        return first
    found = {w for w in words if w in ("yes", "no")}
    if len(found) == 2:
        return False
    # A short hedge ("I'd say yes") still commits; a long sentence merely containing "no" does not.
    return found.pop() if found and len(words) <= 4 else None


def _normalize(text: str) -> str:
    text = clean(text).lower()
    text = _HEDGES.sub("", text)
    return re.sub(r"\s+", " ", text).strip()


def _items(text: str) -> list[str]:
    return [clean(i).lower() for i in _ITEM_SPLIT.split(_normalize(text)) if clean(i)]


def judge_yes_no(response: str, expected: str) -> Verdict:
    answer, rule = find_answer(response)
    candidate = answer
    if answer is None:
        candidate, rule = _last_sentence(response), "last-sentence"
    value = yes_no(candidate or "")
    if value is False:
        return Verdict.unscored(rule, "ambiguous: claims both yes and no", candidate)
    if value is None:
        reason = "no yes/no answer found" if answer is None else f"answer is not yes/no: {answer!r}"
        return Verdict.unscored(rule, reason, candidate)
    target = yes_no(expected)
    return Verdict(value == target, 1.0 if value == target else 0.0, rule, value)


def judge_single_word(response: str, expected: str) -> Verdict:
    answer, rule = find_answer(response)
    if answer is None:
        return Verdict.unscored(rule, "no answer found")
    got, want = _normalize(answer), _normalize(expected)
    first = re.split(r"[\s,;:(]+", got)[0] if got else ""
    # Multi-word expected answers ('straw man', '21 days') match as a phrase at the start.
    ok = got == want or first == want or (" " in want and (got + " ").startswith(want + " "))
    return Verdict(ok, float(ok), rule, answer)


def judge_ranking(response: str, expected: str) -> Verdict:
    answer, rule = find_answer(response)
    if answer is None:
        return Verdict.unscored(rule, "no answer found")
    want, got = _items(expected), _items(answer)
    if not got:
        return Verdict.unscored(rule, "empty ranking", answer)
    if len(want) == 1:
        ok = got[0] == want[0] or got[0].split(" ")[0] == want[0]
    else:
        ok = got == want
    return Verdict(ok, float(ok), rule, answer)


_BY_TYPE = {
    QueryType.YES_NO: judge_yes_no,
    QueryType.YES_NO_VERIFICATION: judge_yes_no,
    QueryType.SINGLE_WORD: judge_single_word,
    QueryType.RANKING: judge_ranking,
}


def judge_deterministic(query_type: QueryType | str, response: str, expected: str) -> Verdict:
    qt = QueryType(query_type)
    if qt not in _BY_TYPE:
        return Verdict.unscored("none", "free-form answers need an LLM judge")
    if not response or not response.strip():
        return Verdict(False, 0.0, "empty-response", None)
    return _BY_TYPE[qt](response, expected)

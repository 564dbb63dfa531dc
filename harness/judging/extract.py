"""Deterministic answer extraction and comparison (pure functions).

The study's rules were: an ``ANSWER:`` tag, case-insensitive, last match wins; strip markdown,
quotes and periods; exact match per type; SINGLE_WORD compares the first token; RANKING
compares ``a``/``b`` only. Those lost correct answers written in prose, so the rules here also
accept ``**Answer:** Yes``, ``Final answer: X``, an answer on the line after the tag,
``ANSWER: yes (because ...)``, "the answer is X", a yes/no opening the last sentence, multi-word
expected answers, and rankings of any labels. An answer that claims both yes and no is
unscored, not failed. Every verdict says which rule fired and what was extracted.

A SINGLE_WORD or RANKING answer written as a phrase ("Ben's reasoning shows the sunk-cost
fallacy." for *Ben*, "Study 2" for *2*) is decided only when exactly one of the question's
options, or the expected answer, appears in it as a whole word or phrase (after hyphen, quote,
possessive and article normalisation) and is not negated; otherwise the extractor says it is
*uncertain* (an unscored verdict with ``uncertain=True``) rather than guess. Every other
undecided case (no answer found, both yes and no) is uncertain too; ``det-mixed`` sends
uncertain cells to the LLM judge.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from itertools import zip_longest
from typing import Literal

from harness.bench.model import QueryType
from harness.judging.verdict import Verdict

EXTRACTOR_VERSION = "extract-v2"
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


def yes_no(text: str) -> str | None | Literal[False]:
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
    """Judge a yes/no answer: the stated answer (else the last sentence) against the expected one."""
    answer, rule = find_answer(response)
    candidate = answer
    if answer is None:
        candidate, rule = _last_sentence(response), "last-sentence"
    value = yes_no(candidate or "")
    if value is False:
        return Verdict.undecided(rule, "ambiguous: claims both yes and no", candidate)
    if value is None:
        reason = "no yes/no answer found" if answer is None else f"answer is not yes/no: {answer!r}"
        return Verdict.undecided(rule, reason, candidate)
    target = yes_no(expected)
    return Verdict(value == target, 1.0 if value == target else 0.0, rule, value)


def _phrase_key(text: str, lower: bool = True) -> str:
    """Words only: possessives, quotes, hyphens and dashes dropped; for whole-word matching."""
    text = re.sub(r"[’‘`´]", "'", text.lower() if lower else text)
    text = re.sub(r"(?i)'s\b", "", text)
    text = re.sub(r"[^\w\s]|_", " ", text)
    return " ".join(text.split())


def _candidate_key(text: str) -> str:
    key = _phrase_key(text)
    return re.sub(r"^(?:a|an|the) (?=\S+ )", "", key) if " " in key else key


# Quoted options joined by "or" ('ponens', 'tollens', or 'fallacy'; 'necessary' or a 'sufficient').
_QUOTED = re.compile(r"(?<!\w)['\"‘“]([^'\"‘’“”\n]{1,40}?)['\"’”](?!\w)")
_QUOTE_SEP = re.compile(r"^\s*,?\s*(?:(or)\s+)?(?:an?\s+|the\s+)?$", re.I)
# Named or lettered options: "A or B", "Lee, Mo, and Nia", "Study 1 or Study 2".
_ITEM = r"[A-Z][\w-]*(?:\s\d+)?"
_LISTED = re.compile(rf"(?<![\w']){_ITEM}(?:\s*,\s*{_ITEM})*\s*,?\s+(?:or|and)\s+{_ITEM}(?![\w'])")
_NEGATORS = {"not", "no", "never", "nor", "neither", "without", "t"}  # "t" is what "isn't" leaves
_NEGATED_AFTER = re.compile(r"^(?:(?:is|was|are|were|does|do|did)\s+)?(?:not|never)\b")


def question_options(question: str) -> list[str]:
    """The options a question offers, when it lists them; [] when it does not."""
    options: list[str] = []
    quoted = list(_QUOTED.finditer(question))
    group, has_or = quoted[:1], False
    for prev, cur in zip_longest(quoted, quoted[1:]):  # the last quote pairs with None
        sep = _QUOTE_SEP.match(question[prev.end():cur.start()]) if cur else None
        if sep and cur is not None:  # sep implies cur
            group.append(cur)
            has_or = has_or or bool(sep.group(1))
            continue
        if len(group) > 1 and has_or:
            options += [m.group(1).strip() for m in group]
        group, has_or = [cur] if cur else [], False
    for listed in _LISTED.finditer(question):
        options += [i.strip() for i in re.split(r"\s*,\s*(?:or\s+|and\s+)?|\s+(?:or|and)\s+", listed.group(0))
                    if i.strip()]
    return list(dict.fromkeys(options))


def _mentions(answer: str, candidate: str) -> list[tuple[int, int, bool]]:
    """(start, end, negated) for each whole-word occurrence of ``candidate`` in ``answer``,
    in word positions. A lone capital letter (an option label) must appear as a capital, so
    the article 'a' is not read as option A."""
    label = re.fullmatch(r"[A-Z]", candidate.strip()) is not None
    words = _phrase_key(answer, lower=not label).split()
    target = candidate.strip().split() if label else _candidate_key(candidate).split()
    found = []
    for i in range(len(words) - len(target) + 1):
        if words[i:i + len(target)] == target:
            before = [w.lower() for w in words[max(0, i - 3):i]]
            after = " ".join(words[i + len(target):i + len(target) + 3]).lower()
            rather = " ".join(before[-2:]) in ("rather than", "instead of")
            negated = bool(_NEGATORS & set(before)) or rather or bool(_NEGATED_AFTER.match(after))
            found.append((i, i + len(target), negated))
    return found


def decide_phrase(answer: str, expected: str, options: Sequence[str] = ()) -> tuple[bool | None, str]:
    """Pass/fail when exactly one candidate (an option or the expected answer) is named, un-negated,
    in ``answer``; None (uncertain) otherwise. Returns the outcome and why."""
    candidates: dict[str, str] = {}
    for c in [expected, *options]:
        candidates.setdefault(c.strip() if re.fullmatch(r"\s*[A-Z]\s*", c) else _candidate_key(c), c)
    hits = {key: _mentions(answer, original) for key, original in candidates.items()}
    hits = {k: v for k, v in hits.items() if v}
    # A candidate found only inside a longer one ('straw' in 'straw man') is not named on its own.
    spans = {k: [(a, b) for a, b, _ in v] for k, v in hits.items()}
    named = {k for k, v in spans.items()
             if not all(any(o != k and a2 <= a and b <= b2 and (a2, b2) != (a, b) for o in spans for a2, b2 in spans[o])
                        for a, b in v)}
    if not named:
        return None, "names neither the expected answer nor an option"
    if len(named) > 1:
        return None, f"names {len(named)} options: {', '.join(sorted(candidates[k] for k in named))}"
    (key,) = named
    if any(neg for _, _, neg in hits[key]):
        return None, f"names {candidates[key]!r} in a negation"
    expected_key = next(iter(candidates))
    return key == expected_key, f"names {candidates[key]!r}"


def _single_word_outcome(answer: str, expected: str, options: Sequence[str]) -> tuple[bool | None, str]:
    got, want = _normalize(answer), _normalize(expected)
    if got == want or _phrase_key(got) == _phrase_key(want):
        return True, "exact"
    if " " not in _phrase_key(got):
        return False, "exact"
    return decide_phrase(_HEDGES.sub("", clean(answer)), expected, options)


def _decided(rule: str, answer: str, outcome: bool | None, how: str) -> Verdict:
    if outcome is None:
        return Verdict.undecided(f"{rule}+phrase", f"uncertain: the answer {how}", answer)
    return Verdict(outcome, float(outcome), rule if how == "exact" else f"{rule}+phrase", answer)


def judge_single_word(response: str, expected: str, options: Sequence[str] = ()) -> Verdict:
    """Judge a one-word answer against the expected word (and the question's options, if any)."""
    answer, rule = find_answer(response)
    if answer is None:
        return Verdict.undecided(rule, "no answer found")
    return _decided(rule, answer, *_single_word_outcome(answer, expected, options))


def judge_ranking(response: str, expected: str, options: Sequence[str] = ()) -> Verdict:
    """Judge a ranking: the items in the expected order; a different count is undecided."""
    answer, rule = find_answer(response)
    if answer is None:
        return Verdict.undecided(rule, "no answer found")
    want, got = _items(expected), _items(answer)
    if not got:
        return Verdict.undecided(rule, "empty ranking", answer)
    if len(want) == 1:
        return _decided(rule, answer, *_single_word_outcome(answer, expected, options))
    if len(got) != len(want):
        return Verdict.undecided(rule, f"uncertain: ranking has {len(got)} items, expected {len(want)}", answer)
    ok = got == want
    return Verdict(ok, float(ok), rule, answer)


_BY_TYPE: dict[QueryType, Callable[..., Verdict]] = {
    QueryType.YES_NO: judge_yes_no,
    QueryType.YES_NO_VERIFICATION: judge_yes_no,
    QueryType.SINGLE_WORD: judge_single_word,
    QueryType.RANKING: judge_ranking,
}


def judge_deterministic(query_type: QueryType | str, response: str, expected: str,
                        options: Sequence[str] = ()) -> Verdict:
    """Pass, fail, or uncertain (``uncertain=True``) with the rule; ``options`` are the
    question's (see :func:`question_options`), used to decide answers written as phrases."""
    qt = QueryType(query_type)
    if qt not in _BY_TYPE:
        return Verdict.unscored("none", "free-form answers need an LLM judge")
    if not response or not response.strip():
        return Verdict(False, 0.0, "empty-response", None)
    if qt in (QueryType.SINGLE_WORD, QueryType.RANKING):
        return _BY_TYPE[qt](response, expected, options)
    return _BY_TYPE[qt](response, expected)

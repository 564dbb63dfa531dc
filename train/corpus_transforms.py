"""Corpus transforms: the study's recipe variants, and the control it did not run.

A corpus row is ``{"messages": [system, user, assistant], "meta": {...}}`` where ``meta`` holds
``task_uid``, ``skill``, ``condition``, ``solver_prompt`` and ``skill_block`` so that a row can be
re-rendered without its block. All transforms are pure: rows in, rows out.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

# drop_ceiling_skills imports polars and harness.stats.job itself: 1.2 s that every recipe load
# (plan, the sweep config's checks) would pay for a transform few recipes use.


def _with_system(row: dict, system: str, condition: str) -> dict:
    messages = [dict(m) for m in row["messages"]]
    messages[0] = {"role": "system", "content": system}
    return {"messages": messages, "meta": {**row["meta"], "condition": condition}}


def curated_only(rows: list[dict], **_) -> list[dict]:
    """The rows generated under the curated condition."""
    return [r for r in rows if r["meta"].get("condition") == "curated"]


def strip_skill_block(rows: list[dict], **_) -> list[dict]:
    """Train without the block: the system prompt is the bare solver prompt."""
    return [_with_system(r, r["meta"]["solver_prompt"], "stripped") for r in rows]


def mixed(rows: list[dict], **_) -> list[dict]:
    """Each curated row, plus the same demonstration under the baseline prompt."""
    out = []
    for r in curated_only(rows):
        out += [r, _with_system(r, r["meta"]["solver_prompt"], "baseline")]
    return out


def drop_ceiling_skills(rows: list[dict], *, run: str, model_label: str, judge: str | None = None,
                        threshold: float = 1.0, **_) -> list[dict]:
    """Drop skills whose baseline pass rate for ``model_label`` in ``run`` is ≥ ``threshold``."""
    import polars as pl

    from harness.stats.job import choose_judge, load_verdicts

    verdicts = load_verdicts(run)
    judge = choose_judge(verdicts, judge)
    rates = (verdicts.filter((pl.col("judge_label") == judge) & (pl.col("model_label") == model_label)
                             & (pl.col("condition") == "baseline") & pl.col("passed").is_not_null())
             .group_by("skill").agg(pl.col("passed").cast(pl.Float64).mean().alias("rate")))
    if rates.is_empty():
        raise ValueError(f"drop-ceiling-skills: no baseline verdicts for {model_label!r} under {judge!r} in {run}")
    ceiling = set(rates.filter(pl.col("rate") >= threshold)["skill"].to_list())
    return [r for r in rows if r["meta"].get("skill") not in ceiling]


def _assistant_len(row: dict) -> int:
    return len(next(m["content"] for m in reversed(row["messages"]) if m["role"] == "assistant"))


def generic_control(rows: list[dict], *, source: str, seed: int = 0, **_) -> list[dict]:
    """As many rows from another chat corpus, matched in assistant length to ``rows``.

    Each corpus row takes the unused generic row nearest to it in assistant-turn length;
    ties go to a seeded shuffle, so the control is reproducible."""
    pool = read_corpus(Path(source))
    if len(pool) < len(rows):
        raise ValueError(f"generic-control: {source} has {len(pool)} rows, fewer than the {len(rows)} to match")
    random.Random(seed).shuffle(pool)
    pool.sort(key=_assistant_len)
    lengths = [_assistant_len(p) for p in pool]
    used = [False] * len(pool)
    out = []
    for row in sorted(rows, key=_assistant_len):
        target = _assistant_len(row)
        best = min((i for i in range(len(pool)) if not used[i]), key=lambda i: abs(lengths[i] - target))
        used[best] = True
        chosen = pool[best]
        out.append({"messages": chosen["messages"],
                    "meta": {**chosen.get("meta", {}), "condition": "generic", "matched_to": row["meta"].get("task_uid")}})
    return out


TRANSFORMS: dict[str, Callable[..., list[dict]]] = {
    "curated-only": curated_only,
    "mixed": mixed,
    "drop-ceiling-skills": drop_ceiling_skills,
    "strip-skill-block": strip_skill_block,
    "generic-control": generic_control,
}


def apply_transforms(rows: list[dict], steps: list[dict]) -> list[dict]:
    """Apply a recipe's corpus transforms in order, each a ``kind`` and its parameters."""
    for step in steps:
        params = {k: v for k, v in step.items() if k != "kind"}
        rows = TRANSFORMS[step["kind"]](rows, **params)
    return rows


def read_corpus(path: Path) -> list[dict]:
    """A corpus's rows from JSON lines, each with non-empty ``messages``; errors name the line."""
    rows = []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").split("\n"), 1):  # see RunStore.rows
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{path}, line {lineno}: not valid JSON: {exc}") from None
        if not isinstance(row.get("messages"), list) or not row["messages"]:
            raise ValueError(f"{path}, line {lineno}, field 'messages': a non-empty list of chat messages is required")
        row.setdefault("meta", {})
        rows.append(row)
    return rows


def write_corpus(rows: list[dict], path: Path) -> None:
    """Write corpus rows as JSON lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")

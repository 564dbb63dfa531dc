"""The sweep's decisions, as pure functions: what to do after a stage, and what a run records.

Everything the driver decides (retry a generation, record cells as missing, re-judge the
verdicts whose calls gave up, which targets are already complete, how a resumed run's
history is kept) lives here, so each rule is tested without Ray or vLLM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MAX_GENERATION_ATTEMPTS = 3
MAX_JUDGE_ATTEMPTS = 2


@dataclass(frozen=True)
class Decision:
    action: Literal["next", "retry", "missing"]
    message: str
    missing: int = 0


def after_generation(summary: dict | None, error: str | None, attempt: int,
                     max_attempts: int = MAX_GENERATION_ATTEMPTS) -> Decision:
    """After generation attempt ``attempt`` (1-based) of one target.

    ``summary`` is run_generation's result (None when the task itself failed, with ``error``).
    Finished cells are never sent again: a retry only covers the cells still missing. Cells
    refused by the engine (a 4xx: a prompt longer than the context) fail the same way every
    time, so they alone never cause a retry."""
    if summary is None:
        if attempt < max_attempts:
            return Decision("retry", f"generation task failed ({error}); retrying the unfinished cells "
                                     f"(attempt {attempt + 1} of {max_attempts})")
        return Decision("missing", f"generation task failed {attempt} times; last: {error}", -1)
    missing = int(summary.get("missing") or 0)
    if not missing:
        return Decision("next", f"generation done ({summary.get('rows', 0)} episodes)")
    stats = summary.get("stats") or {}
    refused = int(stats.get("client_failed") or 0)
    if missing > refused and attempt < max_attempts:
        return Decision("retry", f"{missing} cells missing ({_first_error(stats)}); retrying them "
                                 f"(attempt {attempt + 1} of {max_attempts})", missing)
    return Decision("missing", f"{missing} cells missing after {attempt} attempts ({_first_error(stats)})", missing)


def _first_error(stats: dict) -> str:
    errors = stats.get("errors") or []
    return errors[0].split(": ", 1)[-1][:200] if errors else "no error recorded"


def after_judging(summary: dict, attempt: int, max_attempts: int = MAX_JUDGE_ATTEMPTS) -> Decision:
    """After one judge's pass over a target: verdicts whose calls gave up are judged again
    (``only_unscored``) while attempts remain; otherwise they stay unscored and are counted."""
    if "error" in summary:
        return Decision("missing", f"judge {summary.get('label')} failed: {summary['error']}")
    give_ups = int((summary.get("stats") or {}).get("give_ups") or 0)
    if give_ups and attempt < max_attempts:
        return Decision("retry", f"judge {summary['label']}: {give_ups} calls gave up; judging those again", give_ups)
    if give_ups:
        return Decision("missing", f"judge {summary['label']}: {give_ups} calls gave up after {attempt} passes",
                        give_ups)
    return Decision("next", f"judged by {summary['label']}")


def target_complete(*, missing_cells: list | None, episodes: int, verdicts_per_judge: dict[str, int],
                    expected: int, judges: list[str]) -> bool:
    """Generated and judged by every judge: nothing to do for this target on resume."""
    if missing_cells or episodes != expected:
        return False
    return all(verdicts_per_judge.get(j) == expected for j in judges)


COUNTERS = ("timed_out", "requeued", "regenerated", "failed", "retried", "engine_losses", "engine_restarts",
            "judge_give_ups")


def add_generation_counts(counts: dict, summary: dict | None) -> None:
    """Add a generation summary's counts (timeouts, retries, engine losses, ...) to running totals."""
    stats = (summary or {}).get("stats") or {}
    for key in ("timed_out", "requeued", "failed", "retried", "engine_losses", "engine_restarts"):
        counts[key] = counts.get(key, 0) + int(stats.get(key) or 0)
    counts["regenerated"] = counts.get("regenerated", 0) + int((summary or {}).get("regenerated") or 0)


def with_history(previous: dict | None, attempt: dict) -> dict:
    """run.json after this attempt: the latest attempt's fields at the top (what a reader wants
    first) and every attempt, the earlier ones untouched, under ``attempts``."""
    history = list((previous or {}).get("attempts") or [])
    if previous and not history:  # a run.json written before attempts were kept
        history = [{k: v for k, v in previous.items() if k != "attempts"}]
    attempt = {**attempt, "attempt": len(history) + 1}
    return {**attempt, "attempts": history + [attempt]}

"""The sweep's decisions, as pure functions: what to do after a stage, and what a run records.

Everything the driver decides (retry a generation, record cells as missing, re-judge the
verdicts whose calls gave up, which targets are already complete, how a resumed run's
history is kept) lives here, so each rule is tested without Ray or vLLM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.generation_job import GenerationSummary
from harness.judging.job import JudgingSummary

MAX_GENERATION_ATTEMPTS = 3
MAX_JUDGE_ATTEMPTS = 2


@dataclass(frozen=True)
class Decision:
    action: Literal["next", "retry", "missing"]
    message: str
    missing: int | None = 0  # cells (or verdicts) left out; None: not known (the generation task failed)


def after_generation(summary: GenerationSummary, attempt: int,
                     max_attempts: int = MAX_GENERATION_ATTEMPTS) -> Decision:
    """After generation attempt ``attempt`` (1-based) of one target.

    ``summary`` is run_generation's result, or one whose ``error`` says why the task itself failed.
    Finished cells are never sent again: a retry only covers the cells still missing. Cells
    refused by the engine (a 4xx: a prompt longer than the context) fail the same way every
    time, so they alone never cause a retry."""
    if summary.failed:
        if attempt < max_attempts:
            return Decision("retry", f"generation task failed ({summary.error}); retrying the unfinished cells "
                                     f"(attempt {attempt + 1} of {max_attempts})")
        return Decision("missing", f"generation task failed {attempt} times; last: {summary.error}", None)
    missing = summary.missing
    if not missing:
        return Decision("next", f"generation done ({summary.rows} episodes)")
    first = _first_error(summary.stats.errors)
    if missing > summary.stats.client_failed and attempt < max_attempts:
        return Decision("retry", f"{missing} cells missing ({first}); retrying them "
                                 f"(attempt {attempt + 1} of {max_attempts})", missing)
    return Decision("missing", f"{missing} cells missing after {attempt} attempts ({first})", missing)


def _first_error(errors: list[str]) -> str:
    return errors[0].split(": ", 1)[-1][:200] if errors else "no error recorded"


def after_judging(summary: JudgingSummary, attempt: int, max_attempts: int = MAX_JUDGE_ATTEMPTS) -> Decision:
    """After one judge's pass over a target: verdicts whose calls gave up are judged again
    (``only_unscored``) while attempts remain; otherwise they stay unscored and are counted."""
    if summary.failed:
        return Decision("missing", f"judge {summary.label} failed: {summary.error}")
    give_ups = summary.stats.give_ups
    if give_ups and attempt < max_attempts:
        return Decision("retry", f"judge {summary.label}: {give_ups} calls gave up; judging those again", give_ups)
    if give_ups:
        return Decision("missing", f"judge {summary.label}: {give_ups} calls gave up after {attempt} passes",
                        give_ups)
    return Decision("next", f"judged by {summary.label}")


def target_complete(*, missing_cells: list | None, episodes: int, verdicts_per_judge: dict[str, int],
                    expected: int, judges: list[str]) -> bool:
    """Generated and judged by every judge: nothing to do for this target on resume."""
    if missing_cells or episodes != expected:
        return False
    return all(verdicts_per_judge.get(j) == expected for j in judges)


COUNTERS = ("timed_out", "requeued", "regenerated", "failed", "retried", "engine_losses", "engine_restarts",
            "judge_give_ups")


def add_generation_counts(counts: dict, summary: GenerationSummary) -> None:
    """Add a generation summary's counts (timeouts, retries, engine losses, ...) to running totals."""
    for key in ("timed_out", "requeued", "failed", "retried", "engine_losses", "engine_restarts"):
        counts[key] = counts.get(key, 0) + getattr(summary.stats, key)
    counts["regenerated"] = counts.get("regenerated", 0) + summary.regenerated


def with_history(previous: dict | None, attempt: dict) -> dict:
    """run.json after this attempt: the latest attempt's fields at the top (what a reader wants
    first) and every attempt, the earlier ones untouched, under ``attempts``."""
    history = list((previous or {}).get("attempts") or [])
    if previous and not history:  # a run.json written before attempts were kept
        history = [{k: v for k, v in previous.items() if k != "attempts"}]
    attempt = {**attempt, "attempt": len(history) + 1}
    return {**attempt, "attempts": history + [attempt]}

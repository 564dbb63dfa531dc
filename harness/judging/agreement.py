"""Agreement between two judges on the same episodes (pure functions over polars frames).

Only episodes both judges scored are compared; unscored verdicts are excluded and counted,
never read as fails. Kappa is pooled over both conditions (the study's convention) and also
given per condition.
"""

from __future__ import annotations

from typing import cast

import polars as pl


def cohen_kappa(a: list[bool], b: list[bool]) -> float | None:
    """Cohen's kappa for two binary raters; 1.0 when they agree perfectly (even on one class),
    None when there is nothing to compare."""
    n = len(a)
    if n == 0 or n != len(b):
        return None
    po = sum(x == y for x, y in zip(a, b, strict=True)) / n
    pa, pb = sum(a) / n, sum(b) / n
    pe = pa * pb + (1 - pa) * (1 - pb)
    if pe == 1.0:
        return 1.0 if po == 1.0 else 0.0
    return (po - pe) / (1 - pe)


def _delta(frame: pl.DataFrame, column: str) -> float | None:
    # polars types Series.mean() as any Python value; on this numeric column it is a float or None.
    rates = {c: cast("float | None", frame.filter(pl.col("condition") == c)[column].mean())
             for c in ("baseline", "curated")}
    if rates["baseline"] is None or rates["curated"] is None:
        return None
    return float(rates["curated"]) - float(rates["baseline"])


def agreement(verdicts: pl.DataFrame, judge_a: str, judge_b: str) -> dict:
    """Per model label: n, raw agreement, kappa (pooled and per condition), the 2x2 table,
    Δ (curated − baseline pass rate) under each judge and the shift B − A, disagreements per skill."""
    key = ["cell_id", "model_label", "task_uid", "skill", "condition"]
    a = verdicts.filter(pl.col("judge_label") == judge_a).select(*key, pl.col("passed").alias("a"))
    b = verdicts.filter(pl.col("judge_label") == judge_b).select("cell_id", pl.col("passed").alias("b"))
    for name, frame in ((judge_a, a), (judge_b, b)):
        if frame.is_empty():
            raise ValueError(f"no verdicts with judge label {name!r}")
    both = a.join(b, on="cell_id", how="inner")
    out = {}
    for (label,), group in both.group_by(["model_label"], maintain_order=True):
        scored = group.filter(pl.col("a").is_not_null() & pl.col("b").is_not_null())
        va, vb = scored["a"].to_list(), scored["b"].to_list()
        table = {
            "both_pass": sum(x and y for x, y in zip(va, vb, strict=True)),
            "a_only": sum(x and not y for x, y in zip(va, vb, strict=True)),
            "b_only": sum(y and not x for x, y in zip(va, vb, strict=True)),
            "both_fail": sum(not x and not y for x, y in zip(va, vb, strict=True)),
        }
        per_condition = {}
        for condition in ("baseline", "curated"):
            part = scored.filter(pl.col("condition") == condition)
            per_condition[condition] = cohen_kappa(part["a"].to_list(), part["b"].to_list())
        delta_a, delta_b = _delta(scored, "a"), _delta(scored, "b")
        disagreements = (scored.filter(pl.col("a") != pl.col("b")).group_by("skill").len()
                         .sort(["len", "skill"], descending=[True, False]))
        out[label] = {
            "n": len(scored),
            "unscored_excluded": len(group) - len(scored),
            "agreement": (table["both_pass"] + table["both_fail"]) / len(scored) if len(scored) else None,
            "kappa": cohen_kappa(va, vb),
            "kappa_baseline": per_condition["baseline"],
            "kappa_curated": per_condition["curated"],
            "confusion": table,
            "delta_a": delta_a,
            "delta_b": delta_b,
            "delta_shift": None if delta_a is None or delta_b is None else delta_b - delta_a,
            "disagreements_per_skill": dict(zip(disagreements["skill"], disagreements["len"], strict=True)),
        }
    return {"judge_a": judge_a, "judge_b": judge_b, "models": out}

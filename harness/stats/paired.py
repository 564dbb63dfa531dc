"""Per-model paired statistics: the same tasks under baseline and curated.

Unscored verdicts are excluded and counted, never read as fails; a task that lacks either
condition after that is dropped with a warning and counted.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl
from scipy import stats

EXACT_BELOW = 25  # the study's rule: exact binomial when b + c < 25, else χ² with continuity correction
N_BOOT = 10_000


@dataclass(frozen=True)
class McNemar:
    a: int  # both pass
    b: int  # baseline only
    c: int  # curated only
    d: int  # neither
    statistic: float
    p: float
    method: str

    def as_dict(self) -> dict:
        return asdict(self)


def mcnemar(a: int, b: int, c: int, d: int) -> McNemar:
    """McNemar's test on a paired 2x2 table: exact binomial when few pairs disagree, else chi-squared."""
    discordant = b + c
    if discordant == 0:
        return McNemar(a, b, c, d, 0.0, 1.0, "exact")
    if discordant < EXACT_BELOW:
        p = stats.binomtest(b, discordant, 0.5, alternative="two-sided").pvalue
        return McNemar(a, b, c, d, float(b), float(p), "exact")
    chi2 = (abs(b - c) - 1) ** 2 / discordant
    return McNemar(a, b, c, d, float(chi2), float(stats.chi2.sf(chi2, 1)), "chi2-cc")


@dataclass(frozen=True)
class Paired:
    """Per-task outcomes of one model under one judge."""

    tasks: pl.DataFrame  # task_uid, skill, bl (bool), cu (bool)
    unscored_excluded: int
    dropped_tasks: int

    @property
    def bl(self) -> np.ndarray:
        return self.tasks["bl"].to_numpy().astype(float)

    @property
    def cu(self) -> np.ndarray:
        return self.tasks["cu"].to_numpy().astype(float)


def paired_outcomes(verdicts: pl.DataFrame, model_label: str) -> Paired:
    """One model's baseline and curated outcomes, paired by task (tasks scored in both only)."""
    rows = verdicts.filter(pl.col("model_label") == model_label)
    if rows.is_empty():
        raise ValueError(f"no verdicts for model {model_label!r}")
    dupes = rows.group_by("task_uid", "condition").len().filter(pl.col("len") > 1)
    if not dupes.is_empty():
        raise ValueError(f"model {model_label!r} has several verdicts for one task and condition "
                         f"(e.g. {dupes.row(0)}): filter to one judge label first")
    scored = rows.filter(pl.col("passed").is_not_null())
    unscored = len(rows) - len(scored)
    wide = (scored.filter(pl.col("condition").is_in(["baseline", "curated"]))
            .pivot(on="condition", index="task_uid", values="passed", aggregate_function="first"))
    for column in ("baseline", "curated"):
        if column not in wide.columns:
            wide = wide.with_columns(pl.lit(None, pl.Boolean).alias(column))
    complete = wide.filter(pl.col("baseline").is_not_null() & pl.col("curated").is_not_null())
    dropped = len(wide) - len(complete)
    if dropped:
        warnings.warn(f"{model_label}: {dropped} task(s) lack a scored verdict in one condition and are dropped",
                      stacklevel=2)
    # Baseline rows of imported runs carry no skill name; take it from any row of the task.
    named = pl.col("skill").filter(pl.col("skill").is_not_null() & (pl.col("skill") != "")).first()
    skills = rows.group_by("task_uid").agg(named.alias("skill"))
    tasks = (complete.select("task_uid", pl.col("baseline").alias("bl"), pl.col("curated").alias("cu"))
             .join(skills, on="task_uid", how="left"))
    return Paired(tasks.sort("task_uid").select("task_uid", "skill", "bl", "cu"), unscored, dropped)


def bootstrap_indices(n: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """Resampling indices for a paired bootstrap, reproducible from the seed."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def percentile_ci(samples: np.ndarray) -> list[float]:
    """The 95% percentile interval of bootstrap samples."""
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return [float(lo), float(hi)]


def delta_ci(bl: np.ndarray, cu: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> list[float]:
    """Paired bootstrap 95% CI on Δ = CU − BL, resampling tasks (percentile)."""
    if len(bl) == 0:
        return [float("nan"), float("nan")]
    idx = bootstrap_indices(len(bl), n_boot, seed)
    return percentile_ci(cu[idx].mean(axis=1) - bl[idx].mean(axis=1))


def model_stats(paired: Paired, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """One model's figures: pass rates, their difference, McNemar and bootstrap intervals."""
    bl, cu = paired.bl, paired.cu
    n = len(bl)
    a = int(((bl == 1) & (cu == 1)).sum())
    b = int(((bl == 1) & (cu == 0)).sum())
    c = int(((bl == 0) & (cu == 1)).sum())
    d = int(((bl == 0) & (cu == 0)).sum())
    rate = lambda x: float(x.mean()) if n else None  # noqa: E731
    return {
        "n": n,
        "baseline": {"passed": int(bl.sum()), "rate": rate(bl)},
        "curated": {"passed": int(cu.sum()), "rate": rate(cu)},
        "delta": float(cu.mean()) - float(bl.mean()) if n else None,
        "mcnemar": mcnemar(a, b, c, d).as_dict(),
        "delta_ci95": delta_ci(bl, cu, n_boot, seed),
        "unscored_excluded": paired.unscored_excluded,
        "dropped_tasks": paired.dropped_tasks,
    }


def bonferroni(pvalues: dict[str, float]) -> dict[str, float]:
    """Bonferroni-adjusted p-values (each times the number of tests, capped at 1)."""
    m = len(pvalues)
    return {k: min(1.0, p * m) for k, p in pvalues.items()}


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment (monotone, capped at 1)."""
    m = len(pvalues)
    adjusted, running = {}, 0.0
    for rank, (key, p) in enumerate(sorted(pvalues.items(), key=lambda kv: kv[1])):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[key] = running
    return adjusted

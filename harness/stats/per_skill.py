"""Per-skill Δ, lift / flat / regression clusters, and Δ vs baseline (Spearman)."""

from __future__ import annotations

import math

import polars as pl
from scipy import stats

from harness.stats.paired import Paired


def per_skill(paired: Paired) -> pl.DataFrame:
    """Per skill: tasks, baseline and curated rates, their difference, and its cluster (lift, flat, regression)."""
    frame = (paired.tasks.group_by("skill")
             .agg(pl.len().alias("n"), pl.col("bl").cast(pl.Float64).mean().alias("baseline"),
                  pl.col("cu").cast(pl.Float64).mean().alias("curated"))
             .with_columns((pl.col("curated") - pl.col("baseline")).alias("delta")))
    cluster = (pl.when(pl.col("delta") > 1e-12).then(pl.lit("lift"))
               .when(pl.col("delta") < -1e-12).then(pl.lit("regression")).otherwise(pl.lit("flat")))
    return frame.with_columns(cluster.alias("cluster")).sort(["delta", "skill"], descending=[True, False])


def spearman_delta_vs_baseline(skills: pl.DataFrame, *, non_ceiling: bool = False) -> dict:
    """Spearman ρ of per-skill Δ against per-skill baseline; ``non_ceiling`` keeps skills
    with baseline < 1 (the study's subset)."""
    frame = skills.filter(pl.col("baseline") < 1.0) if non_ceiling else skills
    n = len(frame)
    if n < 3 or frame["baseline"].n_unique() < 2 or frame["delta"].n_unique() < 2:
        return {"rho": None, "p": None, "n": n}
    result = stats.spearmanr(frame["baseline"].to_numpy(), frame["delta"].to_numpy())
    rho, p = float(result.statistic), float(result.pvalue)
    return {"rho": None if math.isnan(rho) else rho, "p": None if math.isnan(p) else p, "n": n}


def cluster_summary(skills: pl.DataFrame) -> dict:
    """The skills in each cluster and their mean baseline rate."""
    out = {}
    for name in ("lift", "flat", "regression"):
        part = skills.filter(pl.col("cluster") == name)
        out[name] = {"skills": part["skill"].to_list(), "mean_baseline": part["baseline"].mean()}
    return out

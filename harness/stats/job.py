"""``skillsweep stats``: every statistic for one run under one judge, as one JSON object."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import polars as pl

from harness.naming import seed_group
from harness.pairing import PathMismatch, assert_matched_path
from harness.runstore import TableMissing, read_manifest, read_table, run_dir
from harness.stats.across import cross_model, sft_decomposition
from harness.stats.paired import N_BOOT, bonferroni, holm, model_stats, paired_outcomes
from harness.stats.per_skill import cluster_summary, per_skill, spearman_delta_vs_baseline
from harness.stats.seeds import seed_summary


@dataclass
class StatsSummary:
    """Every statistic of one verdict set (see :func:`compute`); ``as_dict()`` is stats.json."""

    judge: str
    bootstrap: dict  # {"resamples": ..., "seed": ...}
    models: dict[str, dict] = field(default_factory=dict)
    decomposition: dict[str, dict] = field(default_factory=dict)  # "post vs pre" -> SFT decomposition
    # "post vs pre" -> {post, pre, reason}: pairs not decomposed, their generation paths differ
    refused: dict[str, dict] = field(default_factory=dict)
    trajectory: list[dict] = field(default_factory=list)
    cross_model: dict[str, dict] = field(default_factory=dict)  # "a vs b" -> independent / paired_by_task
    per_skill: dict[str, dict] = field(default_factory=dict)
    seeds: dict[str, dict] = field(default_factory=dict)
    single_seed_models: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """As stats.json holds it and ``skillsweep stats --json`` prints it."""
        return {"judge": self.judge, "bootstrap": self.bootstrap, "models": self.models,
                "decomposition": self.decomposition, "refused_decomposition": self.refused,
                "trajectory": self.trajectory,
                "cross_model": self.cross_model, "per_skill": self.per_skill, "seeds": self.seeds,
                "single_seed_models": self.single_seed_models}


def load_verdicts(run: str | Path) -> pl.DataFrame:
    """A run's verdicts (the last per verdict id); names the command to run when there are none."""
    folder = run_dir(run)
    try:
        return read_table(folder, "verdicts", "verdict_id", keep="last")
    except TableMissing:
        raise TableMissing(f"{folder / 'verdicts.parquet'}: no verdicts "
                           "(run `skillsweep judge` or `skillsweep import` first)") from None


def choose_judge(verdicts: pl.DataFrame, judge: str | None) -> str:
    """The verdict set to analyse: the one asked for, or the only one the run has."""
    labels = sorted(verdicts["judge_label"].unique().to_list())
    if judge is None:
        if len(labels) != 1:
            raise ValueError(f"the run has several verdict sets ({', '.join(labels)}): pass --judge-label")
        return labels[0]
    if judge not in labels:
        raise ValueError(f"no verdict set {judge!r} (have: {', '.join(labels)})")
    return judge


def models_meta(run: str | Path) -> dict:
    """What the run's manifest records about each model (base, adapter, path)."""
    return read_manifest(run_dir(run)).get("models", {})


def _stage(frame: pl.DataFrame) -> str:
    return "post" if frame["adapter_hash"].drop_nulls().len() else "pre"


def compute(verdicts: pl.DataFrame, judge: str, *, meta: dict | None = None, allow_path_mismatch: bool = False,
            n_boot: int = N_BOOT, seed: int = 0) -> StatsSummary:
    """The statistics of one verdict set: per model paired rates, McNemar, bootstrap CIs, per skill."""
    meta = meta or {}
    rows = verdicts.filter(pl.col("judge_label") == judge)
    labels = sorted(rows["model_label"].unique().to_list())
    paired, models, skills = {}, {}, {}
    for label in labels:
        frame = rows.filter(pl.col("model_label") == label)
        assert_matched_path(frame, allow_mismatch=allow_path_mismatch)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            paired[label] = paired_outcomes(rows, label)
        models[label] = model_stats(paired[label], n_boot, seed)
        models[label]["warnings"] = [str(w.message) for w in caught]
        models[label]["base_model"] = frame["base_model"].drop_nulls().first() if "base_model" in frame.columns else None
        models[label]["stage"] = meta.get(label, {}).get("stage") or _stage(frame)
        models[label]["size"] = meta.get(label, {}).get("size")
        table = per_skill(paired[label])
        skills[label] = {"skills": table.to_dicts(), "clusters": cluster_summary(table),
                         "spearman_all": spearman_delta_vs_baseline(table),
                         "spearman_non_ceiling": spearman_delta_vs_baseline(table, non_ceiling=True)}
    pvalues = {label: m["mcnemar"]["p"] for label, m in models.items() if m["n"]}
    for label, p_holm in holm(pvalues).items():
        models[label]["p_holm"] = p_holm
    for label, p_bonf in bonferroni(pvalues).items():
        models[label]["p_bonferroni"] = p_bonf

    decomposition, refused = {}, {}
    for post, info in models.items():
        if info["stage"] != "post":
            continue
        pres = [l for l, m in models.items() if m["stage"] == "pre" and m["base_model"] == info["base_model"]]
        for pre in pres:
            try:
                assert_matched_path(rows.filter(pl.col("model_label") == pre),
                                    rows.filter(pl.col("model_label") == post), allow_mismatch=allow_path_mismatch)
            except PathMismatch as exc:
                # This pair alone is left out (the study's own Table 1 mixed 2048- and 1024-token
                # runs); every other statistic of the run still stands.
                refused[f"{post} vs {pre}"] = {"post": post, "pre": pre, "reason": str(exc)}
                continue
            # One entry per (post, pre) pair: a base with several pre-SFT models (a re-run, other
            # seeds) gives each its own decomposition.
            decomposition[f"{post} vs {pre}"] = {"post": post, "pre": pre,
                                                 **sft_decomposition(paired[pre], paired[post], n_boot=n_boot, seed=seed)}
    trajectory = [{"model": label, "base_model": m["base_model"], "size": m["size"], "stage": m["stage"],
                   "delta": m["delta"], "delta_ci95": m["delta_ci95"]} for label, m in models.items()]
    cross = {}
    for a, b in combinations(labels, 2):
        cross[f"{a} vs {b}"] = {
            "independent": cross_model(paired[a], paired[b], n_boot=n_boot, seed=seed),
            "paired_by_task": cross_model(paired[a], paired[b], paired_by_task=True, n_boot=n_boot, seed=seed),
        }
    groups: dict[str, dict] = {}
    for label in labels:
        groups.setdefault(seed_group(label), {})[label] = paired[label]
    seeds = {g: seed_summary(members, n_boot, seed) for g, members in groups.items() if len(members) > 1}
    return StatsSummary(judge=judge, bootstrap={"resamples": n_boot, "seed": seed}, models=models,
                        decomposition=decomposition, refused=refused, trajectory=trajectory, cross_model=cross,
                        per_skill=skills, seeds=seeds, single_seed_models=[g for g, members in groups.items() if len(members) == 1])


def run_stats(run: str | Path, judge: str | None = None, **kwargs) -> StatsSummary:
    """The statistics of a run's verdicts, for one judge label (see :func:`compute`)."""
    verdicts = load_verdicts(run)
    return compute(verdicts, choose_judge(verdicts, judge), meta=models_meta(run), **kwargs)

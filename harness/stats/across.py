"""Comparisons across models: Δ_A vs Δ_B, SFT decomposition, the pre-SFT trajectory."""

from __future__ import annotations

import numpy as np
import polars as pl

from harness.stats.paired import N_BOOT, Paired, bootstrap_indices, percentile_ci


def _delta(bl: np.ndarray, cu: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return cu[idx].mean(axis=1) - bl[idx].mean(axis=1)


def _joined(a: Paired, b: Paired) -> pl.DataFrame:
    return a.tasks.join(b.tasks, on="task_uid", how="inner", suffix="_b")


def cross_model(a: Paired, b: Paired, *, paired_by_task: bool = False, n_boot: int = N_BOOT,
                seed: int = 0) -> dict:
    """Bootstrap test of Δ_A > Δ_B: one-sided p = share of resamples with Δ_A − Δ_B ≤ 0.

    Independent resampling is the study's test. ``paired_by_task`` resamples the tasks both
    models saw with one index, which removes task-difficulty noise (more power)."""
    if paired_by_task:
        j = _joined(a, b)
        bl_a, cu_a = (j[c].to_numpy().astype(float) for c in ("bl", "cu"))
        bl_b, cu_b = (j[c].to_numpy().astype(float) for c in ("bl_b", "cu_b"))
        idx = bootstrap_indices(len(j), n_boot, seed)
        diff = _delta(bl_a, cu_a, idx) - _delta(bl_b, cu_b, idx)
        n = {"n_shared_tasks": len(j)}
    else:
        diff = (_delta(a.bl, a.cu, bootstrap_indices(len(a.bl), n_boot, seed))
                - _delta(b.bl, b.cu, bootstrap_indices(len(b.bl), n_boot, seed + 1)))
        bl_a, cu_a, bl_b, cu_b = a.bl, a.cu, b.bl, b.cu
        n = {"n_a": len(a.bl), "n_b": len(b.bl)}
    observed = (cu_a.mean() - bl_a.mean()) - (cu_b.mean() - bl_b.mean())
    return {"method": "paired-by-task" if paired_by_task else "independent", **n,
            "delta_a": float(cu_a.mean() - bl_a.mean()), "delta_b": float(cu_b.mean() - bl_b.mean()),
            "difference": float(observed), "ci95": percentile_ci(diff),
            "p_one_sided": float((diff <= 0).mean())}


def sft_decomposition(pre: Paired, post: Paired, *, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """ΔBL, ΔCU and Δ-lift of a post-SFT model over its pre-SFT base, on the tasks both saw,
    with CIs from one task resample shared by every quantity."""
    j = _joined(pre, post)
    bl0, cu0 = (j[c].to_numpy().astype(float) for c in ("bl", "cu"))
    bl1, cu1 = (j[c].to_numpy().astype(float) for c in ("bl_b", "cu_b"))
    idx = bootstrap_indices(len(j), n_boot, seed)
    boot = {
        "delta_bl": bl1[idx].mean(1) - bl0[idx].mean(1),
        "delta_cu": cu1[idx].mean(1) - cu0[idx].mean(1),
        "delta_lift": _delta(bl1, cu1, idx) - _delta(bl0, cu0, idx),
    }
    point = {
        "delta_bl": bl1.mean() - bl0.mean(),
        "delta_cu": cu1.mean() - cu0.mean(),
        "delta_lift": (cu1.mean() - bl1.mean()) - (cu0.mean() - bl0.mean()),
    }
    out: dict[str, float | list[float]] = {"n": len(j), "pre_delta": float(cu0.mean() - bl0.mean()),
                                           "post_delta": float(cu1.mean() - bl1.mean())}
    for key in boot:
        out[key] = float(point[key])
        out[f"{key}_ci95"] = percentile_ci(boot[key])
    return out

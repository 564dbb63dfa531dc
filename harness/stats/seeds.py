"""Several seeds of one model: spread across seeds and a pooled test.

Model labels ``NAME@SEED`` (e.g. ``v1.9@s1``, ``v1.9@s2``) form the group ``NAME``; a label
without ``@`` is its own group of one.
"""

from __future__ import annotations

import numpy as np

from harness.stats.paired import N_BOOT, Paired, bootstrap_indices, mcnemar, percentile_ci


def seed_summary(members: dict[str, Paired], n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Mean and spread of Δ over seeds, McNemar on the cells pooled over seeds, and a task
    bootstrap CI of the mean Δ (one resample of the shared tasks applied to every seed)."""
    deltas = {label: float(p.cu.mean() - p.bl.mean()) for label, p in members.items()}
    cells = np.zeros(4, dtype=int)
    for p in members.values():
        bl, cu = p.bl, p.cu
        cells += [int(((bl == 1) & (cu == 1)).sum()), int(((bl == 1) & (cu == 0)).sum()),
                  int(((bl == 0) & (cu == 1)).sum()), int(((bl == 0) & (cu == 0)).sum())]
    shared = set.intersection(*(set(p.tasks["task_uid"]) for p in members.values()))
    order = sorted(shared)
    stacks = []
    for p in members.values():
        frame = p.tasks.filter(p.tasks["task_uid"].is_in(order)).sort("task_uid")
        stacks.append((frame["cu"].to_numpy().astype(float) - frame["bl"].to_numpy().astype(float)))
    per_task = np.mean(stacks, axis=0)  # mean over seeds of each task's cu − bl
    ci = percentile_ci(per_task[bootstrap_indices(len(order), n_boot, seed)].mean(axis=1)) if order else None
    values = np.array(list(deltas.values()))
    return {
        "seeds": sorted(members),
        "deltas": deltas,
        "delta_mean": float(values.mean()),
        "delta_sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "delta_min": float(values.min()),
        "delta_max": float(values.max()),
        "pooled_mcnemar": mcnemar(*map(int, cells)).as_dict(),
        "mean_delta_ci95": ci,
        "shared_tasks": len(order),
    }

"""What the run browser shows: one record per cell with every judge's verdict, as JSON.

Prompts are rebuilt from the bench the run names (episodes keep only the prompt hash) and
stored once per distinct prompt; a cell points at its prompt by index. Nothing here reads
the network; a run without a resolvable bench still shows responses and verdicts.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from harness.bench import BenchError, load_bench
from harness.judging.agreement import agreement
from harness.prompts import render
from harness.runstore import run_dir

# Per judge: [passed (1/0/None), rule, extracted, rationale, unscored reason, escalated from, kind, judge]
VERDICT_FIELDS = ("passed", "rule", "extracted", "rationale", "unscored_reason", "escalated_from", "judge_kind", "judge")


def _bench_prompts(folder: Path, episodes: pl.DataFrame) -> tuple[dict, dict]:
    """(task uid -> question/expected, prompt hash -> messages); empty when the bench is unavailable."""
    manifest = folder / "manifest.json"
    spec = (json.loads(manifest.read_text()).get("bench") or {}).get("spec") if manifest.exists() else None
    if not spec:
        return {}, {}

    try:
        bench = load_bench(spec)
    except (BenchError, FileNotFoundError, ValueError):
        return {}, {}
    by_uid = {t.uid: t for t in bench.tasks}
    tasks, prompts = {}, {}
    for uid, condition in episodes.select("task_uid", "condition").unique().iter_rows():
        task = by_uid.get(uid)
        if task is None:
            continue
        tasks[uid] = {"question": task.question, "expected": task.expected, "title": task.title}
        try:
            rendered = render(bench, task, condition)
        except (KeyError, ValueError):  # a condition this bench cannot render (e.g. an imported one)
            continue
        prompts[rendered.hash] = [m["content"] for m in rendered.messages]
    return tasks, prompts


def _agreements(verdicts: pl.DataFrame, labels: list[str]) -> list[dict]:
    out = []
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            result = agreement(verdicts, a, b)
            out.append({"a": a, "b": b, "models": {
                m: {k: v[k] for k in ("n", "agreement", "kappa", "unscored_excluded")} |
                   {"disagree": v["confusion"]["a_only"] + v["confusion"]["b_only"]}
                for m, v in result["models"].items()}})
    return out


def build_payload(run: str | Path) -> dict:
    """Everything the browser page needs for one run."""
    folder = run_dir(run)
    path = folder / "episodes.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no episodes (run `skillsweep generate` or `skillsweep import` first)")
    episodes = pl.read_parquet(path)
    verdict_file = folder / "verdicts.parquet"
    verdicts = pl.read_parquet(verdict_file) if verdict_file.is_file() else pl.DataFrame()
    labels = sorted(verdicts["judge_label"].unique().to_list()) if len(verdicts) else []
    by_cell: dict[str, dict] = {}
    if len(verdicts):
        for field in VERDICT_FIELDS:
            if field not in verdicts.columns:
                verdicts = verdicts.with_columns(pl.lit(None).alias(field))
        for row in verdicts.select("cell_id", "judge_label", *VERDICT_FIELDS).iter_rows(named=True):
            passed = row["passed"]
            by_cell.setdefault(row["cell_id"], {})[row["judge_label"]] = [
                None if passed is None else int(passed), *(row[f] for f in VERDICT_FIELDS[1:])]
    tasks, prompts = _bench_prompts(folder, episodes)
    prompt_index = {h: i for i, h in enumerate(prompts)}
    cols = set(episodes.columns)
    cells = []
    for ep in episodes.iter_rows(named=True):
        final = ep.get("final") if "final" in cols else None
        cells.append({
            "id": ep["cell_id"], "model": ep.get("model_label"), "base": ep.get("base_model"),
            "adapter": ep.get("adapter_hash"), "cond": ep.get("condition"), "task": ep.get("task_uid"),
            "skill": ep.get("skill"), "qt": ep.get("query_type"),
            "think": ep.get("think") if "think" in cols else None,
            "final": final if final is not None else ep.get("response"),
            "finish": ep.get("finish_reason") if "finish_reason" in cols else None,
            "prompt": prompt_index.get(ep.get("prompt_hash")),
            "v": by_cell.get(ep["cell_id"], {}),
        })
    return {"run": folder.name, "judges": labels, "verdict_fields": list(VERDICT_FIELDS), "cells": cells,
            "tasks": tasks, "prompts": list(prompts.values()),
            "agreement": _agreements(verdicts, labels) if len(labels) > 1 else []}

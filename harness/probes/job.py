"""``skillsweep probe-battery``: the battery on the bench's generation path, scored, base vs adapters.

Every target (a base model and its adapters, all on one server) answers every probe under a
generic system prompt, greedily, through the same engine as the bench (cells, journal,
resume). Scores per response: ``format_locked`` and ``phantom_skill_block`` by rule on every
probe; ``factual_hit`` on factual probes, by rule for short answers and by the LLM judge for a
reference answer; ``confabulated`` on trick probes, by the LLM judge with a versioned rubric.
Each adapter is compared with its base per column (McNemar over the probes scored for both).

Files in the run folder: ``episodes.jsonl/.parquet`` (the responses), ``probe_scores.jsonl/
.parquet`` (one row per response and column), ``judge_calls.jsonl`` (LLM judge calls),
``probe_table.parquet`` (one row per target and column, with the paired test), ``manifest.json``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import cast

import polars as pl

from harness.authoring.templates import load_prompt
from harness.client import Sampling
from harness.generate import Cell, Target, cell_id, generate_vllm
from harness.generation_job import GenerateRequest, _serve, _targets_local, _targets_on_url
from harness.judging.job import JudgeRequest, JudgeStats, LLMJudge
from harness.judging.llm_judge import JUDGE_PROMPT_VERSION, judge_messages
from harness.judging.verdict import Mode, Verdict
from harness.probes.battery import Battery, Probe, ProbeKind, load_battery
from harness.probes.rules import RULES_VERSION, factual_hit, format_locked, phantom_skill_block
from harness.prompts import RenderedPrompt
from harness.provenance import git_commit, package_versions
from harness.runstore import RunStore, run_dir, update_manifest
from harness.stats.paired import mcnemar

PROBE_PROMPT_VERSION = "probe-v1"
PROBE_SYSTEM = "You are a helpful assistant."
CONDITION = "probe"
RUBRIC = "confab-v1"
RUBRICS_DIR = Path(__file__).parent / "rubrics"
COLUMNS = ("format_locked", "factual_hit", "confabulated", "phantom_skill_block")


@dataclass
class ProbeRequest:
    run: str
    # Targets already served (the sweep); or, like ``generate``: a model with adapters on a
    # server this job starts, or served names on a running server (``url``).
    targets: list[Target] = field(default_factory=list)
    model: str | None = None
    adapters: list[tuple[str, Path]] = field(default_factory=list)
    adapter_names: list[str] = field(default_factory=list)  # with url: adapters' served names or aliases
    url: str | None = None
    battery: str = "builtin"
    sampling: Sampling = Sampling(max_tokens=256, repetition_penalty=1.05)
    judge_model: str | None = None  # litellm model string; None: LLM-judged columns stay unscored
    judge_api_base: str | None = None
    judge_label: str | None = None
    concurrency: int = 32
    max_model_len: int = 4096


def probe_prompt(probe: Probe) -> RenderedPrompt:
    """The messages for a probe: the probe system prompt and the probe's text (no skill block)."""
    messages = ({"role": "system", "content": PROBE_SYSTEM}, {"role": "user", "content": probe.prompt})
    return RenderedPrompt(probe, CONDITION, None, messages)  # a probe stands in for a task


def _score_id(cell: str, column: str, scorer: str) -> str:
    return hashlib.sha256(json.dumps([cell, column, scorer]).encode()).hexdigest()[:32]


def _rule_row(ep: dict, probe: Probe, column: str, value: bool, rule: str) -> dict:
    return {"score_id": _score_id(ep["cell_id"], column, RULES_VERSION), "cell_id": ep["cell_id"],
            "model_label": ep["model_label"], "probe_uid": probe.uid, "kind": probe.kind.value,
            "column": column, "value": value, "scorer": "rule", "scorer_version": RULES_VERSION, "rule": rule,
            "unscored_reason": None, "rationale": None, "scored_at": time.time()}


def rule_scores(ep: dict, probe: Probe) -> list[dict]:
    """The rule-based scores of one probe episode: format lock, phantom skill block, factual hit."""
    final = ep.get("final")
    text = final if final is not None else ep.get("response") or ""
    rows = [_rule_row(ep, probe, "format_locked", format_locked(text), "answer-tag"),
            _rule_row(ep, probe, "phantom_skill_block", phantom_skill_block(text), "phantom-patterns")]
    if probe.kind == ProbeKind.FACTUAL and probe.answers:
        rows.append(_rule_row(ep, probe, "factual_hit", factual_hit(text, probe.answers), "short-answer"))
    return rows


def _judge_messages(probe: Probe, response: str) -> tuple[str, list[dict], str]:
    """(column, messages, prompt version) for a probe the LLM judge scores."""
    if probe.kind == ProbeKind.TRICK:
        rubric = load_prompt(RUBRIC, RUBRICS_DIR)
        return "confabulated", rubric.messages(prompt=probe.prompt, false_premise=probe.false_premise,
                                               truth=probe.truth, response=response), RUBRIC
    return "factual_hit", judge_messages(question=probe.prompt, passage="", expected=probe.reference,
                                         must_identify=[], correct_conclusion=probe.reference,
                                         response=response), JUDGE_PROMPT_VERSION


def _needs_judge(probe: Probe) -> bool:
    return probe.kind == ProbeKind.TRICK or (probe.kind == ProbeKind.FACTUAL and not probe.answers)


def _judged_row(ep: dict, probe: Probe, column: str, version: str, label: str, verdict: Verdict) -> dict:
    value = None if verdict.passed is None else (not verdict.passed if column == "confabulated" else verdict.passed)
    return {"score_id": _score_id(ep["cell_id"], column, f"{label}:{version}"), "cell_id": ep["cell_id"],
            "model_label": ep["model_label"], "probe_uid": probe.uid, "kind": probe.kind.value, "column": column,
            "value": value, "scorer": label, "scorer_version": version, "rule": verdict.rule,
            "unscored_reason": verdict.unscored_reason, "rationale": verdict.rationale, "scored_at": time.time()}


def score(folder: Path, episodes: pl.DataFrame, battery: Battery, req: ProbeRequest) -> pl.DataFrame:
    """Every column for every response; finished scores are kept, unscored LLM ones retried."""
    probes = {p.uid: p for p in battery.probes}
    label = req.judge_label or (req.judge_model.split("/")[-1] if req.judge_model else "no-judge")
    with RunStore(folder, "probe_scores", "score_id", keep="last") as store, \
            RunStore(folder, "judge_calls", "call_id") as calls:
        latest = store.latest()
        todo = []
        for ep in episodes.iter_rows(named=True):
            probe = probes.get(ep["task_uid"])
            if probe is None:
                continue
            for row in rule_scores(ep, probe):
                if row["score_id"] not in latest:
                    store.append(row)
            if _needs_judge(probe):
                column, messages, version = _judge_messages(probe, ep.get("final") or ep.get("response") or "")
                prior = latest.get(_score_id(ep["cell_id"], column, f"{label}:{version}"))
                if prior is None or prior["value"] is None:
                    todo.append((ep, probe, column, messages, version))
        if todo and req.judge_model:
            judge = LLMJudge(JudgeRequest(run=str(folder), mode=Mode.LLM_ONLY, judge_model=req.judge_model,
                                          api_base=req.judge_api_base, concurrency=req.concurrency),
                             JudgeStats(), calls)

            async def one(ep, probe, column, messages, version):
                verdict, _ = await judge.judge(_score_id(ep["cell_id"], column, label), messages)
                store.append(_judged_row(ep, probe, column, version, label, verdict))

            async def main():
                await asyncio.gather(*(one(*item) for item in todo))

            asyncio.run(main())
        else:
            for ep, probe, column, _, version in todo:
                store.append(_judged_row(ep, probe, column, version, label,
                                         Verdict.unscored("none", "no LLM judge configured for the probe battery")))
        return store.write_table()


def paired_table(scores: pl.DataFrame, targets: list[Target]) -> pl.DataFrame:
    """One row per target and column: n scored, positives, rate; adapters against their base."""
    base_of = {t.base_model: t.label for t in targets if t.adapter_hash is None and t.backend != "api"}
    rows = []
    for t in targets:
        mine = scores.filter(pl.col("model_label") == t.label)
        base_label = base_of.get(t.base_model) if t.adapter_hash else None
        for column in COLUMNS:
            col = mine.filter(pl.col("column") == column)
            if col.is_empty():
                continue
            scored = col.filter(pl.col("value").is_not_null())
            row = {"model_label": t.label, "base_label": base_label, "column": column, "n": len(scored),
                   "positives": int(scored["value"].sum() or 0), "unscored": len(col) - len(scored),
                   "rate": float(cast(float, scored["value"].mean())) if len(scored) else None,  # a numeric mean
                   "a": None, "b": None, "c": None, "d": None, "p": None, "method": None, "n_paired": None}
            if base_label:
                base = (scores.filter((pl.col("model_label") == base_label) & (pl.col("column") == column)
                                      & pl.col("value").is_not_null())
                        .select("probe_uid", pl.col("value").alias("base")))
                both = scored.select("probe_uid", "value").join(base, on="probe_uid")
                # b: flagged for the base only, c: for the adapter only (as baseline/curated in McNemar).
                a = int((both["base"] & both["value"]).sum())
                b = int((both["base"] & ~both["value"]).sum())
                c = int((~both["base"] & both["value"]).sum())
                d = len(both) - a - b - c
                test = mcnemar(a, b, c, d)
                row.update(a=a, b=b, c=c, d=d, p=test.p, method=test.method, n_paired=len(both))
            rows.append(row)
    schema = {"model_label": pl.Utf8, "base_label": pl.Utf8, "column": pl.Utf8, "n": pl.Int64,
              "positives": pl.Int64, "unscored": pl.Int64, "rate": pl.Float64, "a": pl.Int64, "b": pl.Int64,
              "c": pl.Int64, "d": pl.Int64, "p": pl.Float64, "method": pl.Utf8, "n_paired": pl.Int64}
    return pl.DataFrame(rows, schema=schema)


def _targets(req: ProbeRequest, stack: ExitStack, cells_done) -> tuple[list[Target], dict]:
    if req.targets:
        return [replace(t, sampling=req.sampling) for t in req.targets], {}
    if not req.model:
        raise ValueError("the probe battery needs targets, or --model")
    greq = GenerateRequest(run=req.run, model=req.model, adapters=req.adapters, url=req.url, sampling=req.sampling,
                           max_model_len=req.max_model_len)
    if req.url:
        targets, engine = _targets_on_url(greq)
        for name in req.adapter_names:
            targets += _targets_on_url(replace(greq, model=name))[0]
        return targets, engine
    targets, base, infos = _targets_local(greq)
    if cells_done(targets):
        return targets, {}
    return _serve(greq, base, infos, targets, stack)


def run_probe_battery(req: ProbeRequest, progress=None) -> dict:
    """Run a probe battery against base and adapters, score it by rules, write its table; returns a summary."""
    battery = load_battery(req.battery)
    folder = run_dir(req.run)
    with ExitStack() as stack:
        store = stack.enter_context(RunStore(folder))

        def plan(targets: list[Target]) -> list[Cell]:
            return [Cell(cell_id(t, p), t, p) for t in targets for p in map(probe_prompt, battery.probes)]

        targets, engine = _targets(req, stack, lambda ts: not {c.id for c in plan(ts)} - store.done_ids())
        cells = plan(targets)
        stats = asyncio.run(generate_vllm(cells, store, folder.name, concurrency=req.concurrency, progress=progress))
        episodes = store.write_table()
    planned = {c.id for c in cells}
    episodes = episodes.filter(pl.col("cell_id").is_in(list(planned))) if len(episodes) else episodes
    scores = score(folder, episodes, battery, req) if len(episodes) else pl.DataFrame()
    table = paired_table(scores, targets) if len(scores) else paired_table(
        pl.DataFrame(schema={"model_label": pl.Utf8, "column": pl.Utf8, "value": pl.Boolean, "probe_uid": pl.Utf8}),
        targets)
    table.write_parquet(folder / "probe_table.parquet")
    rubric = load_prompt(RUBRIC, RUBRICS_DIR)
    missing = sorted(planned - set(episodes["cell_id"].to_list() if len(episodes) else []))

    update_manifest(folder, git_commit=git_commit(), packages=package_versions(),
                    probes={"battery": {"name": battery.name, "spec": str(req.battery), "hash": battery.content_hash(),
                                        "probes": len(battery.probes)},
                            "system_prompt": PROBE_SYSTEM, "prompt_version": PROBE_PROMPT_VERSION,
                            "rules_version": RULES_VERSION, "rubric": rubric.provenance(),
                            "judge": req.judge_model, "judge_label": req.judge_label,
                            "sampling": req.sampling.as_dict(),
                            "targets": {t.label: {"base_model": t.base_model, "adapter_hash": t.adapter_hash,
                                                  "served_name": t.served_name} for t in targets},
                            "last_generation": stats.as_dict(), "missing_cells": missing},
                    **({"engine": engine} if engine else {}))
    return {"run_dir": str(folder), "targets": [t.label for t in targets], "cells": len(cells),
            "missing": len(missing), "scores": len(scores), "table": table.to_dicts()}

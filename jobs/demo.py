"""``make demo``: the embedded default end to end on what exists so far.

Prepares the demo model, writes a seeded random LoRA adapter for it (a stand-in until the
training recipes exist), and generates every (task, condition, model) cell of the built-in
bench's eval split on one vLLM server (base and adapter, baseline and curated), then scores
them with the deterministic judge and writes the statistics and report. Re-running resumes
(finished cells and verdicts are skipped).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table

from harness.client import Sampling
from harness.generation_job import GenerateRequest, run_generation
from harness.judging.job import JudgeRequest, run_judging
from harness.models import resolve
from harness.report import render_report
from train.random_adapter import make_random_adapter

DEMO_MODEL = "local:smollm2-135m-instruct"


def run_demo(out: Path, console: Console) -> dict:
    started = time.time()
    base = resolve(DEMO_MODEL)
    adapter_dir = out / "adapters" / "random-r8-s0"
    if not (adapter_dir / "adapter_config.json").exists():
        make_random_adapter(base.location, adapter_dir, rank=8, seed=0, scale=0.02)
    console.print(f"generating: {DEMO_MODEL} and adapter 'demo', built-in bench (eval), baseline + curated")
    summary = run_generation(GenerateRequest(
        run=str(out / "run"), model=DEMO_MODEL, adapters=[("demo", adapter_dir)],
        sampling=Sampling(max_tokens=256, repetition_penalty=1.05), concurrency=64, max_model_len=2048))
    episodes = pl.read_parquet(out / "run" / "episodes.parquet")
    judged = run_judging(JudgeRequest(run=str(out / "run"), mode="deterministic"))
    verdicts = pl.read_parquet(out / "run" / "verdicts.parquet").filter(pl.col("judge_label") == judged["label"])
    table = Table()
    table.add_column("model", overflow="fold", min_width=26)  # labels differ only at the end (+adapter)
    for name in ("condition", "episodes", "mean tokens", "passed", "failed", "unscored"):
        table.add_column(name)
    stats = (episodes.join(verdicts.select("cell_id", "passed"), on="cell_id", how="left")
             .group_by("model_label", "condition").agg(
                 pl.len().alias("n"), pl.col("completion_tokens").mean().alias("tokens"),
                 (pl.col("passed") == True).sum().alias("passed"),  # noqa: E712
                 (pl.col("passed") == False).sum().alias("failed"),  # noqa: E712
                 pl.col("passed").is_null().sum().alias("unscored"))
             .sort("model_label", "condition"))
    for row in stats.iter_rows(named=True):
        table.add_row(row["model_label"], row["condition"], str(row["n"]), f"{row['tokens']:.0f}",
                      str(row["passed"]), str(row["failed"]), str(row["unscored"]))
    console.print(table)
    console.print("deterministic judge: FREE_FORM tasks and answers without a clear final answer are unscored "
                  "(an LLM judge scores them: `skillsweep judge RUN --mode det-mixed --judge ...`)")
    example = episodes.filter(pl.col("condition") == "curated").row(0, named=True)
    console.print(f"example ({example['model_label']}, {example['task_uid']}, curated):\n{example['response'][:400]}",
                  markup=False, highlight=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tasks left unscored by the deterministic judge are dropped
        rendered = render_report(str(out / "run"))
    console.print(f"{summary['rows']} episodes, {summary['missing']} missing, in {time.time() - started:.0f} s; "
                  f"run folder: {out / 'run'} (episodes.parquet, verdicts.parquet, stats.json)")
    console.print(f"report: {rendered['report_html']} (and report.md)")
    return summary

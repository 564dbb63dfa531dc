"""``make demo``: the embedded default end to end on what exists so far.

Prepares the demo model, writes a seeded random LoRA adapter for it (a stand-in until the
training recipes exist), and generates every (task, condition, model) cell of the built-in
bench's eval split on one vLLM server: base and adapter, baseline and curated. Re-running
resumes (finished cells are skipped).
"""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table

from harness.client import Sampling
from harness.generation_job import GenerateRequest, run_generation
from harness.models import resolve
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
    table = Table("model", "condition", "episodes", "mean output tokens", "hit max tokens")
    for row in (episodes.group_by("model_label", "condition", maintain_order=True)
                .agg(pl.len().alias("n"), pl.col("completion_tokens").mean().alias("tokens"),
                     (pl.col("finish_reason") == "length").sum().alias("truncated"))
                .sort("model_label", "condition").iter_rows(named=True)):
        table.add_row(row["model_label"], row["condition"], str(row["n"]), f"{row['tokens']:.0f}",
                      str(row["truncated"]))
    console.print(table)
    example = episodes.filter(pl.col("condition") == "curated").row(0, named=True)
    console.print(f"example ({example['model_label']}, {example['task_uid']}, curated):\n{example['response'][:400]}",
                  markup=False, highlight=False)
    console.print(f"{summary['rows']} episodes, {summary['missing']} missing, in {time.time() - started:.0f} s; "
                  f"run folder: {out / 'run'} (episodes.parquet, manifest.json)")
    return summary

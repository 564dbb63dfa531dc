"""Benches and probes: ``bench author`` (a bench from a teacher) and ``probe-battery``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from harness.cli.common import app, deprecated, fail, group, parse_adapter, refusing
from harness.client import Sampling

# harness.authoring.job and harness.probes.job (litellm, polars, the serving layer) are
# imported by the commands that use them: over a second on every other command's start.

bench_app = group("bench", "Benches: authoring with a teacher.")


@app.command("probe-battery")
def probe_battery(
    model: Annotated[str, typer.Option(help="model reference; with --url, the base's served name there")],
    run: Annotated[str, typer.Option(help="run name under results/, or a path")],
    adapter: Annotated[Optional[list[str]], typer.Option(help="NAME=PATH (own server), or with --url a served name or alias; repeatable")] = None,
    url: Annotated[Optional[str], typer.Option(help="use a running server instead of starting one")] = None,
    battery: Annotated[str, typer.Option(help="'builtin' or a probes JSONL file")] = "builtin",
    judge_model: Annotated[Optional[str], typer.Option("--judge-model", help="litellm judge for factual references and trick prompts")] = None,
    judge_old: Annotated[Optional[str], typer.Option("--judge", hidden=True, help="deprecated: --judge-model")] = None,
    judge_api_base: Optional[str] = None,
    max_tokens: int = 256,
    repetition_penalty: float = 1.05,
    concurrency: int = 32,
) -> None:
    """Run the generality probe battery on a base and its adapters, side by side; scores and paired tests."""
    from harness.probes.job import ProbeRequest, run_probe_battery

    judge_model = deprecated(judge_old, judge_model, "--judge", "--judge-model")
    adapters = [parse_adapter(a) for a in adapter or []] if not url else []
    with refusing(ValueError, FileNotFoundError, RuntimeError):
        summary = run_probe_battery(ProbeRequest(
            run=run, model=model, adapters=adapters, adapter_names=list(adapter or []) if url else [], url=url,
            battery=battery, judge_model=judge_model, judge_api_base=judge_api_base, concurrency=concurrency,
            sampling=Sampling(max_tokens=max_tokens, repetition_penalty=repetition_penalty or None)))
    print(json.dumps(summary))
    if summary["missing"]:
        raise fail(f"{summary['missing']} probe responses are missing (see manifest.json); re-run to retry them")


@bench_app.command("author")
def bench_author(
    skills: Annotated[Path, typer.Argument(help="declarative skills JSONL: name, category, description")],
    out: Annotated[Path, typer.Option(help="bench folder to write (native format); re-running resumes")],
    teacher: Annotated[str, typer.Option(help="a litellm model (anthropic/…, openrouter/…) or, with --teacher-url, a served name")],
    teacher_url: Annotated[Optional[str], typer.Option(help="a running vLLM server serving the teacher")] = None,
    tasks_per_skill: int = 15,
    mix: Annotated[str, typer.Option(help="query-type weights")] = "YES_NO=0.61,FREE_FORM=0.165,SINGLE_WORD=0.115,RANKING=0.11",
    eval_fraction: Annotated[float, typer.Option(help="share of each skill's tasks in the eval split")] = 1 / 3,
    seed: int = 0,
    temperature: float = 0.7,
    max_tokens: int = 2048,
    concurrency: int = 16,
    max_attempts: Annotated[int, typer.Option(help="teacher replies per unit that may fail to parse or validate")] = 3,
    json_schema: Annotated[bool, typer.Option(help="ask for schema-constrained JSON")] = True,
    sampling_seed: Annotated[bool, typer.Option(help="send the seed with each request (off for vLLM's CPU build at temperature > 0)")] = True,
    dedup_threshold: Annotated[float, typer.Option(help="MinHash Jaccard at or above which two tasks are near-duplicates")] = 0.8,
) -> None:
    """Procedural rewrite of each skill, then tasks per skill, split and de-duplicated: a native bench."""
    from harness.authoring.job import AuthorRequest, parse_mix, run_authoring

    with refusing(ValueError, FileNotFoundError):
        summary = run_authoring(AuthorRequest(
            skills_file=skills, out=out, teacher=teacher, teacher_url=teacher_url, tasks_per_skill=tasks_per_skill,
            mix=parse_mix(mix), eval_fraction=eval_fraction, seed=seed, temperature=temperature,
            max_tokens=max_tokens, concurrency=concurrency, max_attempts=max_attempts, json_schema=json_schema,
            sampling_seed=sampling_seed, dedup_threshold=dedup_threshold))
    print(json.dumps(summary))
    if summary["failed"]:
        raise fail(f"{len(summary['failed'])} teacher unit(s) failed (see {out}/manifest.json); re-run to retry them")

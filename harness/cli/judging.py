"""Judging: ``judge`` / ``rejudge`` a run's episodes into verdicts, ``agreement`` of two sets."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.table import Table

from harness.cli.common import app, console, deprecated, fail, positive, refusing, require
from harness.errors import EXIT_INCOMPLETE

# harness.judging.job and harness.stats.job (polars, the serving layer) are imported by the
# commands that use them: together they add over a second to every other command's start.

MODE_HELP = "det-mixed (extractor + LLM for FREE_FORM), llm-only, or deterministic (no LLM)"
JUDGE_MODEL_HELP = "litellm model, e.g. hosted_vllm/NAME or openrouter/openai/gpt-5"
LABEL_HELP = "name of this verdict set (default: mode:model)"


@app.command()
def judge(
    run: Annotated[str, typer.Argument(help="run name under results/, or a path (any stored run)")],
    mode: Annotated[str, typer.Option(help=MODE_HELP)] = "det-mixed",
    judge_model: Annotated[Optional[str], typer.Option("--judge-model", help=JUDGE_MODEL_HELP)] = None,
    judge_old: Annotated[Optional[str], typer.Option("--judge", hidden=True, help="deprecated: --judge-model")] = None,
    judge_label: Annotated[Optional[str], typer.Option("--judge-label", help=LABEL_HELP)] = None,
    label_old: Annotated[Optional[str], typer.Option("--label", hidden=True, help="deprecated: --judge-label")] = None,
    api_base: Annotated[Optional[str], typer.Option(help="judge endpoint, e.g. http://127.0.0.1:8000/v1")] = None,
    concurrency: Annotated[int, typer.Option(help="most judge calls in flight (adapts down on 429)")] = 64,
    timeout: Annotated[float, typer.Option(help="seconds per judge call to an API model (a local hosted_vllm judge has no cap)")] = 60.0,
    max_attempts: int = 6,
    only_unscored: Annotated[bool, typer.Option(help="retry only verdicts that are unscored")] = False,
    bench: Annotated[Optional[str], typer.Option(help="bench, if the run's manifest names none")] = None,
    json_schema: Annotated[bool, typer.Option(help="ask the judge for schema-constrained JSON")] = True,
) -> None:
    """Judge a run's episodes into verdicts.parquet; verdicts already made are skipped.

    `rejudge` is the same command: a new --judge-model and --judge-label add a verdict set beside the old."""
    from harness.judging.job import JudgeRequest, run_judging
    from harness.judging.verdict import MODES, Mode
    from harness.retry import RetryPolicy

    judge_model = deprecated(judge_old, judge_model, "--judge", "--judge-model")
    judge_label = deprecated(label_old, judge_label, "--label", "--judge-label")
    require(mode in MODES, "--mode", mode, "one of " + ", ".join(MODES))
    positive(concurrency=concurrency, max_attempts=max_attempts)
    require(timeout > 0, "--timeout", timeout, "seconds > 0")
    request = JudgeRequest(run=run, mode=Mode(mode), label=judge_label, judge_model=judge_model, api_base=api_base,
                           concurrency=concurrency, policy=RetryPolicy(max_attempts=max_attempts, timeout_s=timeout),
                           only_unscored=only_unscored, bench=bench, json_schema=json_schema)
    with refusing(ValueError, FileNotFoundError):
        summary = run_judging(request)
    print(json.dumps(summary.as_dict()))
    stats = summary.stats
    if stats.llm_verdicts and stats.llm_call_failed == stats.llm_verdicts:
        reasons = ", ".join(stats.unscored_reasons) or "?"
        raise fail(f"every judge call failed ({stats.llm_verdicts} verdicts left unscored: {reasons}); check "
                   "--judge-model and --api-base, then re-run with --only-unscored", EXIT_INCOMPLETE)


app.command("rejudge", help="Judge any stored run again with another judge (same options as judge).")(judge)


@app.command()
def agreement(
    run: Annotated[str, typer.Argument(help="run name or path")],
    judge_a: Annotated[str, typer.Option(help="verdict set label A")],
    judge_b: Annotated[str, typer.Option(help="verdict set label B")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Agreement of two verdict sets: kappa, raw agreement, 2x2 table, Δ shift, disagreements per skill."""
    from harness.judging.agreement import agreement as compute
    from harness.stats.job import load_verdicts

    verdicts = load_verdicts(run)
    with refusing(ValueError):
        result = compute(verdicts, judge_a, judge_b)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    table = Table("model", "n", "agreement", "κ", "κ BL", "κ CU", "Δ A", "Δ B", "shift", "unscored")
    fmt = lambda v: "-" if v is None else f"{v:+.3f}" if isinstance(v, float) and v < 0 else f"{v:.3f}"
    for label, m in result["models"].items():
        table.add_row(label, str(m["n"]), fmt(m["agreement"]), fmt(m["kappa"]), fmt(m["kappa_baseline"]),
                      fmt(m["kappa_curated"]), fmt(m["delta_a"]), fmt(m["delta_b"]), fmt(m["delta_shift"]),
                      str(m["unscored_excluded"]))
    console.print(table)

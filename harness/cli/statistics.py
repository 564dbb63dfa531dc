"""Statistics and reading runs: ``stats``, ``report``, ``view`` and ``import skillmix``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from harness.cli.common import app, console, deprecated, group, refusing, require
from harness.judging.verdict import MODES

# harness.stats.job, harness.report and harness.importer (polars, scipy, matplotlib) are
# imported by the commands that use them: over a second on every other command's start.

import_app = group("import", "Import runs from other tools.")

_LABEL_HELP = "verdict set (needed when there are several)"


@import_app.command("skillmix")
def import_skillmix_cmd(
    episodes: Annotated[Path, typer.Argument(help="the study's episodes.json")],
    model_label: Annotated[str, typer.Option(help="label of the model in this run")],
    judge_label: Annotated[str, typer.Option(help="label of the verdict set these episodes carry")],
    out: Annotated[str, typer.Option(help="run name under results/, or a path")],
    mode: Annotated[str, typer.Option(help="det-mixed or llm-only: how the study judged them")] = "det-mixed",
    tasks: Annotated[Optional[Path], typer.Option(help="tasks_eval.json: skills and query types")] = None,
    size: Annotated[Optional[str], typer.Option(help="model size label for plots, e.g. 2B")] = None,
    base: Annotated[Optional[str], typer.Option(help="base model id (default: from the episodes)")] = None,
    stage: Annotated[Optional[str], typer.Option(help="pre or post (default: post when the model has +lora:)")] = None,
) -> None:
    """Import the original study's episode log (several judge labels may share one run)."""
    from harness.importer import import_skillmix

    require(mode in MODES, "--mode", mode, "det-mixed, llm-only or deterministic")
    print(json.dumps(import_skillmix(episodes, out, model_label=model_label, judge_label=judge_label, mode=mode,
                                     tasks_json=tasks, size=size, base=base, stage=stage)))


@app.command()
def stats(
    run: Annotated[str, typer.Argument(help="run name or path")],
    judge_label: Annotated[Optional[str], typer.Option("--judge-label", help=_LABEL_HELP)] = None,
    judge_old: Annotated[Optional[str], typer.Option("--judge", hidden=True, help="deprecated: --judge-label")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    allow_path_mismatch: Annotated[bool, typer.Option(help="pair runs from different generation paths anyway")] = False,
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples")] = 10_000,
    seed: Annotated[int, typer.Option(help="bootstrap seed")] = 0,
) -> None:
    """Paired statistics per model: pass rates, Δ, McNemar, bootstrap CI, decomposition, per skill, seeds."""
    from harness.stats.job import run_stats

    judge_label = deprecated(judge_old, judge_label, "--judge", "--judge-label")
    require(bootstrap >= 100, "--bootstrap", bootstrap, "at least 100 resamples")
    with refusing(ValueError, FileNotFoundError):
        result = run_stats(run, judge_label, allow_path_mismatch=allow_path_mismatch, n_boot=bootstrap, seed=seed)
    if as_json:
        print(json.dumps(result.as_dict(), indent=2, default=str))
        return
    table = Table("model", "n", "BL", "CU", "Δ", "McNemar (a,b,c,d)", "p", "method", "95% CI on Δ", "unscored")
    for label, m in result.models.items():
        mc = m["mcnemar"]
        table.add_row(label, str(m["n"]), f"{m['baseline']['passed']} ({m['baseline']['rate']:.3f})",
                      f"{m['curated']['passed']} ({m['curated']['rate']:.3f})", f"{m['delta']:+.3f}",
                      f"{mc['a']},{mc['b']},{mc['c']},{mc['d']}", f"{mc['p']:.4g}", mc["method"],
                      f"[{m['delta_ci95'][0]:+.3f}, {m['delta_ci95'][1]:+.3f}]", str(m["unscored_excluded"]))
    console.print(f"judge: {result.judge}")
    console.print(table)
    for d in result.decomposition.values():
        console.print(f"SFT {d['pre']} → {d['post']}: ΔBL {d['delta_bl']:+.3f}, ΔCU {d['delta_cu']:+.3f}, "
                      f"Δ-lift {d['delta_lift']:+.3f} [{d['delta_lift_ci95'][0]:+.3f}, {d['delta_lift_ci95'][1]:+.3f}]")
    for d in result.refused.values():
        console.print(f"SFT {d['pre']} → {d['post']}: not computed: {d['reason']}")


@app.command()
def report(
    run: Annotated[str, typer.Argument(help="run name or path")],
    judge_label: Annotated[Optional[str], typer.Option("--judge-label", help="verdict set for the main tables")] = None,
    judge_old: Annotated[Optional[str], typer.Option("--judge", hidden=True, help="deprecated: --judge-label")] = None,
    judge_b: Annotated[Optional[str], typer.Option(help="second verdict set for the agreement table")] = None,
    allow_path_mismatch: bool = False,
) -> None:
    """Write report.md, report.html (self-contained), stats.json and PNG plots into the run folder."""
    from harness.report import render_report

    judge_label = deprecated(judge_old, judge_label, "--judge", "--judge-label")
    with refusing(ValueError, FileNotFoundError):
        print(json.dumps(render_report(run, judge_label, judge_b, allow_path_mismatch)))


@app.command()
def view(
    run: Annotated[str, typer.Argument(help="run name or path")],
    port: Annotated[int, typer.Option(help="port on 127.0.0.1 (0: a free one)")] = 0,
) -> None:
    """Browse a run's cells, responses and verdicts in a local web page (127.0.0.1); Ctrl-C stops it."""
    from harness.browser.server import make_server

    with refusing(ValueError, FileNotFoundError, OSError):
        server = make_server(run, port)
    print(f"http://127.0.0.1:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()

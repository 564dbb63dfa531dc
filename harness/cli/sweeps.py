"""Sweeps: ``plan`` (validate a config, estimate its makespan) and ``run`` (submit it to Ray)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from harness.cli.common import app, console, refusing

# jobs.* (the sweep config with its bench, recipes and probes; the Ray submitter) is imported
# by the commands that use it: about half a second on every other command's start.


@app.command()
def plan(
    config: Annotated[Path, typer.Argument(help="sweep config YAML")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
    estimate: Annotated[bool, typer.Option("--estimate", help="estimate the makespan on --cluster")] = False,
    cluster: Annotated[str, typer.Option(help="GPUSxCLASS or NODESxGPUSxCLASS, e.g. 8xH100, 2x4xH100")] = "8xH100",
) -> None:
    """Validate a sweep config and print its plan: servers, trainings, targets, cells. No GPU needed.
    With --estimate, also its makespan on a GPU pool and the lower bound it is compared with."""
    from jobs.estimate import estimate as estimate_makespan, parse_cluster
    from jobs.sweep_config import load_config, make_plan

    with refusing(ValueError, FileNotFoundError):
        planned = make_plan(load_config(config))
        described = planned.describe()
        if estimate:
            described["estimate"] = estimate_makespan(planned, parse_cluster(cluster)).describe()
    if as_json:
        print(json.dumps(described, indent=2))
        return
    console.print(f"sweep [bold]{described['sweep']}[/]: bench {described['bench']} ({described['split']}, "
                  f"{described['tasks']} tasks) × {', '.join(described['conditions'])}")
    table = Table("target", "kind", "max tokens")
    for t in described["targets"]:
        table.add_row(t["label"], t["kind"], str(t["max_tokens"]))
    console.print(table)
    for server in described["servers"]:
        console.print(f"server: {server}", highlight=False)
    for training in described["trainings"]:
        console.print(f"training: {training}", highlight=False)
    console.print(f"cells: {described['cells']}; verdicts: {described['verdicts']} "
                  f"({', '.join(j['label'] for j in described['judges'])})")
    if estimate:
        e = described["estimate"]
        console.print(f"estimate on {e['cluster']}: makespan {e['makespan_s']:.0f} s (replicas from free GPUs; "
                      f"{e['one_per_base_makespan_s']:.0f} s with one server per base); lower bound "
                      f"{e['lower_bound_s']:.0f} s (work {e['work_bound_s']:.0f} s, critical path "
                      f"{e['critical_path_s']:.0f} s); bound / makespan {e['bound_over_makespan']:.2f}", highlight=False)
        if e["left_out"]:
            console.print(f"left out (no GPU work): {', '.join(e['left_out'])}", highlight=False)


@app.command("run")
def run_sweep(
    config: Annotated[Path, typer.Argument(help="sweep config YAML")],
    run_name: Annotated[Optional[str], typer.Option("--run", help="run name (default: the config's name)")] = None,
    resume: Annotated[bool, typer.Option(help="continue an existing run; finished work is skipped")] = False,
    out: Annotated[Path, typer.Option(help="results root")] = Path("results"),
    address: Annotated[Optional[str], typer.Option(help="Ray dashboard address of a running cluster")] = None,
) -> None:
    """Start (or join) a local Ray instance and submit the sweep as a Ray job; streams its log."""
    from jobs.submit import submit_sweep

    code = submit_sweep(config, run_name=run_name, resume=resume, out=out, address=address, echo=print)
    if code:
        raise typer.Exit(code)

"""Generation: ``generate``, one greedy response per (task, condition, model) cell."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from harness.bench.model import SPLITS
from harness.cli.common import app, fail, parse_adapter, positive, refusing, require
from harness.client import Sampling
from harness.errors import EXIT_INCOMPLETE
from harness.prompts import condition_names

# harness.generation_job (and the serving layer under it) is imported by the command: it adds
# about a second to every other command's start.


@app.command()
def generate(
    model: Annotated[str, typer.Option(help="model reference; with --url, a served name (base, adapter or alias)")],
    run: Annotated[str, typer.Option(help="run name under results/, or a path")],
    adapter: Annotated[Optional[list[str]], typer.Option(help="NAME=PATH, repeatable (own server or hf)")] = None,
    bench: Annotated[str, typer.Option(help="'builtin', a native bench folder, or the study's files")] = "builtin",
    split: Annotated[str, typer.Option(help="eval, train or all")] = "eval",
    conditions: Annotated[str, typer.Option(help="comma-separated")] = "baseline,curated",
    url: Annotated[Optional[str], typer.Option(help="use a running server instead of starting one")] = None,
    backend: Annotated[str, typer.Option(help="vllm or hf (transformers generate, one at a time)")] = "vllm",
    base: Annotated[bool, typer.Option(help="also generate for the base model when adapters are given")] = True,
    max_tokens: int = 2048,
    repetition_penalty: float = 1.05,
    concurrency: int = 32,
    max_model_len: int = 4096,
) -> None:
    """Generate one greedy response per (task, condition, model) cell; re-running resumes."""
    from harness.generation_job import GenerateRequest, run_generation

    require(backend in ("vllm", "hf"), "--backend", backend, "vllm or hf")
    require(split in SPLITS, "--split", split, " or ".join(SPLITS))
    positive(max_tokens=max_tokens, concurrency=concurrency, max_model_len=max_model_len)
    require(repetition_penalty >= 0, "--repetition-penalty", repetition_penalty, "a number >= 0 (0: none)")
    try:
        names = condition_names(conditions)
    except ValueError as exc:
        raise fail(f"--conditions {conditions!r}: {exc}") from exc
    request = GenerateRequest(
        run=run, model=model, adapters=[parse_adapter(a) for a in adapter or []], bench=bench, split=split,
        conditions=names, include_base=base, url=url, backend="hf" if backend == "hf" else "vllm",
        sampling=Sampling(max_tokens=max_tokens, repetition_penalty=repetition_penalty or None),
        concurrency=concurrency, max_model_len=max_model_len)
    # Progress: one line per target every 15 s on stderr (harness.progress).
    with refusing(ValueError, FileNotFoundError):
        summary = run_generation(request)
    print(json.dumps(summary.as_dict()))
    if summary.missing:
        stats = summary.stats
        if stats.failed and not stats.done:
            first = (stats.errors or ["?"])[0]
            raise fail(f"every request failed ({stats.failed} cells; first: {first}); re-running will fail "
                       "the same way until that is fixed", EXIT_INCOMPLETE)
        raise fail(f"{summary.missing} cells have no episode (see manifest.json); re-run to retry them",
                   EXIT_INCOMPLETE)

"""Training: ``corpus build`` (teacher traces) and ``train`` (a recipe with TRL)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from harness.cli.common import app, deprecated, group, positive, refusing, require
from harness.client import Sampling

# train.* (torch, transformers, trl) is imported by the commands that use it: seconds on
# every other command's start.

corpus_app = group("corpus", "SFT corpora.")


@corpus_app.command("build")
def corpus_build(
    teacher: Annotated[str, typer.Option(help="a litellm model (anthropic/…, openrouter/…) or, with --teacher-url, a served name")],
    out: Annotated[Path, typer.Option(help="corpus JSONL to write")],
    bench: Annotated[str, typer.Option(help="bench whose train split is traced")] = "builtin",
    teacher_url: Annotated[Optional[str], typer.Option(help="a running vLLM server serving the teacher")] = None,
    judge_model: Annotated[Optional[str], typer.Option("--judge-model", help="litellm judge model (default: deterministic only)")] = None,
    judge_old: Annotated[Optional[str], typer.Option("--judge", hidden=True, help="deprecated: --judge-model")] = None,
    judge_api_base: Optional[str] = None,
    mode: Annotated[str, typer.Option(help="judge dispatch mode")] = "det-mixed",
    max_tokens: int = 2048,
    concurrency: int = 16,
) -> None:
    """Trace the train split with a teacher, judge the traces, keep the passing ones as chat rows."""
    from harness.judging.verdict import MODES, Mode
    from train.corpus import CorpusRequest, build_corpus

    judge_model = deprecated(judge_old, judge_model, "--judge", "--judge-model")
    require(mode in MODES, "--mode", mode, "one of " + ", ".join(MODES))
    positive(max_tokens=max_tokens, concurrency=concurrency)
    with refusing(ValueError, FileNotFoundError):
        summary = build_corpus(CorpusRequest(teacher=teacher, out=out, bench=bench, teacher_url=teacher_url,
                                             judge=judge_model, judge_api_base=judge_api_base, mode=Mode(mode),
                                             sampling=Sampling(max_tokens=max_tokens), concurrency=concurrency))
    print(json.dumps(summary.as_dict()))


@app.command()
def train(
    recipe_file: Annotated[Path, typer.Argument(help="recipe YAML (see eval_configs/recipes/)")],
    model: Annotated[Optional[str], typer.Option(help="override the recipe's base model, e.g. local:tiny-qwen3")] = None,
    seed: Annotated[Optional[int], typer.Option(help="train this seed only (default: the recipe's seeds)")] = None,
    out: Annotated[Path, typer.Option(help="folder for <recipe>-s<seed>/ outputs")] = Path("results/adapters"),
    corpus: Annotated[Optional[str], typer.Option(help="override the recipe's corpus")] = None,
) -> None:
    """Train a recipe (LoRA adapter or partial fine-tune) with TRL; writes training_meta.json beside it."""
    require(seed is None or seed >= 0, "--seed", seed, "an integer >= 0")
    from train.recipe import load_recipe
    from train.trainer import train_recipe

    with refusing(ValueError, FileNotFoundError):
        recipe = load_recipe(recipe_file)
        metas = train_recipe(recipe, out, seeds=[seed] if seed is not None else None, model=model, corpus=corpus)
    for meta in metas:
        print(json.dumps({"recipe_name": meta.recipe_name, "method": meta.method, "seed": meta.seed,
                          "steps": meta.steps, "train_loss": meta.train_loss, "content_hash": meta.content_hash,
                          "wall_s": meta.wall_s}))

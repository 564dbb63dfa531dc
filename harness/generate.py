"""Generation: one greedy response per (task, condition, model) cell, on a recorded path.

A *target* is one model on one generation path (base or adapter, vLLM or HF, sampling
settings). A *cell* is a target and a rendered prompt; its id hashes everything that determines
its output, so finished cells are recognised on resume and paths can be told apart later.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from harness.bench.model import Bench
from harness.client import Completion, Sampling, achat
from harness.prompts import PROMPT_VERSION, RenderedPrompt, render
from harness.provenance import versions_string
from harness.runstore import RunStore

log = logging.getLogger(__name__)

THINK_END = "</think>"


@dataclass(frozen=True)
class Target:
    label: str
    base_model: str  # identity of the base (harness.models.model_identity)
    backend: Literal["vllm", "hf"]
    sampling: Sampling
    adapter_name: str | None = None
    adapter_hash: str | None = None
    # vLLM: where and under which name; HF: what to load.
    url: str | None = None
    served_name: str | None = None
    model_path: str | None = None
    adapter_path: str | None = None

    def path_signature(self) -> dict:
        """The generation path: what must match for two targets' cells to be compared."""
        return {"backend": self.backend, **self.sampling.as_dict()}


@dataclass(frozen=True)
class Cell:
    id: str
    target: Target
    prompt: RenderedPrompt


def cell_id(target: Target, prompt: RenderedPrompt) -> str:
    key = {
        "base_model": target.base_model,
        "adapter_hash": target.adapter_hash,
        "path": target.path_signature(),
        "task_uid": prompt.task.uid,
        "condition": prompt.condition,
        "prompt_hash": prompt.hash,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def plan(bench: Bench, split: str, conditions: list[str], targets: list[Target]) -> list[Cell]:
    cells = []
    for target in targets:
        for task in bench.split(split):
            for condition in conditions:
                prompt = render(bench, task, condition)
                cells.append(Cell(cell_id(target, prompt), target, prompt))
    return cells


def split_think(text: str) -> tuple[str | None, str]:
    """Reasoning models' ``<think>…</think>`` part kept raw, apart from the final answer."""
    if THINK_END not in text:
        return None, text
    think, _, final = text.rpartition(THINK_END)
    return think.replace("<think>", "", 1).strip(), final.strip()


def episode_row(run: str, cell: Cell, completion: Completion, started_at: float) -> dict:
    t, p = cell.target, cell.prompt
    think, final = split_think(completion.text)
    return {
        "cell_id": cell.id,
        "run": run,
        "model_label": t.label,
        "base_model": t.base_model,
        "adapter_name": t.adapter_name,
        "adapter_hash": t.adapter_hash,
        "backend": t.backend,
        "task_uid": p.task.uid,
        "skill": p.task.skill,
        "query_type": p.task.query_type.value,
        "condition": p.condition,
        "prompt_version": PROMPT_VERSION,
        "prompt_hash": p.hash,
        "temperature": t.sampling.temperature,
        "max_tokens": t.sampling.max_tokens,
        "repetition_penalty": t.sampling.repetition_penalty,
        "seed": t.sampling.seed,
        "response": completion.text,
        "think": think,
        "final": final,
        "finish_reason": completion.finish_reason,
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "latency_s": round(completion.latency_s, 4),
        "started_at": started_at,
        "finished_at": time.time(),
        "versions": versions_string(),
    }


@dataclass
class GenerationStats:
    planned: int = 0
    skipped: int = 0
    done: int = 0
    failed: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "errors"} | {"errors": self.errors[:20]}


Progress = Callable[[GenerationStats], None]


async def _one(cell: Cell, run: str, store: RunStore, stats: GenerationStats, retries: int) -> None:
    t = cell.target
    for attempt in range(retries + 1):
        started = time.time()
        try:
            completion = await achat(t.url, t.served_name, list(cell.prompt.messages), t.sampling)
        except Exception as exc:  # transport and server errors: retried, then recorded
            # A 4xx (prompt too long for the context, unknown model) fails the same way again.
            client_error = 400 <= (getattr(exc, "status_code", None) or 0) < 500
            if attempt == retries or client_error:
                stats.failed += 1
                stats.errors.append(f"{cell.id} ({t.label}, {cell.prompt.task.uid}): {exc}")
                return
            await asyncio.sleep(min(30.0, 2 ** attempt) * (0.5 + random.random()))
            continue
        store.append(episode_row(run, cell, completion, started))
        stats.done += 1
        stats.completion_tokens += completion.completion_tokens or 0
        return


async def generate_vllm(cells: list[Cell], store: RunStore, run: str, *, concurrency: int = 32,
                        retries: int = 3, progress: Progress | None = None) -> GenerationStats:
    """Send every unfinished cell to its server, at most ``concurrency`` at a time."""
    done = store.done_ids()
    todo = [c for c in cells if c.id not in done]
    stats = GenerationStats(planned=len(cells), skipped=len(cells) - len(todo))
    gate = asyncio.Semaphore(concurrency)
    started = time.perf_counter()

    async def guarded(cell: Cell) -> None:
        async with gate:
            await _one(cell, run, store, stats, retries)
        if progress:
            progress(stats)

    await asyncio.gather(*(guarded(c) for c in todo))
    stats.wall_s = time.perf_counter() - started
    return stats


def generate_hf(cells: list[Cell], store: RunStore, run: str, *,
                progress: Progress | None = None) -> GenerationStats:
    """The study's original path: transformers ``generate``, one prompt at a time."""
    from harness.hf_backend import HFGenerator

    done = store.done_ids()
    todo = [c for c in cells if c.id not in done]
    stats = GenerationStats(planned=len(cells), skipped=len(cells) - len(todo))
    generators: dict[tuple, HFGenerator] = {}
    started = time.perf_counter()
    for cell in todo:
        t = cell.target
        key = (t.model_path, t.adapter_path)
        if key not in generators:
            generators.clear()  # one model in memory at a time
            generators[key] = HFGenerator(t.model_path, t.adapter_path)
        began = time.time()
        completion = generators[key].generate(list(cell.prompt.messages), t.sampling)
        store.append(episode_row(run, cell, completion, began))
        stats.done += 1
        stats.completion_tokens += completion.completion_tokens or 0
        if progress:
            progress(stats)
    stats.wall_s = time.perf_counter() - started
    return stats

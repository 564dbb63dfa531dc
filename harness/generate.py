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
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import httpx

from harness.bench.model import Bench
from harness.client import API_TIMEOUT_S, Completion, Sampling, achat
from harness.hf_backend import HFGenerator
from harness.progress import DEFAULT_EVERY_S, Snapshot, Ticker, stderr_line
from harness.prompts import PROMPT_VERSION, RenderedPrompt, render
from harness.provenance import versions_string
from harness.retry import (
    AdaptiveLimiter,
    CallFailed,
    FanoutCounters,
    RetryPolicy,
    call_with_retries,
    classify,
    failure_kind,
)
from harness.runstore import RunStore
from harness.schema import EPISODE_TYPES, row
from serve.engine_watch import EngineLost, EngineWatch, Health, WatchPolicy, afetch_metrics, next_limit

log = logging.getLogger(__name__)

THINK_END = "</think>"


# vllm: a served model; hf: transformers generate in-process; api: a litellm model (a reference row).
Backend = Literal["vllm", "hf", "api"]


@dataclass(frozen=True)
class Target:
    label: str
    base_model: str  # identity of the base (harness.models.model_identity)
    backend: Backend
    sampling: Sampling
    adapter_name: str | None = None
    adapter_hash: str | None = None
    # vLLM: where and under which name; HF: what to load.
    url: str | None = None
    served_name: str | None = None
    model_path: str | None = None
    adapter_path: str | None = None
    # The dtype the engine computes in (None: an API model, or a server we did not start).
    dtype: str | None = None

    def path_signature(self) -> dict:
        """The generation path: what must match for two targets' cells to be compared."""
        return {"backend": self.backend, "dtype": self.dtype, **self.sampling.as_dict()}


@dataclass(frozen=True)
class Cell:
    id: str
    target: Target
    prompt: RenderedPrompt


def cell_id(target: Target, prompt: RenderedPrompt) -> str:
    """A cell's stable id: what it asks of which weights by which path, so a rerun finds it done."""
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
    """Every cell of a generation: each target times each task of the split times each condition."""
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
    """The episodes-table row for one cell's completion: what was asked, of what, and the reply."""
    t, p = cell.target, cell.prompt
    think, final = split_think(completion.text)
    return row(EPISODE_TYPES, {
        "cell_id": cell.id,
        "run": run,
        "model_label": t.label,
        "base_model": t.base_model,
        "adapter_name": t.adapter_name,
        "adapter_hash": t.adapter_hash,
        "backend": t.backend,
        "dtype": t.dtype,
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
    })


@dataclass
class GenerationStats:
    planned: int = 0
    skipped: int = 0
    done: int = 0
    failed: int = 0
    completion_tokens: int = 0
    # Cells whose request was abandoned because their engine died or stalled, and sent again.
    requeued: int = 0
    # Transient failures (connection dropped, 5xx) retried on a live engine, and API timeouts.
    retried: int = 0
    timed_out: int = 0
    engine_losses: int = 0
    engine_restarts: int = 0
    # Cells the engine refused (a 4xx such as a prompt longer than the context): retrying cannot help.
    client_failed: int = 0
    wall_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "errors"} | {"errors": self.errors[:20]}

    def snapshot(self) -> Snapshot:
        extra = [f"{k} {getattr(self, k)}" for k in ("failed", "requeued", "retried") if getattr(self, k)]
        return Snapshot(self.done + self.failed, self.planned - self.skipped, self.completion_tokens,
                        " · ".join(extra))


Progress = Callable[[GenerationStats], None]


def cells_wanted(limit: int, held: int, *, giving_back: bool) -> int:
    """How many more cells a driver leases: enough to hold ``limit``, and none at all while it
    gives cells back (its engine is lost, or its limit was cut), even when it has none to give:
    a lease taken then would be dropped, and the queue would wait for it for ever."""
    return 0 if giving_back else max(0, limit - held)


def surplus_leases(limit: int, in_flight: int, unsent: int) -> int:
    """How many of a driver's leased, unsent cells its limit leaves no room for (given back)."""
    return max(0, unsent - max(0, limit - in_flight))


class CellSource(Protocol):
    """A work queue shared by the drivers of several replicas of one engine (a sweep's target on a
    base with several servers): each driver leases cells as it has room for them, so a slow or
    dying replica never holds the tail. Cells are named by id; every driver plans the same cells."""

    async def seed(self, ids: list[str]) -> None:
        """Offer the cells not yet done (the first driver's offer counts; later ones are ignored)."""

    async def exchange(self, done: list[str], want: int, give_back: list[str]) -> tuple[list[str], bool]:
        """Report leased cells resolved (recorded or failed) and hand back unsent ones; lease up to
        ``want`` more. Returns (new leases, whether every cell is resolved by some driver)."""
        ...
# Called when a local engine was lost: returns (api_base to use now, whether the server was
# restarted) or None when it is gone for good.
Reconnect = Callable[[str, Health], Awaitable["tuple[str, bool] | None"]]


async def wait_healthy(url: str, health: Health | None = None, wait_s: float = 120.0,
                       poll_s: float = 2.0) -> tuple[str, bool] | None:
    """The default reconnect (a :data:`Reconnect`, so it takes the lost engine's ``health``, dead or
    stalled alike): the same address, once it answers again within ``wait_s``."""
    deadline = time.monotonic() + wait_s
    async with httpx.AsyncClient(timeout=poll_s * 2) as client:
        while time.monotonic() < deadline:
            if await afetch_metrics(client, url) is not None:
                return url, False
            await asyncio.sleep(poll_s)
    return None


def _record(store: RunStore, run: str, cell: Cell, completion: Completion, started: float,
            stats: GenerationStats) -> None:
    store.append(episode_row(run, cell, completion, started))
    stats.done += 1
    stats.completion_tokens += completion.completion_tokens or 0


def _fail(stats: GenerationStats, cell: Cell, reason: str) -> None:
    stats.failed += 1
    stats.errors.append(f"{cell.id} ({cell.target.label}, {cell.prompt.task.uid}): {reason}")


# A dropped connection to a local engine costs no attempt (the watch decides whether the engine
# is gone), up to this many per cell, so an endpoint that refuses chats alone cannot loop forever.
MAX_CONNECTION_RETRIES = 20


# Backoff for retries on a local engine (its watch, not a timeout, decides when it is gone).
ENGINE_RETRY = RetryPolicy(timeout_s=None, max_delay_s=10.0)


async def _drive_engine(url: str, cells: list[Cell], store: RunStore, run: str, stats: GenerationStats, *,
                        concurrency: int, retries: int, policy: WatchPolicy, reconnect: Reconnect,
                        max_losses: int, source: CellSource | None = None) -> None:
    """Keep one local engine fed with ``cells`` until each has an episode or a recorded failure.

    With a ``source``, ``cells`` is the whole plan and the cells to send are leased from it; on an
    engine loss the unsent ones go back to it at once (another replica takes them) while this
    driver waits for its engine."""
    by_id = {c.id: c for c in cells}
    queue: deque[Cell] = deque() if source else deque(cells)
    delayed: list[tuple[float, Cell]] = []  # (due, cell): transient failures wait here, not the loop
    attempts: dict[str, int] = {}
    connection_errors: dict[str, int] = {}
    resolved: list[str] = []  # leased cells recorded or failed since the last exchange
    finished = source is None
    limit = min(concurrency, max(1, len(cells)))

    def resolve(cell: Cell) -> None:
        if source is not None:
            resolved.append(cell.id)

    async def exchange(give_back: list[Cell] | None = None) -> None:
        nonlocal finished, resolved
        assert source is not None, "called only with a source"
        want = cells_wanted(limit, len(in_flight) + len(queue) + len(delayed), giving_back=give_back is not None)
        if not (want or resolved or give_back):
            return  # nothing to ask or tell: spare the queue a call per completion
        leased, finished = await source.exchange(resolved, want, [c.id for c in give_back or []])
        resolved = []
        queue.extend(by_id[i] for i in leased)

    in_flight: dict[asyncio.Future, tuple[Cell, float]] = {}
    while True:
        in_flight = {}
        async with EngineWatch(url, policy) as watch:
            while not watch.lost.is_set():
                if source is not None:
                    await exchange()
                if not (queue or delayed or in_flight or not finished):
                    break
                now = time.monotonic()
                queue.extend(c for due, c in delayed if due <= now)
                delayed = [(due, c) for due, c in delayed if due > now]
                limit = next_limit(limit, len(in_flight), watch.latest, low=1, high=concurrency)
                if source is not None and (surplus := surplus_leases(limit, len(in_flight), len(queue))):
                    # Leased but unsent beyond the limit: back to the shared queue, for a replica with room.
                    await exchange([queue.pop() for _ in range(surplus)])
                while queue and len(in_flight) < limit:
                    cell = queue.popleft()
                    t = cell.target
                    assert t.served_name is not None, "a vLLM target has a served name"
                    call = achat(url, t.served_name, list(cell.prompt.messages), t.sampling)
                    in_flight[asyncio.ensure_future(watch.guard(call))] = (cell, time.time())
                if not in_flight:
                    wait = min([policy.poll_s, *(max(0.05, d - now) for d, _ in delayed)])
                    await asyncio.sleep(wait if delayed or source is None else min(wait, 0.2))
                    continue
                done, _ = await asyncio.wait(in_flight, timeout=policy.poll_s, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    cell, started = in_flight.pop(future)
                    exc = future.exception()
                    if exc is None:
                        _record(store, run, cell, future.result(), started, stats)
                        resolve(cell)
                    elif isinstance(exc, EngineLost):
                        queue.appendleft(cell)
                        stats.requeued += 1
                    elif failure_kind(exc) == "client":
                        stats.client_failed += 1
                        _fail(stats, cell, str(exc)[:300])
                        resolve(cell)
                    elif classify(exc) == "connection" and \
                            connection_errors.setdefault(cell.id, 0) < MAX_CONNECTION_RETRIES:
                        connection_errors[cell.id] += 1
                        stats.retried += 1
                        # Growing waits: while the watch is still deciding, a dead engine is not hammered.
                        delay = ENGINE_RETRY.delay(connection_errors[cell.id] - 1)
                        delayed.append((time.monotonic() + delay, cell))
                    elif attempts.setdefault(cell.id, 0) < retries:
                        # The engine is alive (the watch says so); a 5xx is retried after a backoff.
                        attempts[cell.id] += 1
                        stats.retried += 1
                        delayed.append((time.monotonic() + ENGINE_RETRY.delay(attempts[cell.id]), cell))
                    else:
                        _fail(stats, cell, f"gave up after {retries + 1} attempts: {str(exc)[:300]}")
                        resolve(cell)
            for future, (cell, started) in in_flight.items():
                if future.done() and not future.cancelled() and future.exception() is None:
                    _record(store, run, cell, future.result(), started, stats)
                    resolve(cell)
                    continue
                future.cancel()
                queue.appendleft(cell)
                stats.requeued += 1
            in_flight = {}
            # Cells waiting out a dropped connection were in flight on the engine now lost: they
            # are re-queued like the rest (and counted so), not retried against it.
            queue.extend(c for _, c in delayed)
            if watch.lost.is_set():
                stats.requeued += len(delayed)
            delayed = []
            health = watch.health
        if not watch.lost.is_set():
            return
        outstanding = len(queue)
        if source is not None:
            # The other replicas take these now; this driver rejoins once its engine is back.
            await exchange(list(queue))
            queue.clear()
        if not outstanding and finished:
            return
        stats.engine_losses += 1
        stderr_line(f"engine at {url} is {health.value} with {outstanding} cells outstanding; they are re-queued")
        back = await reconnect(url, health) if stats.engine_losses <= max_losses else None
        if back is None:
            for cell in queue:
                _fail(stats, cell, f"engine at {url} was {health.value} and did not come back")
            return
        url, restarted = back
        stats.engine_restarts += int(restarted)
        stderr_line(f"engine {'restarted' if restarted else 'answers again'} at {url}; resuming {len(queue)} cells")


async def _drive_api(cells: list[Cell], store: RunStore, run: str, stats: GenerationStats, *,
                     concurrency: int, retries: int) -> None:
    """API models: a per-call timeout, retries with backoff for transient failures."""
    limiter = AdaptiveLimiter(concurrency)
    policy = RetryPolicy(max_attempts=retries + 1, timeout_s=API_TIMEOUT_S)
    counters = FanoutCounters()

    async def one(cell: Cell) -> None:
        t = cell.target
        model = t.served_name
        assert model is not None, "an API target is served under its model string"
        started = time.time()
        try:
            completion, _ = await call_with_retries(
                lambda: achat(None, model, list(cell.prompt.messages), t.sampling, API_TIMEOUT_S),
                limiter, policy, counters)
        except CallFailed as exc:
            _fail(stats, cell, exc.reason)
            return
        _record(store, run, cell, completion, started, stats)

    await asyncio.gather(*(one(c) for c in cells))
    stats.retried += sum(counters.retries.values())
    stats.timed_out += counters.retries["timeout"] + counters.exhausted["timeout"]


async def generate_vllm(cells: list[Cell], store: RunStore, run: str, *, concurrency: int = 32,
                        retries: int = 3, progress: Progress | None = None, label: str | None = None,
                        progress_every_s: float = DEFAULT_EVERY_S, watch: WatchPolicy = WatchPolicy(),
                        reconnect: Reconnect | None = None, max_losses: int = 3,
                        source: CellSource | None = None, done: set[str] | None = None) -> GenerationStats:
    """Send every unfinished cell to its engine, keeping each engine's queue fed but short.

    Local engines (a URL) get no wall-clock cap per request; an engine found dead or stalled has
    its in-flight cells re-queued, and ``reconnect`` says where it is now. API models (no URL)
    keep a per-call timeout with retries. With a ``source`` (one engine, one of several replicas
    sharing the cells), the cells not in ``done`` are offered to it and leased from it."""
    done = store.done_ids() if done is None else done
    todo = [c for c in cells if c.id not in done]
    stats = GenerationStats(planned=len(cells), skipped=len(cells) - len(todo))
    started = time.perf_counter()
    groups: dict[str | None, list[Cell]] = {}
    for cell in todo:
        groups.setdefault(cell.target.url, []).append(cell)
    if source is not None:
        if len({c.target.url for c in cells}) != 1 or None in groups:
            raise ValueError("a shared cell source feeds one local engine")
        await source.seed([c.id for c in todo])
        groups = {cells[0].target.url: cells} if cells else {}
    name = label or ",".join(sorted({c.target.label for c in cells})) or "generate"
    async with Ticker(name, "cells", stats.snapshot, progress_every_s if todo else 0):
        await asyncio.gather(*(
            _drive_engine(url, group, store, run, stats, concurrency=concurrency, retries=retries, policy=watch,
                          reconnect=reconnect or wait_healthy, max_losses=max_losses, source=source) if url else
            _drive_api(group, store, run, stats, concurrency=concurrency, retries=retries)
            for url, group in groups.items()))
    stats.wall_s = time.perf_counter() - started
    if progress:
        progress(stats)
    return stats


def generate_hf(cells: list[Cell], store: RunStore, run: str, *,
                progress: Progress | None = None) -> GenerationStats:
    """The study's original path: transformers ``generate``, one prompt at a time."""
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
            assert t.model_path is not None, "an HF target names its model's path"
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

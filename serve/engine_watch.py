"""Is a local engine working, stalled or gone? Read from its ``/health`` and ``/metrics``.

A request to a local engine carries no wall-clock timeout: a busy CPU engine may take many
minutes over a queue, and abandoning its work only makes it redo it. Liveness is judged from
the engine itself instead: it is *dead* when its health check has failed several times in a
row, and *stalled* when it holds requests but its token counters have not moved for
``stall_s``. Only then are its in-flight requests abandoned and re-queued.

Everything that decides is a pure function over samples, so it is tested without a server.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass
from enum import Enum
from itertools import pairwise

import httpx


@dataclass(frozen=True)
class EngineSample:
    at: float  # monotonic seconds
    running: float
    waiting: float
    generation_tokens: float
    prompt_tokens: float

    @property
    def busy(self) -> bool:
        return self.running + self.waiting > 0

    @property
    def tokens(self) -> float:
        return self.generation_tokens + self.prompt_tokens


_METRICS = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:generation_tokens_total": "generation_tokens",
    "vllm:prompt_tokens_total": "prompt_tokens",
}


def parse_metrics(text: str, at: float | None = None) -> EngineSample:
    """Sum the gauges and counters we use over all label sets (one per served model)."""
    values = dict.fromkeys(_METRICS.values(), 0.0)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        metric, _, number = line.rpartition(" ")
        key = _METRICS.get(metric.split("{", 1)[0].strip())
        if key is None:
            continue
        try:
            values[key] += float(number)
        except ValueError:
            continue
    return EngineSample(time.monotonic() if at is None else at, **values)


def fetch_metrics(base_url: str, timeout_s: float = 5.0) -> EngineSample | None:
    """One sample from a server's ``/metrics`` (``base_url`` without ``/v1``), None if unreachable."""
    url = base_url.rstrip("/").removesuffix("/v1") + "/metrics"
    try:
        response = httpx.get(url, timeout=timeout_s)
    except httpx.HTTPError:
        return None
    return parse_metrics(response.text) if response.status_code == 200 else None


async def afetch_metrics(client: httpx.AsyncClient, base_url: str) -> EngineSample | None:
    """One sample of a vLLM server's ``/metrics``, or None when it does not answer."""
    url = base_url.rstrip("/").removesuffix("/v1") + "/metrics"
    try:
        response = await client.get(url)
    except httpx.HTTPError:
        return None
    return parse_metrics(response.text) if response.status_code == 200 else None


class _NoAnswer(Exception):
    """A poll that timed out: the engine may be busy; it counts as neither alive nor dead."""


async def poll_engine(client: httpx.AsyncClient, base_url: str) -> EngineSample | None:
    """One poll: a sample from /metrics; None when the engine is unreachable (connection refused
    or reset, or an error status) on /metrics *and* /health. A poll that only timed out raises
    :class:`_NoAnswer`: a CPU engine busy with a long prefill may answer slowly."""
    root = base_url.rstrip("/").removesuffix("/v1")
    try:
        response = await client.get(root + "/metrics")
        if response.status_code == 200:
            return parse_metrics(response.text)
    except httpx.TimeoutException:
        raise _NoAnswer from None
    except httpx.HTTPError:
        pass
    try:
        health = await client.get(root + "/health")
    except httpx.TimeoutException:
        raise _NoAnswer from None
    except httpx.HTTPError:
        return None
    if health.status_code == 200:  # alive, but its metrics are off: no sample, not dead
        raise _NoAnswer
    return None


class Health(str, Enum):
    OK = "ok"
    STALLED = "stalled"
    DEAD = "dead"


@dataclass(frozen=True)
class WatchPolicy:
    poll_s: float = 2.0
    dead_after: int = 3  # consecutive failed polls
    stall_s: float = 300.0  # busy with no token progress for this long


def assess(samples: list[EngineSample | None], policy: WatchPolicy, now: float) -> Health:
    """Judge an engine from its recent samples (oldest first; None = the poll failed)."""
    tail = samples[-policy.dead_after:]
    if len(tail) == policy.dead_after and all(s is None for s in tail):
        return Health.DEAD
    seen = [s for s in samples if s is not None]
    if not seen or not seen[-1].busy:
        return Health.OK
    latest = seen[-1]
    # The last moment the token counters moved, or the engine was idle.
    progress_at = seen[0].at
    for before, after in pairwise(seen):
        if after.tokens != before.tokens or not before.busy:
            progress_at = after.at
    return Health.STALLED if latest.at - progress_at >= policy.stall_s and now - progress_at >= policy.stall_s \
        else Health.OK


def next_limit(limit: int, in_flight: int, sample: EngineSample | None, *, low: int, high: int) -> int:
    """Client-side concurrency that keeps the engine's queue fed but short.

    The engine should always have a little waiting work (so a finished sequence is replaced at
    once) and never a long queue: a request waiting there is one no other replica can take (a
    replica started later finds every cell already sent), and a dead engine would take it down
    with it. When more than a quarter of what runs waits, the limit is cut to this driver's share
    of what runs (its requests in flight in the engine's running-to-all proportion: several
    drivers may share one engine) plus a quarter; while nothing waits and the whole limit is in
    use, it grows by an eighth."""
    if sample is None:
        return limit
    running, waiting = int(sample.running), int(sample.waiting)
    if waiting > max(4, running // 4) and in_flight:
        share = in_flight * running / (running + waiting)
        return max(low, min(limit, math.ceil(share + max(4.0, share / 4))))
    if waiting == 0 and in_flight >= limit:
        return min(high, limit + max(1, limit // 8))
    return limit


class EngineLost(Exception):
    """The engine a request was sent to is dead or stalled; the request was abandoned."""

    engine_lost = True  # read by harness.retry.classify

    def __init__(self, health: Health):
        super().__init__(f"engine {health.value}")
        self.health = health


class EngineWatch:
    """Polls one engine while requests are out. ``guard`` abandons a request only when the
    engine is judged dead or stalled (:func:`assess`); polling goes on, so a watch also sees
    the engine come back (:meth:`wait_ok`)."""

    def __init__(self, url: str, policy: WatchPolicy = WatchPolicy(), timeout_s: float = 15.0):
        self.url, self.policy, self.timeout_s = url, policy, timeout_s
        self.samples: deque[EngineSample | None] = deque(
            maxlen=max(policy.dead_after, 8) + int(policy.stall_s / policy.poll_s) + 2)
        self.health = Health.OK
        self.lost = asyncio.Event()
        self._ok = asyncio.Event()
        self._ok.set()
        self._task: asyncio.Task | None = None

    @property
    def latest(self) -> EngineSample | None:
        return self.samples[-1] if self.samples else None

    async def _poll(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            while True:
                try:
                    sample = await poll_engine(client, self.url)
                except _NoAnswer:
                    await asyncio.sleep(self.policy.poll_s)
                    continue
                if self.health is not Health.OK:
                    if sample is None:
                        await asyncio.sleep(self.policy.poll_s)
                        continue
                    # Back: start judging it afresh.
                    self.samples.clear()
                    self.health = Health.OK
                    self.lost.clear()
                    self._ok.set()
                self.samples.append(sample)
                health = assess(list(self.samples), self.policy, time.monotonic())
                if health is not Health.OK:
                    self.health = health
                    self._ok.clear()
                    self.lost.set()
                await asyncio.sleep(self.policy.poll_s)

    async def __aenter__(self) -> EngineWatch:
        self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *exc) -> None:
        if self._task:
            self._task.cancel()

    async def wait_ok(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._ok.wait(), timeout_s)
        except asyncio.TimeoutError:
            return False
        return True

    async def guard(self, coro):
        if self.lost.is_set():
            coro.close()
            raise EngineLost(self.health)
        work = asyncio.ensure_future(coro)
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            await asyncio.wait({work, lost}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            work.cancel()
            raise
        finally:
            lost.cancel()
        if work.done():
            return work.result()
        work.cancel()
        raise EngineLost(self.health)

"""Is a local engine working, stalled or gone? Read from its ``/health`` and ``/metrics``.

A request to a local engine carries no wall-clock timeout: a busy CPU engine may take many
minutes over a queue, and abandoning its work only makes it redo it. Liveness is judged from
the engine itself instead: it is *dead* when its health check has failed several times in a
row, and *stalled* when it holds requests but its token counters have not moved for
``stall_s``. Only then are its in-flight requests abandoned and re-queued.

Everything that decides is a pure function over samples, so it is tested without a server.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum

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
    url = base_url.rstrip("/").removesuffix("/v1") + "/metrics"
    try:
        response = await client.get(url)
    except httpx.HTTPError:
        return None
    return parse_metrics(response.text) if response.status_code == 200 else None


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
    for before, after in zip(seen, seen[1:]):
        if after.tokens != before.tokens or not before.busy:
            progress_at = after.at
    return Health.STALLED if latest.at - progress_at >= policy.stall_s and now - progress_at >= policy.stall_s \
        else Health.OK


def next_limit(limit: int, in_flight: int, sample: EngineSample | None, *, low: int, high: int) -> int:
    """Client-side concurrency that keeps the engine's queue fed but short.

    The engine should always have a little waiting work (so a finished sequence is replaced at
    once) and never a long queue (which only moves waiting from our side to its side, where a
    dead engine would take it down with it). Multiplicative decrease when more requests wait
    than run, additive increase while nothing waits and we are using the whole limit."""
    if sample is None:
        return limit
    running, waiting = int(sample.running), int(sample.waiting)
    if waiting > max(4, running):
        return max(low, min(limit, running + max(4, running // 4)))
    if waiting == 0 and in_flight >= limit:
        return min(high, limit + max(1, limit // 8))
    return limit

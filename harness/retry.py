"""Retrying calls to models: the one owner of what is retried, how long to wait, and how often.

Judge, teacher and generation calls share it. An AIMD limiter caps calls in flight: it halves
on a 429 and grows by one after a window of successes. Transient failures (429, 5xx, timeouts,
dropped connections) are retried with exponential backoff and full jitter; a refusal (4xx)
fails the call at once; a programming error (a TypeError, KeyError, AttributeError... raised
by our own code) is never retried nor recorded as a failed call: it propagates. Every attempt
is counted, so a run can report what was retried and why.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field


class AdaptiveLimiter:
    def __init__(self, maximum: int, minimum: int = 1):
        self.maximum, self.minimum = maximum, minimum
        self.limit = maximum
        self._in_flight = 0
        self._successes = 0
        self._cond = asyncio.Condition()

    async def __aenter__(self) -> AdaptiveLimiter:
        async with self._cond:
            await self._cond.wait_for(lambda: self._in_flight < self.limit)
            self._in_flight += 1
        return self

    async def __aexit__(self, *exc) -> None:
        async with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def throttled(self) -> None:
        self.limit = max(self.minimum, self.limit // 2)
        self._successes = 0

    def succeeded(self) -> None:
        self._successes += 1
        if self._successes >= self.limit and self.limit < self.maximum:
            self.limit += 1
            self._successes = 0


# litellm reports a refused connection as an InternalServerError (status 500); these texts in
# the exception or its causes say what really happened.
_CONNECT_FAILURES = ("Cannot connect to host", "Connect call failed", "Connection refused",
                     "Name or service not known", "nodename nor servname", "Temporary failure in name resolution")


def _connection_failed(exc: BaseException) -> bool:
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, ConnectionError) or "Connection" in type(link).__name__ \
                or any(m in str(link) for m in _CONNECT_FAILURES):
            return True
        link = link.__cause__ or link.__context__
    return False


def classify(exc: BaseException) -> str | None:
    """The retry class of a failure, or None when retrying cannot help."""
    if getattr(exc, "engine_lost", False):  # serve.engine_watch.EngineLost
        return "engine_lost"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    name = type(exc).__name__
    status = getattr(exc, "status_code", None)
    if status == 429 or name == "RateLimitError":
        return "rate_limited"
    if "Timeout" in name or status == 408:
        return "timeout"
    if _connection_failed(exc):
        return "connection"
    if isinstance(status, int) and status >= 500 or name in ("InternalServerError", "ServiceUnavailableError"):
        return "server_error"
    return None


# Errors of the code itself: retrying cannot help and recording them as failed calls would hide them.
PROGRAMMING_ERRORS = (TypeError, LookupError, AttributeError, NameError, AssertionError, NotImplementedError,
                      ImportError, ArithmeticError)
# The libraries a call to a model goes through: their errors are the call's, not the code's.
TRANSPORT_MODULES = ("litellm", "openai", "httpx", "httpcore", "aiohttp")


def _from_transport(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] in TRANSPORT_MODULES


def is_programming_error(exc: BaseException) -> bool:
    """An error of our own code (not raised by the transport, not a known transient): never retried."""
    return isinstance(exc, PROGRAMMING_ERRORS) and not _from_transport(exc) and classify(exc) is None


def failure_kind(exc: BaseException) -> str:
    """For callers that schedule their own retries (generation on a local engine): 'transient'
    (retry), 'client' (refused: fails the same way again), or raise ``exc``: anything that is
    not the transport's must surface, not be recorded as a failed cell."""
    if classify(exc) is not None:
        return "transient"
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and 400 <= status < 500:
        return "client"
    if _from_transport(exc) and not is_programming_error(exc):
        return "transient"
    raise exc


@dataclass
class RetryPolicy:
    max_attempts: int = 6
    timeout_s: float | None = 60.0  # None: no per-call cap (local engines)
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_delay_s, self.base_delay_s * 2 ** attempt))


@dataclass
class FanoutCounters:
    calls: int = 0
    retries: Counter = field(default_factory=Counter)
    exhausted: Counter = field(default_factory=Counter)
    fatal: int = 0


class CallFailed(Exception):
    def __init__(self, reason: str, attempts: int):
        super().__init__(reason)
        self.reason, self.attempts = reason, attempts


# A local engine that dies or stalls mid-call is waited for (its restart takes a server start),
# this long and this often per call, without spending the call's attempts.
ENGINE_WAIT_S = 600.0
MAX_ENGINE_LOSSES = 3


async def call_with_retries(make_call, limiter: AdaptiveLimiter, policy: RetryPolicy,
                            counters: FanoutCounters, engine=None):
    """Run ``await make_call()`` under the limiter with retries; returns (result, attempts).

    With ``engine`` (a serve.engine_watch.EngineWatch of a local engine), the call is abandoned
    only when the watch finds the engine dead or stalled, and then waits for it to answer again
    rather than spending an attempt; dropped connections to it are handled the same way."""
    attempt = losses = 0
    while True:
        async with limiter:
            counters.calls += 1
            try:
                call = engine.guard(make_call()) if engine is not None else make_call()
                result = await asyncio.wait_for(call, timeout=policy.timeout_s)
            except Exception as exc:
                if is_programming_error(exc):
                    raise
                kind = classify(exc)
                if kind == "rate_limited":
                    limiter.throttled()
                failure = exc
            else:
                limiter.succeeded()
                return result, attempt + 1
        if engine is not None and kind in ("engine_lost", "connection") and losses < MAX_ENGINE_LOSSES:
            losses += 1
            counters.retries[kind] += 1
            if kind == "connection":
                await asyncio.sleep(policy.delay(1))
            if await engine.wait_ok(ENGINE_WAIT_S):
                continue
        if kind is None:
            counters.fatal += 1
            raise CallFailed(f"{type(failure).__name__}: {str(failure)[:300]}", attempt + 1)
        if attempt + 1 >= policy.max_attempts:
            counters.exhausted[kind] += 1
            raise CallFailed(f"gave up after {attempt + 1} attempts: last {kind}: {str(failure)[:200]}",
                             attempt + 1)
        counters.retries[kind] += 1
        await asyncio.sleep(policy.delay(attempt))
        attempt += 1

"""One retry helper (harness.retry): transport and server failures are retried; a programming
error is raised at once, never retried nor recorded as a failed cell or call."""

import asyncio

import pytest

import harness.generate as generate
from harness.bench import load_bench
from harness.client import Completion, Sampling
from harness.generate import Target, generate_vllm, plan
from harness.retry import (
    AdaptiveLimiter,
    FanoutCounters,
    RetryPolicy,
    call_with_retries,
    failure_kind,
    is_programming_error,
)
from harness.runstore import RunStore
from serve.engine_watch import WatchPolicy

from fault_server import FaultServer


class ServerError(Exception):
    status_code = 503


class Refused(Exception):
    status_code = 400


@pytest.mark.parametrize("exc", [TypeError("x"), KeyError("x"), AttributeError("x"), IndexError(0), NameError("x")])
def test_programming_errors_are_not_the_transports(exc):
    assert is_programming_error(exc)
    with pytest.raises(type(exc)):
        failure_kind(exc)


def test_transport_and_server_failures_are_retried_refusals_are_not():
    assert failure_kind(ServerError()) == "transient"
    assert failure_kind(ConnectionResetError()) == "transient"
    assert failure_kind(asyncio.TimeoutError()) == "transient"
    assert failure_kind(Refused()) == "client"
    assert not is_programming_error(ServerError())


def _calls(errors: list[BaseException]):
    made = []

    async def call():
        made.append(1)
        if errors:
            raise errors.pop(0)
        return "ok"

    return call, made


def test_call_with_retries_raises_a_programming_error_at_once():
    call, made = _calls([TypeError("bad argument")] * 5)
    counters = FanoutCounters()
    with pytest.raises(TypeError, match="bad argument"):
        asyncio.run(call_with_retries(call, AdaptiveLimiter(4), RetryPolicy(base_delay_s=0.001), counters))
    assert len(made) == 1 and not counters.retries and counters.fatal == 0


def test_call_with_retries_retries_server_errors():
    call, made = _calls([ServerError(), ConnectionResetError()])
    counters = FanoutCounters()
    assert asyncio.run(call_with_retries(call, AdaptiveLimiter(4), RetryPolicy(base_delay_s=0.001), counters)) == ("ok", 3)
    assert len(made) == 3 and counters.retries == {"server_error": 1, "connection": 1}


def _patch_achat(monkeypatch, errors: list[BaseException]):
    made = []

    async def achat(url, model, messages, sampling, *args):
        made.append(model)
        if errors:
            raise errors.pop(0)
        return Completion("ANSWER: yes", "stop", 3, 2, 0.01)

    monkeypatch.setattr(generate, "achat", achat)
    return made


def _cell(url: str | None):
    backend = "vllm" if url else "api"
    target = Target("t", "base", backend, Sampling(max_tokens=8), url=url, served_name="m")
    return plan(load_bench("builtin"), "eval", ["baseline"], [target])[:1]


@pytest.mark.parametrize("engine", [False, True], ids=["api", "local-engine"])
def test_generation_raises_a_programming_error_at_once(tmp_path, monkeypatch, engine):
    made = _patch_achat(monkeypatch, [KeyError("sampling")] * 5)
    with FaultServer() as fault, RunStore(tmp_path / "run") as store:
        cells = _cell(fault.api_base if engine else None)
        with pytest.raises(KeyError, match="sampling"):
            asyncio.run(generate_vllm(cells, store, "run", retries=3, progress_every_s=0,
                                      watch=WatchPolicy(poll_s=0.2)))
        assert store.rows() == []
    assert len(made) == 1


@pytest.mark.parametrize("engine", [False, True], ids=["api", "local-engine"])
def test_generation_retries_a_server_error(tmp_path, monkeypatch, engine):
    made = _patch_achat(monkeypatch, [ServerError()])
    with FaultServer() as fault, RunStore(tmp_path / "run") as store:
        cells = _cell(fault.api_base if engine else None)
        stats = asyncio.run(generate_vllm(cells, store, "run", retries=3, progress_every_s=0,
                                          watch=WatchPolicy(poll_s=0.2)))
    assert (stats.done, stats.failed, stats.retried, len(made)) == (1, 0, 1, 2)

"""Generation against engines that are slow, stalled or gone: nothing is abandoned while the
engine works, and only a dead or stalled engine has its in-flight cells re-queued.

The engine here is the fault server (a real HTTP server on 127.0.0.1) because a real vLLM
server cannot be made to hold a reply, or freeze its counters, on demand."""

import asyncio

import polars as pl
import pytest

from harness.bench import load_bench
from harness.client import Sampling
from harness.generate import Target, generate_vllm, plan
from harness.runstore import RunStore
from serve.engine_watch import WatchPolicy

from fault_server import FaultServer

# Replies are held for seconds on purpose: the slow tier, not `make test-fast`.
pytestmark = pytest.mark.slow
SAMPLING = Sampling(max_tokens=8)


def _cells(api_base: str):
    target = Target("fault", "fault-base", "vllm", SAMPLING, url=api_base, served_name="fault", dtype="float32")
    bench = load_bench("builtin")
    return plan(bench, "eval", ["baseline", "curated"], [target])[:12]


def test_slow_but_alive_engine_completes_every_cell_once(tmp_path):
    # Each reply is held far longer than the stall window; the engine's token counter keeps
    # moving, so no request is abandoned and none is sent twice.
    with FaultServer(hold_s=6.0) as fault, RunStore(tmp_path / "run") as store:
        cells = _cells(fault.api_base)
        stats = asyncio.run(generate_vllm(cells, store, "run", concurrency=4, progress_every_s=1,
                                          watch=WatchPolicy(poll_s=0.5, dead_after=3, stall_s=2.0)))
        table = store.write_table()
        received = dict(fault.received)
    assert stats.done == len(cells) == len(table) == table["cell_id"].n_unique()
    assert stats.requeued == stats.retried == stats.failed == stats.engine_losses == 0
    assert sorted(received.values()) == [1] * len(cells)
    assert len(store.rows()) == len(cells)  # no episode written twice


def test_stalled_engine_has_its_cells_requeued_and_the_run_ends_complete(tmp_path, capfd):
    with FaultServer(stalled=True) as fault, RunStore(tmp_path / "run") as store:
        cells = _cells(fault.api_base)
        reconnects = []

        async def reconnect(url, health):
            reconnects.append(health.value)
            fault.stalled = False  # "restarted": replies come at once from now on
            fault.release.set()
            return url, True

        stats = asyncio.run(generate_vllm(cells, store, "run", concurrency=4, progress_every_s=1,
                                          watch=WatchPolicy(poll_s=0.3, dead_after=3, stall_s=1.5),
                                          reconnect=reconnect))
        table = store.write_table()
    assert reconnects == ["stalled"]
    assert stats.done == len(cells) == len(table) == table["cell_id"].n_unique() and stats.failed == 0
    assert stats.requeued == 4 and stats.engine_losses == 1 and stats.engine_restarts == 1
    err = capfd.readouterr().err
    assert "stalled with 12 cells outstanding; they are re-queued" in err and "engine restarted" in err
    assert "[fault] cells 12/12 (100%)" in err  # the progress line's final form


def test_dead_engine_that_never_returns_fails_its_cells_with_the_reason(tmp_path):
    fault = FaultServer(stalled=True)
    with fault, RunStore(tmp_path / "run") as store:
        cells = _cells(fault.api_base)

        async def main():
            async def stop_soon():
                await asyncio.sleep(1.0)
                await asyncio.to_thread(fault.httpd.shutdown)
                fault.httpd.server_close()
            asyncio.ensure_future(stop_soon())

            async def gone(url, health):
                return None
            return await generate_vllm(cells, store, "run", concurrency=4, progress_every_s=0,
                                       watch=WatchPolicy(poll_s=0.3, dead_after=3, stall_s=60), reconnect=gone)

        stats = asyncio.run(main())
        fault.release.set()
    assert stats.done == 0 and stats.failed == len(cells) and stats.requeued >= 4
    assert all("was dead and did not come back" in e for e in stats.errors)
    assert pl.DataFrame(store.rows()).is_empty()

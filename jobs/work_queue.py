"""One target's cells shared by the generation drivers of its base's server replicas.

A Ray actor holds the cell ids not yet done; each driver (one per replica) leases as many as it
has room for, reports them resolved, and hands back what its engine could not finish, so a slow
or dying replica never holds the tail, and no cell is sent by two drivers at once. A driver that
dies (its task fails) has its leases handed back by the sweep (:meth:`CellQueue.release`).
"""

from __future__ import annotations

import asyncio
from collections import deque

import ray


class LeaseQueue:
    """Cell ids to do, leased to drivers by name; the logic of :data:`CellQueue`."""

    def __init__(self) -> None:
        self.pending: deque[str] = deque()
        self.leased: dict[str, set[str]] = {}
        self.resolved: dict[str, int] = {}
        self.seeded = False

    def seed(self, ids: list[str]) -> None:
        """The cells to do; drivers all plan the same cells, so the first offer is the offer."""
        if not self.seeded:
            self.pending.extend(ids)
            self.seeded = True

    def exchange(self, driver: str, done: list[str], want: int, give_back: list[str]) -> tuple[list[str], bool]:
        """Resolve ``done``, take ``give_back`` back (first in line), lease up to ``want`` cells to
        ``driver``. Returns its new leases and whether nothing is pending or leased anywhere."""
        leased = self.leased.setdefault(driver, set())
        leased.difference_update(done)
        self.resolved[driver] = self.resolved.get(driver, 0) + len(done)
        for cell in reversed(give_back):
            if cell in leased:
                leased.discard(cell)
                self.pending.appendleft(cell)
        out = [self.pending.popleft() for _ in range(min(want, len(self.pending)))]
        leased.update(out)
        return out, self._finished()

    def release(self, driver: str) -> int:
        """Hand back everything ``driver`` holds (it died); returns how many cells."""
        cells = sorted(self.leased.pop(driver, set()))
        self.pending.extendleft(reversed(cells))
        return len(cells)

    def _finished(self) -> bool:
        return self.seeded and not self.pending and not any(self.leased.values())

    def state(self) -> dict:
        """Pending and leased counts, and what each driver resolved."""
        return {"pending": len(self.pending), "leased": {d: len(c) for d, c in self.leased.items()},
                "resolved": dict(self.resolved), "finished": self._finished()}


# An actor of the sweep's (no CPU: it only hands out ids); it dies with the target's generation step.
CellQueue = ray.remote(num_cpus=0, max_restarts=0)(LeaseQueue)


async def aget(ref):
    """Await a Ray object ref from any asyncio loop (the sweep driver's or a task's)."""
    return await asyncio.wrap_future(ref.future())


class RayCellSource:
    """:class:`harness.generate.CellSource` over a :class:`CellQueue` actor, for one driver."""

    def __init__(self, queue: ray.actor.ActorHandle, driver: str):
        self.queue = queue
        self.driver = driver

    async def seed(self, ids: list[str]) -> None:
        await aget(self.queue.seed.remote(ids))

    async def exchange(self, done: list[str], want: int, give_back: list[str]) -> tuple[list[str], bool]:
        return await aget(self.queue.exchange.remote(self.driver, done, want, give_back))

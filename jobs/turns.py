"""Serving and training in turn on a CPU-only node: a readers-writer gate in the driver.

Serving steps (corpus tracing, generation, judging, probes) are readers: any number run at
once on the engines. A training is the writer: it starts when no serving step runs, and
serving steps that arrive while it waits or runs wait for it (so a training is not starved
by a stream of judge passes). With the gate off every step passes at once (``partition``
and GPU nodes, where the resources themselves keep the two apart).
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager


class TurnGate:
    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.serving_now = 0
        self.training_now = False
        self.training_waiting = 0
        self._cond = asyncio.Condition()

    @asynccontextmanager
    async def serving(self):
        if not self.enabled:
            yield
            return
        async with self._cond:
            await self._cond.wait_for(lambda: not self.training_now and not self.training_waiting)
            self.serving_now += 1
        try:
            yield
        finally:
            async with self._cond:
                self.serving_now -= 1
                self._cond.notify_all()

    @asynccontextmanager
    async def training(self):
        if not self.enabled:
            yield
            return
        async with self._cond:
            self.training_waiting += 1
            await self._cond.wait_for(lambda: self.serving_now == 0 and not self.training_now)
            self.training_waiting -= 1
            self.training_now = True
        try:
            yield
        finally:
            async with self._cond:
                self.training_now = False
                self._cond.notify_all()

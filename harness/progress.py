"""One progress line per target at a steady rhythm, in the job log and on the terminal.

``[smollm2+lora@s0] cells 40/64 (62%) · 85.1 tok/s · ETA 0:00:23 · requeued 0`` every
``every_s`` seconds while work runs, and once at the end. Plain lines, no terminal control
codes, so the same text reads well in a Ray job log and in a shell.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_EVERY_S = 15.0


@dataclass(frozen=True)
class Snapshot:
    done: int
    planned: int
    tokens: int = 0
    extra: str = ""


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def progress_line(label: str, what: str, snap: Snapshot, elapsed_s: float) -> str:
    """The line itself: a pure function of what was done and how long it took."""
    parts = [f"[{label}] {what} {snap.done}/{snap.planned}"]
    if snap.planned:
        parts[0] += f" ({100 * snap.done // snap.planned}%)"
    if snap.tokens and elapsed_s > 0:
        parts.append(f"{snap.tokens / elapsed_s:.1f} tok/s")
    if 0 < snap.done < snap.planned and elapsed_s > 0:
        parts.append(f"ETA {_clock(elapsed_s / snap.done * (snap.planned - snap.done))}")
    elif snap.done >= snap.planned:
        parts.append(f"took {_clock(elapsed_s)}")
    if snap.extra:
        parts.append(snap.extra)
    return " · ".join(parts)


def stderr_line(text: str) -> None:
    """Print one progress line on stderr, at once."""
    print(text, file=sys.stderr, flush=True)


class Ticker:
    """Emit ``progress_line`` for ``snapshot()`` every ``every_s`` seconds inside an event loop."""

    def __init__(self, label: str, what: str, snapshot: Callable[[], Snapshot],
                 every_s: float = DEFAULT_EVERY_S, emit: Callable[[str], None] = stderr_line):
        self.label, self.what, self.snapshot, self.every_s, self.emit = label, what, snapshot, every_s, emit
        self.started = time.monotonic()
        self._task: asyncio.Task | None = None

    def line(self) -> str:
        return progress_line(self.label, self.what, self.snapshot(), time.monotonic() - self.started)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            self.emit(self.line())

    async def __aenter__(self) -> Ticker:
        self.started = time.monotonic()
        if self.every_s > 0:
            self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc) -> None:
        if self._task:
            self._task.cancel()
        if self.every_s > 0:
            self.emit(self.line())

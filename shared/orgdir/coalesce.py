"""One run for a burst of callers: each waits for a run that began after it asked, not for one of its own.

For idempotent work that reads the current state and acts on all of it (a
single-active consumer's holder check): a run that began after a caller
asked has seen everything that caller had seen, so its outcome answers for
the caller too. Nothing is skipped on trust: a caller whose covering run
fails runs again itself. The state is per process and only says who may wait
for whom; a process that dies leaves nothing half-done behind, since every
caller returns only after a covering run has completed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class Coalesced:
    """Runs of one piece of work, numbered as they begin."""

    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _started: int = 0
    _done: int = 0  # the newest run that completed
    runs: int = 0  # how many actually ran (for tests and metrics)

    def ticket(self) -> int:
        """Take at the moment the caller's input is in place: runs numbered above it cover it."""
        return self._started

    async def run(self, ticket: int, work: Callable[[], Awaitable[object]]) -> None:
        async with self._lock:  # FIFO: callers pass in the order they came
            if self._done > ticket:
                return  # a run that began after the ticket has completed
            self._started += 1
            mine = self._started
            self.runs += 1
            await work()
            self._done = mine

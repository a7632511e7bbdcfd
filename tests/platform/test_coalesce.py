"""``orgdir.coalesce``: a run that began after a caller asked answers for it; a failed one does not."""

from __future__ import annotations

import asyncio

import pytest

from orgdir.coalesce import Coalesced


async def test_callers_that_asked_during_a_run_share_the_next_one() -> None:
    c = Coalesced()
    seen: list[int] = []
    state = {"value": 0}
    gate = asyncio.Event()

    async def work() -> None:
        seen.append(state["value"])
        await gate.wait()

    first = asyncio.create_task(c.run(c.ticket(), work))
    await asyncio.sleep(0)  # the first run has begun and waits
    state["value"] = 1  # what the next callers have seen: the first run did not
    later = [asyncio.create_task(c.run(c.ticket(), work)) for _ in range(10)]
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(first, *later)
    assert seen == [0, 1] and c.runs == 2  # one run for the ten, and it saw their state


async def test_a_failed_run_covers_nobody() -> None:
    c = Coalesced()
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if calls == 1:
            raise RuntimeError("database away")

    tickets = [c.ticket() for _ in range(3)]
    results = await asyncio.gather(*(c.run(t, flaky) for t in tickets), return_exceptions=True)
    assert isinstance(results[0], RuntimeError) and results[1:] == [None, None]
    assert calls == 2  # the second caller ran again; the third shared that run

    with pytest.raises(RuntimeError):
        calls = 0
        await c.run(c.ticket(), flaky)

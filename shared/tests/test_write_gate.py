"""The FerretDB write gate: background writes fill the gaps of a burst, but are not starved."""

from __future__ import annotations

import asyncio

from orgdir.store import WriteGate


async def test_background_write_waits_for_the_burst_queued_before_and_after_it() -> None:
    gate = WriteGate(1, patience=5.0)
    order: list[str] = []

    async def write(name: str, background: bool = False) -> None:
        if background:
            await gate.gap()
        async with gate.hold():
            order.append(name)
            await asyncio.sleep(0.001)

    tasks = [asyncio.create_task(write(f"f{i}")) for i in range(3)]
    tasks.append(asyncio.create_task(write("b", background=True)))
    tasks += [asyncio.create_task(write(f"f{i}")) for i in range(3, 6)]
    await asyncio.gather(*tasks)
    assert order == ["f0", "f1", "f2", "f3", "f4", "f5", "b"]


async def test_background_write_goes_after_its_patience_under_steady_load() -> None:
    gate = WriteGate(1, patience=0.05)
    stop = asyncio.Event()
    foreground_after_background = 0
    background_done = asyncio.Event()

    async def steady() -> None:
        nonlocal foreground_after_background
        while not stop.is_set():
            async with gate.hold():
                await asyncio.sleep(0.001)
            if background_done.is_set():
                foreground_after_background += 1

    async def background() -> None:
        await gate.gap()
        async with gate.hold():
            background_done.set()

    workers = [asyncio.create_task(steady()) for _ in range(3)]
    await asyncio.sleep(0.01)
    await asyncio.wait_for(background(), timeout=10)
    await asyncio.sleep(0.02)
    stop.set()
    await asyncio.gather(*workers)
    assert background_done.is_set() and foreground_after_background > 0  # the load was still going

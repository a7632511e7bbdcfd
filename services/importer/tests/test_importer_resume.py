"""An import killed with SIGKILL halfway and run again ends as an uninterrupted one, with no event twice.

Two stacks of real service processes (orgunits and registry) on
their own databases and exchanges: stack A gets the import CLI as a real
process, killed with SIGKILL once its progress shows half the records
written, then run again to the end; stack B gets the same export in one
uninterrupted run. Every imported thing's full history (timeline, versions,
the event type of each registration) must be the same on both, and so must
the events each aggregate published: none twice on A.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from importer.client import Api
from importer.domain import PATH, SERVICE
from importer.generate import Size, generate
from importer.readers import write_csv
from importer.records import ACCESS_KINDS, KINDS
from orgdir_tools.testkit import EventCollector

from .conftest import Stack, services

#: smaller than the tiny preset (two stacks start for this test alone); the role catalogue is left out, so
#: access-rights need not run: its writes go the same planned, idempotent way (test_importer_stack covers them)
EXPORT = generate(Size(units=14, people=30, engagements=36, levels=4, associations=4), 5)
PROGRESS = re.compile(r"(\d+)/(\d+) \(\d+%\)")
IMPORTING = re.compile(r"Importing .*: (\d+) changes, (\d+) unchanged")


@pytest.fixture(scope="module")
async def stacks(amqp_url: str, mongodb_url: str) -> AsyncIterator[tuple[Stack, Stack]]:
    names = ("orgunits", "registry")
    async with AsyncExitStack() as es:
        a, b = await asyncio.gather(*(es.enter_async_context(services(amqp_url, mongodb_url, names))
                                      for _ in range(2)))
        yield a, b


async def start(stack: Stack, path: Path, *options: str) -> asyncio.subprocess.Process:
    """``python -m importer.cli PATH`` against ``stack``: the command as an operator runs it."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "importer.cli", str(path), *options, env={**os.environ, **stack.environment()},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )


async def kill_halfway(proc: asyncio.subprocess.Process) -> list[str]:
    """Read the progress lines; SIGKILL the process at the first one showing half the records written."""
    assert proc.stderr is not None
    lines: list[str] = []
    async for raw in proc.stderr:
        lines.append(raw.decode())
        if (m := PROGRESS.search(lines[-1])) and 2 * int(m[1]) >= int(m[2]):
            proc.send_signal(signal.SIGKILL)
            break
    assert await proc.wait() == -signal.SIGKILL, "".join(lines)  # killed, not finished
    return lines


async def finish(proc: asyncio.subprocess.Process) -> str:
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return err.decode()


async def settled(events: EventCollector, settle: float = 2.0) -> list[Any]:
    """The import's events once none has arrived for ``settle`` seconds.

    The vocabulary orgunits seeds at its start (``class.*``, ``facet.*``) is left out: on a
    loaded machine its relay may still be publishing it when the collector binds.
    """
    seen = -1
    while seen != len(events.events):
        seen = len(events.events)
        await asyncio.sleep(settle)
    return [e for e in events.events if not e.type.startswith(("class.", "facet."))]


async def state(stack: Stack) -> dict[str, Any]:
    """Everything the services hold of the export: each thing's history (without when and by whom), and the lists."""
    api = Api(stack.settings)
    try:
        out: dict[str, Any] = {}
        for kind in (k for k in KINDS if k not in ACCESS_KINDS):
            for record in EXPORT.of(kind):
                found = await api.get(SERVICE[kind], f"{PATH[kind]}/{record.uuid}/history")
                assert found is not None, f"{kind} {record.key} missing"
                for r in found["registrations"]:
                    del r["registered_at"], r["registered_by"]
                out[f"{kind} {record.key}"] = found
            listed = await api.list_all(SERVICE[kind], PATH[kind])
            out[f"{kind} listed"] = sorted(item["uuid"] for item in listed)
        return out
    finally:
        await api.aclose()


async def test_killed_halfway_and_run_again_it_ends_as_an_uninterrupted_import_with_no_event_twice(
    stacks: tuple[Stack, Stack], tmp_path: Path
) -> None:
    a, b = stacks
    write_csv(EXPORT, tmp_path)
    total = sum(EXPORT.counts().values())
    async with EventCollector(a.amqp_url, a.exchange) as on_a, EventCollector(b.amqp_url, b.exchange) as on_b:

        async def interrupted() -> tuple[list[str], str]:
            # Small batches, few in flight: with the defaults (16 batches of 50) the whole export was
            # written at once, before the line showing half of it could be read, and nothing was left.
            killed = await kill_halfway(await start(a, tmp_path, "--batch", "4", "--concurrency", "2"))
            return killed, await finish(await start(a, tmp_path))

        async def uninterrupted() -> str:
            return await finish(await start(b, tmp_path))

        (killed, rerun), whole = await asyncio.gather(interrupted(), uninterrupted())
        assert f"Importing {tmp_path}: {total} changes, 0 unchanged" in whole
        # The first run was killed before the end (no summary), the second did only what was left.
        assert not any(line.startswith("Done") for line in killed), killed
        found = IMPORTING.search(rerun)
        assert found, rerun
        left, done = int(found[1]), int(found[2])
        assert left + done == total and done >= total // 2 and left > 0, rerun
        events_a, events_b = await asyncio.gather(settled(on_a), settled(on_b))

    assert await state(a) == await state(b)
    assert len(events_a) == len(events_b) == total  # one created event per record
    # No event twice: each (subject, sequence) once, and per aggregate the same events as the uninterrupted run.
    sequences = Counter((e.subject, e.type.split(".")[0], e.sequence) for e in events_a)
    assert [k for k, n in sequences.items() if n > 1] == []
    assert Counter((e.type, e.subject) for e in events_a) == Counter((e.type, e.subject) for e in events_b)

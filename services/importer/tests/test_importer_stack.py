"""The importer against the four services as processes on real RabbitMQ and a MongoDB-wire server.

One stack for the module; the tests build on each other's data, in order:
the first import, the same export again (nothing written, no event on the
broker), its role groups and role-group assignment as access-rights holds
them, a changed export (exactly its moves, leavers and hires), bad rows
(each reported with its line, every good row imported), and --full-sync.
"""

from __future__ import annotations

import asyncio
import io
import shutil
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import pytest

from importer.client import Api
from importer.domain import PATH, SERVICE
from importer.generate import Size, generate, mutate
from importer.readers import CsvSource, write_csv
from importer.records import stable_uuid
from importer.service import Options, Report, run_import
from orgdir_tools.testkit import EventCollector

from .conftest import Stack

#: six assignments: the sixth is of a role group (one in ten, from the sixth on)
SIZE = Size(units=24, people=30, engagements=36, levels=5, it_systems=3, roles=6, role_groups=2, assignments=6,
            associations=5)
TODAY = date.today()
TOMORROW = TODAY + timedelta(days=1)
BASE = generate(SIZE, 11)


async def run(stack: Stack, path: Path, **options: object) -> tuple[Report, str]:
    out = io.StringIO()
    opts = Options(day=TODAY, progress=False, **options)  # type: ignore[arg-type]
    report = await run_import(CsvSource(path), stack.settings, opts, out, io.StringIO())
    return report, out.getvalue()


async def quiet(events: EventCollector, settle: float = 2.5) -> list[str]:
    """The events seen once none has arrived for ``settle`` seconds (the relay sweeps every second)."""
    seen = -1
    while seen != len(events.events):
        seen = len(events.events)
        await asyncio.sleep(settle)
    return [e.type for e in events.events]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("base")
    write_csv(BASE, path)
    return path


async def test_the_same_export_twice_writes_nothing_and_publishes_nothing(stack: Stack, base_dir: Path) -> None:
    first, _ = await run(stack, base_dir)
    assert first.exit_code == 0, first.summary()
    assert dict(first.written) == {k: n for k, n in BASE.counts().items() if n}
    async with EventCollector(stack.amqp_url, stack.exchange) as events:
        await quiet(events)  # the first run's events drain
        events.events.clear()
        second, _ = await run(stack, base_dir)
        assert (second.exit_code, second.requests, sum(second.written.values())) == (0, 0, 0)
        assert dict(second.plan.unchanged) == {k: n for k, n in BASE.counts().items() if n}
        assert await quiet(events) == []


async def test_role_groups_and_their_assignments_reach_access_rights_once(stack: Stack, base_dir: Path) -> None:
    by_group = [a for a in BASE.assignments if a.role_group]
    assert BASE.role_groups and by_group
    api = Api(stack.settings)
    try:
        for group in BASE.role_groups:
            found = await api.get(SERVICE["role_groups"], f"{PATH['role_groups']}/{group.uuid}",
                                  at=group.validity.from_.isoformat())
            assert found is not None and found["current"] is not None, group.key
            assert found["current"]["name"] == group.name
            assert sorted(found["current"]["roles"]) == sorted(stable_uuid("roles", r) for r in group.roles)
        for a in by_group:
            found = await api.get(SERVICE["assignments"], f"{PATH['assignments']}/{a.uuid}",
                                  at=a.validity.from_.isoformat())
            assert found is not None and found["current"] is not None, a.key
            assert (found["current"]["role"], found["current"]["role_group"]) == (
                None, stable_uuid("role_groups", a.role_group or ""))
    finally:
        await api.aclose()
    again, _ = await run(stack, base_dir)
    assert (again.exit_code, again.requests, again.plan.ops) == (0, 0, [])
    assert (again.plan.unchanged["role_groups"], again.plan.unchanged["assignments"]) == (
        len(BASE.role_groups), len(BASE.assignments))


async def test_moves_leavers_and_hires_are_planned_and_written_exactly(
    stack: Stack, base_dir: Path, tmp_path: Path
) -> None:
    changed = mutate(BASE, seed=3, day=TOMORROW, moves=10, leavers=5, hires=3)
    write_csv(changed, tmp_path)
    moved = {e.uuid for e, b in zip(changed.engagements, BASE.engagements, strict=False) if e.unit != b.unit}
    left = {e.uuid for e, b in zip(changed.engagements, BASE.engagements, strict=False) if e.validity != b.validity}
    hired = {e.uuid for e in changed.engagements[len(BASE.engagements):]}

    dry, text = await run(stack, tmp_path, dry_run=True)
    assert dry.requests == 0
    planned: dict[tuple[str, str], set[str]] = {(op.kind, op.action): set() for op in dry.plan.ops}
    for op in dry.plan.ops:
        planned[(op.kind, op.action)].add(op.uuid)
    assert planned == {("engagements", "change"): moved, ("engagements", "terminate"): left,
                       ("engagements", "create"): hired,
                       ("persons", "create"): {stable_uuid("persons", p.key) for p in changed.persons[-3:]}}
    assert "engagements  create      3  change     10  terminate      5" in text

    async with EventCollector(stack.amqp_url, stack.exchange) as events:
        report, _ = await run(stack, tmp_path)
        assert report.exit_code == 0, report.summary()
        assert report.requests == 21
        # the import's own writes; access-rights follows the moves with access.* and account.* events of its own
        types = [t for t in await quiet(events) if not t.startswith(("access.", "account."))]
    assert Counter(types) == {"engagement.updated": 10, "engagement.terminated": 5, "engagement.created": 3,
                              "person.created": 3}
    assert {e.subject for e in events.of_type("engagement.updated")} == moved
    again, _ = await run(stack, tmp_path, dry_run=True)
    assert again.plan.ops == []
    shutil.copytree(tmp_path, base_dir, dirs_exist_ok=True)  # the state the next tests start from


async def test_bad_rows_are_reported_with_their_line_and_the_good_rows_imported(stack: Stack, base_dir: Path) -> None:
    def append(kind: str, *rows: str) -> list[int]:
        path = base_dir / f"{kind}.csv"
        lines = path.read_text(encoding="utf-8").splitlines()
        path.write_text("\n".join([*lines, *rows]) + "\n", encoding="utf-8")
        return list(range(len(lines) + 1, len(lines) + 1 + len(rows)))

    school = BASE.units[10].key
    [good_unit] = append("units", f"NYT01,Nyt Team,{school},team,team,nyt@x.dk,,,2024-01-01,")
    good_person, bad_cpr = append("persons", "PNY01,Ny,Ansat,0101901234,,,1990-01-01,",
                                  "PNY02,Forkert,Cpr,3113991234,,,1990-01-01,")
    good_eng, unknown_unit, backwards, unknown_class = append(
        "engagements",
        "ENY01,PNY01,NYT01,konsulent,ansat,true,1,2025-01-01,",
        "ENY02,PNY01,FINDES-IKKE,konsulent,ansat,false,1,2025-01-01,",
        "ENY03,PNY01,NYT01,konsulent,ansat,false,1,2025-06-01,2025-01-01",
        "ENY04,PNY01,NYT01,astronaut,ansat,false,1,2025-01-01,",
    )
    report, _ = await run(stack, base_dir)
    assert report.exit_code == 1
    rejected = {(r.origin.file, r.origin.line): r.message for r in report.rejected}
    assert rejected.keys() == {("persons.csv", bad_cpr), ("engagements.csv", unknown_unit),
                               ("engagements.csv", backwards), ("engagements.csv", unknown_class)}
    assert "invalid-cpr" in rejected[("persons.csv", bad_cpr)]
    assert "real date" in rejected[("persons.csv", bad_cpr)]
    assert rejected[("engagements.csv", unknown_unit)] == "unknown unit 'FINDES-IKKE'"
    assert "must be after from" in rejected[("engagements.csv", backwards)]
    assert rejected[("engagements.csv", unknown_class)] == "unknown job_function class 'astronaut'"
    assert dict(report.written) == {"units": 1, "persons": 1, "engagements": 1}
    assert good_unit and good_person and good_eng
    summary = report.summary()
    assert f"persons.csv:{bad_cpr}: person PNY02: PUT refused: 422 invalid-cpr" in summary


async def test_full_sync_ends_what_is_missing_and_is_refused_above_the_threshold(
    stack: Stack, base_dir: Path, tmp_path: Path
) -> None:
    shutil.copytree(base_dir, tmp_path, dirs_exist_ok=True)
    lines = (tmp_path / "managers.csv").read_text(encoding="utf-8").splitlines()
    (tmp_path / "managers.csv").write_text("\n".join(lines[:-2]) + "\n", encoding="utf-8")
    refused, text = await run(stack, tmp_path, full_sync_from=TOMORROW, threshold=1)
    assert (refused.exit_code, refused.requests) == (3, 0)
    assert "terminate manager" in text
    done, _ = await run(stack, tmp_path, full_sync_from=TOMORROW, threshold=1, allow_mass_change=True)
    assert done.written == Counter({"managers": 2})

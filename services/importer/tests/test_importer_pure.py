"""Pure parts of the importer: the generator, the readers and the planner (no servers)."""

from __future__ import annotations

import functools
import io
import socket
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import pytest

from importer import cli
from importer.adapters import Source, collect
from importer.client import Api, Outcome
from importer.domain import Op, Plan, State, Write, describe, plan
from importer.generate import PRESETS, Size, generate, mutate
from importer.readers import CsvSource, JsonSource, write_csv, write_json
from importer.records import KINDS, Export, Origin, Period, Unit, stable_uuid
from importer.service import Report, apply
from importer.settings import ImportSettings
from orgdir_tools.testpeers import QuietHandler, serve
from orgunits.vocabulary import CLASSES

DAY = date(2026, 12, 1)
CLASS_UUIDS = {facet: {key: f"class-{facet}-{key}" for key, _, _ in rows} for facet, rows in CLASSES.items()}


@functools.cache
def municipality() -> Export:
    return generate("municipality", 7)


def depth(export: Export) -> int:
    parents = {u.key: u.parent for u in export.units}

    def of(key: str) -> int:
        n, parent = 0, parents[key]
        while parent is not None:
            n, parent = n + 1, parents[parent]
        return n

    return max(of(k) for k in parents)


def test_same_seed_same_files_other_seed_other_files(tmp_path: Path) -> None:
    for name, seed in (("a", 4), ("b", 4), ("c", 5)):
        write_csv(generate("small", seed), tmp_path / name)
    for kind in KINDS:
        a, b, c = ((tmp_path / n / f"{kind}.csv").read_bytes() for n in "abc")
        assert a == b
        if kind != "leaves" or a.count(b"\n") > 1:
            assert a != c


def test_small_has_the_promised_size() -> None:
    export = generate("small", 1)
    assert export.counts()["units"] == 200 and export.counts()["persons"] == 2000
    assert export.counts()["engagements"] == 2400
    assert depth(export) <= PRESETS["small"].levels - 1


def test_municipality_has_the_promised_size_and_shape() -> None:
    export = municipality()
    c = export.counts()
    assert (c["units"], c["persons"], c["engagements"]) == (3000, 30000, 36000)
    assert depth(export) == 7  # eight levels
    assert c["managers"] > 0.8 * c["units"] and c["leaves"] > 300
    assert len({p.cpr for p in export.persons}) == 30000
    names = {u.name for u in export.units}
    assert {"Skoleområdet", "Dagtilbudsområdet", "Ældreområdet", "Jobcenter", "Borgmesterens Afdeling"} <= names
    primaries = [e.person for e in export.engagements if e.primary]
    assert len(primaries) == len(set(primaries)) == 30000


def test_every_generated_record_plans_as_a_create_and_uses_seeded_classes() -> None:
    export = generate("small", 2)
    p = plan(export, State(DAY, classes=CLASS_UUIDS))
    assert p.rejected == []
    assert {k: c["create"] for k, c in p.counts().items()} == export.counts()


def mirror(export: Export, day: date = DAY) -> State:
    """What the services would hold after importing ``export``: its create bodies as read back."""
    state = State(day, classes=CLASS_UUIDS)
    for op in plan(export, state).ops:
        body = op.writes[0].body
        v = body["validity"]
        if body.get("cpr"):
            body = {**body, "cpr": f"{body['cpr'][:6]}-{body['cpr'][6:]}", "has_cpr": True}
        state.current[op.kind][op.uuid] = {**body, "uuid": op.uuid}
        if date.fromisoformat(v["from"]) <= day and (v["to"] is None or day < date.fromisoformat(v["to"])):
            state.listed[op.kind].add(op.uuid)
    return state


def test_an_unchanged_export_plans_nothing() -> None:
    export = generate("tiny", 3)
    p = plan(export, mirror(export))
    assert p.ops == [] and p.rejected == []
    assert dict(p.unchanged) == export.counts()


def test_moves_leavers_and_hires_plan_exactly_those_writes() -> None:
    export = generate("tiny", 3)
    tomorrow = DAY + timedelta(days=1)
    changed = mutate(export, seed=9, day=tomorrow, moves=4, leavers=2, hires=3)
    p = plan(changed, mirror(export))
    c = p.counts()
    assert (c["engagements"]["change"], c["engagements"]["terminate"], c["engagements"]["create"]) == (4, 2, 3)
    assert c["persons"]["create"] == 3
    assert p.writes() == 4 + 2 + 3 + 3
    for op in p.ops:
        if op.action == "change":  # a move is written from the plan's day on; history before it stays
            assert [w.method for w in op.writes] == ["PUT"] and op.writes[0].body["validity"] == {
                "from": DAY.isoformat(), "to": None}
        if op.action == "terminate":
            assert [(w.method, w.body) for w in op.writes] == [("POST", {"to": tomorrow.isoformat()})]
            assert op.writes[0].path.endswith("/terminate")
    text = describe(p)
    assert "change engagement" in text and "terminate engagement" in text and "create person" in text


def test_bad_references_are_refused_with_their_origin_and_take_their_dependants_along() -> None:
    export = generate("tiny", 3)
    o = Origin("units.csv", 99)
    bad = [
        replace(export.units[5], key="X1", parent="NOPE", origin=o),
        replace(export.units[5], key="X2", parent="X1", origin=replace(o, line=100)),
        replace(export.units[5], key="X3", unit_type="rumskib", origin=replace(o, line=101)),
        replace(export.units[5], key="C1", parent="C2", origin=replace(o, line=102)),
        replace(export.units[5], key="C2", parent="C1", origin=replace(o, line=103)),
    ]
    eng = replace(export.engagements[0], key="EX", unit="X2", origin=Origin("engagements.csv", 50))
    export.units += bad
    export.engagements.append(eng)
    p = plan(export, State(DAY, classes=CLASS_UUIDS))
    why = {(r.origin.file, r.origin.line): r.message for r in p.rejected}
    assert why[("units.csv", 99)] == "unknown parent unit 'NOPE'"
    assert why[("units.csv", 100)] == "its parent unit 'X1' is refused"
    assert why[("units.csv", 101)] == "unknown unit_type class 'rumskib'"
    assert "cycle" in why[("units.csv", 102)] and "cycle" in why[("units.csv", 103)]
    assert why[("engagements.csv", 50)] == "unknown unit 'X2'"
    assert p.counts()["units"]["create"] == len(export.units) - len(bad)


def test_full_sync_terminates_the_missing_leaves_first_units_last() -> None:
    export = generate("tiny", 3)
    state = mirror(export)
    smaller = Export(units=export.units[:-1], persons=export.persons, engagements=export.engagements[1:],
                     managers=[m for m in export.managers if m.unit != export.units[-1].key], leaves=[])
    end = DAY + timedelta(days=10)
    p = plan(smaller, state, full_sync_from=end)
    terminated = [(op.kind, op.writes[0].body) for op in p.ops if op.action == "terminate"]
    assert all(body == {"to": end.isoformat()} for _, body in terminated)
    kinds = [k for k, _ in terminated]
    assert kinds.count("units") == 1 and kinds.count("engagements") == 1
    assert kinds.count("leaves") == sum(1 for lv in export.leaves if lv.validity.holds(DAY))
    order = [g[0].kind for g in p.phases()]
    assert order.index("leaves") < order.index("units") and order[-1] == "units"
    assert p.full_sync_terminations == len(terminated)


def test_records_keep_their_file_and_line_in_csv_and_json(tmp_path: Path) -> None:
    export = generate("tiny", 3)
    write_csv(export, tmp_path / "csv")
    write_json(export, tmp_path / "x.json")
    with (tmp_path / "csv" / "engagements.csv").open("a", encoding="utf-8") as f:
        f.write("EBAD,P000001,ENH00005,laerer,ansat,true,1,2020-05-01,2020-01-01\n")
    from_csv, from_json = collect(CsvSource(tmp_path / "csv")), collect(JsonSource(tmp_path / "x.json"))
    for kind in KINDS:
        assert from_csv.of(kind) == from_json.of(kind) == export.of(kind)
    assert [str(r.origin) for r in from_csv.persons[:2]] == ["persons.csv:2", "persons.csv:3"]
    units_line = 3  # '{', '"units": [', then the first unit
    assert from_json.units[0].origin == Origin("x.json", units_line)
    assert from_json.persons[0].origin.line == units_line + len(export.units) + 2
    [bad] = from_csv.invalid
    assert str(bad) == (f"engagements.csv:{len(export.engagements) + 2}: engagement EBAD: to (2020-01-01) must be "
                        "after from (2020-05-01); to is the first day it no longer holds")
    assert isinstance(CsvSource(tmp_path), Source)
    assert stable_uuid("units", "ENH") == export.units[0].uuid == stable_uuid("unit", "ENH")


def test_records_refuse_bad_values() -> None:
    from importer.records import RecordError, parse

    o = Origin("units.csv", 2)
    with pytest.raises(RecordError, match="missing name"):
        parse("units", {"key": "A", "unit_type": "team", "from": "2020-01-01"}, o)
    with pytest.raises(RecordError, match="not a date"):
        parse("units", {"key": "A", "name": "A", "unit_type": "team", "from": "1/1/2020"}, o)
    u = parse("units", {"key": "A", "name": "A", "unit_type": "team", "from": "2020-01-01", "to": ""}, o)
    assert u == Unit("A", Period(date(2020, 1, 1)), o, name="A", unit_type="team")


def test_cli_generates_and_checks_its_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["generate", "--size", "tiny", "--seed", "2", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "units.csv").read_text(encoding="utf-8").startswith("key,name,parent,")
    assert cli.main([str(tmp_path / "out"), "--full-sync"]) == 2
    assert "--full-sync needs --from" in capsys.readouterr().err
    assert cli.main(["import", str(tmp_path / "nothing.txt")]) == 2


def test_a_size_can_be_tailored() -> None:
    export = generate(Size(units=12, people=10, engagements=12, levels=4), 1)
    assert export.counts()["units"] == 12 and depth(export) <= 3


def test_the_municipality_has_its_role_catalogue_and_associations() -> None:
    export = municipality()
    c = export.counts()
    assert (c["it_systems"], c["roles"], c["role_groups"], c["assignments"]) == (40, 400, 40, 400)
    assert c["associations"] == 1500
    systems = {s.key for s in export.it_systems}
    roles = {r.key for r in export.roles}
    assert {r.it_system for r in export.roles} == systems
    assert all((a.role is None) != (a.role_group is None) for a in export.assignments)
    assert {a.role for a in export.assignments if a.role} <= roles
    assert {a.role_group for a in export.assignments if a.role_group} == {g.key for g in export.role_groups}
    assert sum(1 for a in export.assignments if a.role_group) == 40  # one in ten
    on_units = [a for a in export.assignments if a.unit and not a.job_function]
    on_jobs = [a for a in export.assignments if a.job_function]
    assert on_units and on_jobs and not any(a.person for a in export.assignments)
    assert any(a.inherit for a in on_units) and not any(a.inherit for a in on_jobs)
    jobs = {key for key, _, _ in CLASSES["job_function"]}
    assert {a.job_function for a in on_jobs} <= jobs
    kinds = {key for key, _, _ in CLASSES["association_type"]}
    assert {a.association_type for a in export.associations} <= kinds


def test_catalogue_and_assignment_rows_are_checked() -> None:
    from importer.records import Assignment, ITSystem, RecordError, parse

    o = Origin("assignments.csv", 2)
    base = {"key": "T1", "role": "AD-01", "from": "2024-01-01"}
    with pytest.raises(RecordError, match="missing a target"):
        parse("assignments", base, o)
    with pytest.raises(RecordError, match="names no unit"):
        parse("assignments", {**base, "person": "P1", "unit": "U1"}, o)
    with pytest.raises(RecordError, match="inherit is for unit assignments only"):
        parse("assignments", {**base, "job_function": "laerer", "inherit": "true"}, o)
    a = parse("assignments", {**base, "job_function": "laerer", "unit": "U1"}, o)
    assert a == Assignment("T1", Period(date(2024, 1, 1)), o, role="AD-01", unit="U1", job_function="laerer")
    it = {"key": "AD", "name": "Active Directory", "from": "2007-01-01"}
    with pytest.raises(RecordError, match="disable or delete"):
        parse("it_systems", {**it, "offboarding": "shred"}, o)
    with pytest.raises(RecordError, match="whole number"):
        parse("it_systems", {**it, "grace_days": "-3"}, o)
    assert parse("it_systems", {**it, "grace_days": "30"}, o) == ITSystem(
        "AD", Period(date(2007, 1, 1)), o, name="Active Directory", grace_days=30)


def test_catalogue_references_are_resolved_or_refused() -> None:
    export = generate("tiny", 3)
    export.roles.append(replace(export.roles[0], key="R-X", it_system="NOPE", origin=Origin("roles.csv", 90)))
    export.assignments += [
        replace(export.assignments[0], key="T-X", role="R-X", origin=Origin("assignments.csv", 91)),
        replace(export.assignments[0], key="T-Y", role=export.roles[0].key, unit=None, job_function="astronaut",
                origin=Origin("assignments.csv", 92)),
    ]
    p = plan(export, State(DAY, classes=CLASS_UUIDS))
    why = {(r.origin.file, r.origin.line): r.message for r in p.rejected}
    assert why == {("roles.csv", 90): "unknown it_system 'NOPE'", ("assignments.csv", 91): "unknown role 'R-X'",
                   ("assignments.csv", 92): "unknown job_function class 'astronaut'"}
    body = next(op.writes[0].body for op in p.ops if op.kind == "assignments" and op.key == "T00001")
    assert body["role"] == stable_uuid("roles", export.assignments[0].role or "")
    assert [op.writes[0].service for op in p.ops if op.kind == "roles"][:1] == ["access-rights"]
    phase = {op.kind: op.phase for op in p.ops}
    assert phase["it_systems"] < phase["roles"] < phase["assignments"] and phase["units"] < phase["assignments"]


def test_full_sync_leaves_a_kind_the_export_does_not_hold_alone() -> None:
    export = generate("tiny", 3)
    state = mirror(export)
    without = replace(export, it_systems=[], roles=[], role_groups=[], assignments=[], associations=[])
    p = plan(without, state, full_sync_from=DAY + timedelta(days=1))
    assert p.ops == []
    fewer = replace(export, assignments=export.assignments[1:])
    p = plan(fewer, state, full_sync_from=DAY + timedelta(days=1))
    assert [(op.kind, op.action, op.uuid) for op in p.ops] == [
        ("assignments", "terminate", export.assignments[0].uuid)]


def test_an_access_rights_document_reads_as_its_slice_on_the_day() -> None:
    from importer.service import slice_on

    doc = {"uuid": "r1", "version": 3, "timeline": [
        {"name": "A", "validity": {"from": "2020-01-01", "to": "2025-01-01"}},
        {"name": "B", "validity": {"from": "2025-01-01", "to": None}},
    ]}
    assert slice_on(doc, date(2024, 12, 31)) == {**doc["timeline"][0], "uuid": "r1", "version": 3}  # type: ignore[dict-item]
    assert slice_on(doc, date(2025, 1, 1))["name"] == "B"  # type: ignore[index]
    assert slice_on(doc, date(2019, 12, 31)) is None


# ---------------------------------------------------------------------------- role groups


def test_role_group_rows_are_read_and_an_assignment_names_exactly_one_of_role_and_role_group(tmp_path: Path) -> None:
    from importer.records import Assignment, RoleGroup

    (tmp_path / "role_groups.csv").write_text(
        "key,name,roles,from,to\nG1,Kontor,AD-02; AD-01,2020-01-01,\nG2,Tom,;,2020-01-01,\n"
        "G3,Dobbelt,AD-01;AD-01,2020-01-01,\n", encoding="utf-8")
    (tmp_path / "assignments.csv").write_text(
        "key,role,role_group,unit,from\nT1,,G1,U1,2024-01-01\nT2,AD-01,G1,U1,2024-01-01\nT3,,,U1,2024-01-01\n",
        encoding="utf-8")
    export = collect(CsvSource(tmp_path))
    o = Origin("role_groups.csv", 2)
    assert export.role_groups == [RoleGroup("G1", Period(date(2020, 1, 1)), o, name="Kontor", roles=("AD-01", "AD-02"))]
    assert export.role_groups[0].uuid == stable_uuid("role_group", "G1")
    assert export.assignments == [Assignment("T1", Period(date(2024, 1, 1)), Origin("assignments.csv", 2),
                                             role_group="G1", unit="U1")]
    assert [str(r) for r in export.invalid] == [
        "role_groups.csv:3: role_group G2: roles names no role (role keys separated by ;)",
        "role_groups.csv:4: role_group G3: roles lists AD-01 more than once",
        "assignments.csv:3: assignment T2: names both role and role_group: an assignment gives one of them",
        "assignments.csv:4: assignment T3: missing role or role_group",
    ]


def test_role_groups_are_written_as_role_uuids_between_roles_and_assignments() -> None:
    export = generate("tiny", 3)
    group = export.role_groups[0]
    [by_group] = [a for a in export.assignments if a.role_group]
    export.role_groups.append(replace(group, key="G-X", roles=(group.roles[0], "NOPE"),
                                      origin=Origin("role_groups.csv", 90)))
    export.assignments.append(replace(by_group, key="T-X", role_group="G-X", origin=Origin("assignments.csv", 91)))
    p = plan(export, State(DAY, classes=CLASS_UUIDS))
    why = {(r.origin.file, r.origin.line): r.message for r in p.rejected}
    assert why == {("role_groups.csv", 90): "unknown role 'NOPE'", ("assignments.csv", 91): "unknown role_group 'G-X'"}
    [write] = next(op.writes for op in p.ops if op.uuid == group.uuid)
    assert (write.service, write.method, write.path) == ("access-rights", "PUT", f"/api/v1/role-groups/{group.uuid}")
    assert write.body == {"name": group.name, "roles": [stable_uuid("roles", r) for r in group.roles],
                          "validity": {"from": group.validity.from_.isoformat(), "to": None}}
    body = next(op.writes[0].body for op in p.ops if op.uuid == by_group.uuid)
    assert (body["role"], body["role_group"]) == (None, stable_uuid("role_groups", by_group.role_group or ""))
    phase = {op.kind: op.phase for op in p.ops}
    assert phase["roles"] < phase["role_groups"] < phase["assignments"] < phase["engagements"]
    assert f"create role_group {group.key} (role_groups.csv:2): {group.name!r} of " in describe(p)


def test_a_role_group_compares_regardless_of_the_order_of_its_roles() -> None:
    from importer.domain import comparable

    a, b = ({"name": "Kontor", "roles": roles, "validity": {}} for roles in (["r2", "r1"], ["r1", "r2"]))
    assert comparable("role_groups", a) == comparable("role_groups", b) == {"name": "Kontor", "roles": ("r1", "r2")}
    export = generate("tiny", 3)
    state = mirror(export)
    for item in state.current["role_groups"].values():
        item["roles"] = item["roles"][::-1]  # as access-rights may list them
    assert plan(export, state).ops == []
    group = export.role_groups[0]
    export.role_groups[0] = replace(group, roles=group.roles[1:])
    [op] = plan(export, state).ops
    assert (op.kind, op.action, op.writes[0].body["roles"]) == (
        "role_groups", "change", [stable_uuid("roles", r) for r in group.roles[1:]])


def test_full_sync_ends_a_missing_role_group_after_its_assignments() -> None:
    export = generate("tiny", 3)
    state = mirror(export)
    gone = export.role_groups[0]
    fewer = replace(export, role_groups=export.role_groups[1:],
                    assignments=[a for a in export.assignments if a.role_group != gone.key])
    p = plan(fewer, state, full_sync_from=DAY + timedelta(days=1))
    ended = [(op.kind, op.uuid) for group in p.phases() for op in group]
    assert ended == [("assignments", a.uuid) for a in export.assignments if a.role_group == gone.key] + [
        ("role_groups", gone.uuid)]


def test_the_generator_adds_role_groups_and_their_assignments_deterministically() -> None:
    tiny, small = generate("tiny", 3), generate("small", 4)
    assert tiny == generate("tiny", 3) and tiny.role_groups != generate("tiny", 4).role_groups
    assert (len(tiny.role_groups), len(small.role_groups)) == (2, 8)
    for export in (tiny, small):
        system = {r.key: r.it_system for r in export.roles}
        for g in export.role_groups:
            assert 2 <= len(g.roles) <= 5 and len({system[r] for r in g.roles}) == 1
        by_group = [a for a in export.assignments if a.role_group]
        assert by_group and {a.role_group for a in by_group} <= {g.key for g in export.role_groups}
        assert all(a.role is None for a in by_group) and len(by_group) == (len(export.assignments) + 4) // 10
    # Without role groups every other record is as it was: the groups' roles are drawn last.
    plain = generate(replace(PRESETS["small"], role_groups=0), 4)
    assert plain.role_groups == [] and all(a.role for a in plain.assignments)
    for kind in KINDS:
        if kind not in ("role_groups", "assignments"):
            assert plain.of(kind) == small.of(kind)
    assert [replace(a, role=None) for a in plain.assignments] == [
        replace(a, role=None, role_group=None) for a in small.assignments]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def person_creates(keys: list[str]) -> list[Op]:
    """One create per key, as persons.csv lines 2, 3 … would plan them."""
    return [Op("persons", "create", stable_uuid("persons", key), key, Origin("persons.csv", line),
               (Write("registry", "PUT", f"/api/v1/persons/{stable_uuid('persons', key)}", {}),), phase=1)
            for line, key in enumerate(keys, start=2)]


async def test_a_write_that_gets_no_answer_is_reported_and_the_run_goes_on() -> None:
    """A service that does not answer ends one record as ``unreachable``, not the run in a traceback."""
    dead = f"http://127.0.0.1:{free_port()}"  # nobody listens: every connection is refused
    settings = ImportSettings(orgunits_url=dead, registry_url=dead, access_rights_url=dead, retries=1,
                              concurrency=2, timeout_seconds=2)
    the_plan = Plan(date(2026, 12, 2), ops=person_creates(["P1", "P2"]))
    report = Report(the_plan)
    api = Api(settings)
    try:
        await apply(api, the_plan, settings, report, io.StringIO(), progress=False)
    finally:
        await api.aclose()
    assert [(r.origin.line, r.message) for r in report.rejected] == [
        (line, "PUT failed: unreachable: registry did not answer in 2 attempts (ConnectError); "
               "run the import again to finish")
        for line in (2, 3)
    ]
    assert report.exit_code == 1 and not report.written


async def test_a_registry_without_the_batch_endpoint_gets_each_write_alone() -> None:
    """An importer newer than the registry (a rolling upgrade): the batch answers 404, so every write
    is sent alone, once, and is written; the importer does not try batches again."""
    seen: list[tuple[str, str]] = []

    class OlderRegistry(QuietHandler):
        """Every PUT is written (201); ``POST /api/v1/batch`` is a path it does not have (404)."""

        def answer(self, method: str) -> None:
            self.body()
            seen.append((method, self.path))
            problem = b'{"type": "urn:orgdir:problem:not-found", "title": "Not Found", "status": 404}'
            content = b"" if method == "PUT" else problem
            self.send_response(201 if method == "PUT" else 404)
            self.send_header("content-type", "application/problem+json")
            self.send_header("content-length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def do_POST(self) -> None:
            self.answer("POST")

        def do_PUT(self) -> None:
            self.answer("PUT")

    port = free_port()
    server, _ = serve(port, OlderRegistry)
    try:
        url = f"http://127.0.0.1:{port}"
        settings = ImportSettings(orgunits_url=url, registry_url=url, access_rights_url=url, concurrency=2)
        keys = [f"P{i}" for i in range(6)]
        ops = person_creates(keys)
        report = Report(Plan(date(2026, 12, 2), ops=ops))
        api = Api(settings)
        try:
            await apply(api, report.plan, settings, report, io.StringIO(), progress=False)
            batches = [path for method, path in seen if method == "POST"]
            assert batches and set(batches) == {"/api/v1/batch"}
            assert await api.send(ops[0].writes[0]) == Outcome(201)
            assert len([1 for method, _ in seen if method == "POST"]) == len(batches)  # no batch tried any more
        finally:
            await api.aclose()
    finally:
        server.shutdown()
    assert report.written["persons"] == 6 and not report.rejected
    puts = sorted(path for method, path in seen if method == "PUT")
    assert puts == sorted([f"/api/v1/persons/{stable_uuid('persons', k)}" for k in keys] + [ops[0].writes[0].path])

"""The API conventions every service shares: errors, validity input, terminate, history, the
completed OpenAPI document and the unit-tree read model."""

from __future__ import annotations

from datetime import UTC, date, datetime
from types import SimpleNamespace
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends
from pydantic import BaseModel

from orgdir import auth, problems
from orgdir.clock import ManualClock
from orgdir.contracts.orgunits import OrgUnitSlice
from orgdir.http import STATUS, AtDay, IfMatch, PageQuery, Paging, create_app, problem_responses, status_of
from orgdir.schemas import NotNull, TerminateIn, ValidityIn, history_of
from orgdir.settings import Settings
from orgdir.tree import UnitTree
from orgdir.validity import Validity

TODAY = date(2027, 3, 1)


def test_every_error_category_has_one_status_and_subclasses_inherit_it() -> None:
    assert status_of(problems.rule("parent-not-active", "x")) == 422
    assert status_of(problems.conflict("x", kind="user-key-taken")) == 409
    assert status_of(problems.missing("unknown-unit", "x")) == 404
    assert status_of(problems.bad_request("invalid-date", "x")) == 400
    assert status_of(problems.precondition_failed(3, 2)) == 412

    class Held(problems.Conflict):
        pass

    assert status_of(Held("batch-held")) == 409
    assert len(set(STATUS.values())) == len(STATUS)


def test_a_problem_body_names_its_kind_and_extras() -> None:
    body = problems.conflict("Another person has it.", kind="cpr-in-use", field="cpr").body(409, "/x")
    assert body == {
        "type": "urn:orgdir:problem:cpr-in-use",
        "title": "Cpr in use",
        "status": 409,
        "detail": "Another person has it.",
        "instance": "/x",
        "field": "cpr",
    }


def test_validity_input_defaults_and_one_error_for_a_reversed_period() -> None:
    assert ValidityIn().resolve(TODAY) == Validity(from_=TODAY, to=None)
    assert ValidityIn.model_validate({"from": "2027-01-01", "to": "2027-02-01"}).resolve(TODAY).to == date(2027, 2, 1)
    for body in ({"from": "2027-02-01", "to": "2027-02-01"}, {"to": "2027-02-01"}):  # the 2nd: from is today
        with pytest.raises(problems.Invalid) as exc:
            ValidityIn.model_validate(body).resolve(TODAY)
        assert exc.value.kind == "invalid-validity" and exc.value.extra["field"] == "validity"
    with pytest.raises(ValueError):
        ValidityIn.model_validate({"from": "2027-01-01", "till": "2027-02-01"})  # unknown fields are refused


def test_terminate_body_is_to_defaulting_to_today() -> None:
    assert TerminateIn().day(TODAY) == TODAY
    assert TerminateIn.model_validate({"to": "2027-04-01"}).day(TODAY) == date(2027, 4, 1)
    with pytest.raises(ValueError):
        TerminateIn.model_validate({"date": "2027-04-01"})


def test_history_has_one_shape() -> None:
    at = datetime(2027, 1, 1, tzinfo=UTC)
    tl = [{"validity": {"from": "2027-01-01", "to": None}, "name": "A"}]
    doc = {
        "_id": "u1",
        "version": 2,
        "state": {"timeline": tl},
        "registrations": [
            {"version": 1, "registered_at": at, "registered_by": "static:dev-admin", "event_type": "x.created",
             "note": None, "state": {"timeline": []}},
            {"version": 2, "registered_at": at, "registered_by": None, "event_type": "x.updated",
             "state": {"timeline": tl}},
        ],
    }
    h = history_of(doc)
    assert (h.uuid, h.version, h.timeline) == ("u1", 2, tl)
    assert [(r.version, r.registered_by, r.timeline) for r in h.registrations] == [
        (1, "static:dev-admin", []),
        (2, "system", tl),
    ]


# ---------------------------------------------------------------------------- the OpenAPI document


class Thing(BaseModel):
    name: str


Reader = Annotated[auth.Principal, Depends(auth.read)]


def toy_app() -> Any:
    app = create_app("toy")
    app.state.runtime = SimpleNamespace(clock=ManualClock(datetime(2027, 3, 1, 12, tzinfo=UTC)))
    settings = Settings(service_name="toy", auth_mode="static", allow_static_tokens=True)
    app.state.authenticator = auth.Authenticator(settings)
    router = APIRouter(prefix="/api/v1")

    @router.get("/things", response_model=list[Thing])
    async def things(day: AtDay, page: PageQuery, _: Reader) -> list[Thing]:
        return [Thing(name=f"{day} {page.limit} {page.cursor}")]

    @router.put("/things/{tid}", response_model=Thing, responses=problem_responses(400))
    async def put_thing(tid: str, body: Thing, version: IfMatch, _: Reader) -> Thing:
        return Thing(name=f"{tid} {version}")

    app.include_router(router)
    return app


def test_openapi_documents_every_problem_an_operation_can_answer() -> None:
    doc = toy_app().openapi()
    schemas = doc["components"]["schemas"]
    assert "ProblemDetails" in schemas and "HTTPValidationError" not in schemas
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "description": "An OIDC access token (or a static dev token).",
        "scheme": "bearer",
    }
    get = doc["paths"]["/api/v1/things"]["get"]
    put = doc["paths"]["/api/v1/things/{tid}"]["put"]
    assert set(get["responses"]) == {"200", "400", "401", "403", "422", "503"}
    assert set(put["responses"]) == {"200", "400", "401", "403", "404", "409", "412", "413", "422", "503"}
    for op in (get, put):
        for status, entry in op["responses"].items():
            if status != "200":
                assert entry["content"] == {
                    "application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}
                }
    assert any(p["name"] == "If-Match" and p["in"] == "header" for p in put["parameters"])
    assert {p["name"] for p in get["parameters"]} == {"at", "limit", "cursor"}


async def test_shared_parameters_resolve_and_refuse_alike() -> None:
    app = toy_app()
    h = {"Authorization": "Bearer dev-reader"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/api/v1/things", headers=h)).json() == [{"name": "2027-03-01 100 None"}]
        r = await c.get("/api/v1/things", params={"at": "2027-13-01", "limit": 5}, headers=h)
        assert r.status_code == 400 and r.json()["type"].endswith("invalid-date")
        assert r.headers["content-type"] == "application/problem+json"
        r = await c.get("/api/v1/things", params={"limit": 1001}, headers=h)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.limit"
        r = await c.put("/api/v1/things/a", json={"name": "x"}, headers={**h, "If-Match": 'W/"7"'})
        assert r.json() == {"name": "a 7"}
        r = await c.put("/api/v1/things/a", json={"name": "x"}, headers={**h, "If-Match": "seven"})
        assert r.status_code == 400 and r.json()["type"].endswith("invalid-if-match")
        r = await c.get("/api/v1/things")
        assert r.status_code == 401 and r.json()["type"].endswith(":unauthorized")
        r = await c.get("/api/v1/things", headers={"Authorization": "Basic eDp5"})
        assert r.status_code == 401
    assert Paging(100, None).limit == 100


# ---------------------------------------------------------------------------- the unit tree


def unit(parent: str | None, start: str, end: str | None = None) -> OrgUnitSlice:
    return OrgUnitSlice.model_validate(
        {"validity": {"from": start, "to": end}, "user_key": "k", "name": "n", "parent": parent}
    )


def test_unit_tree_by_day_and_over_all_time() -> None:
    tree = UnitTree()
    tree.put("root", [unit(None, "2020-01-01")])
    tree.put("a", [unit("root", "2020-01-01")])
    tree.put("b", [unit("root", "2020-01-01", "2027-01-01"), unit("a", "2027-01-01")])  # moved under a
    day_before, day_after = date(2026, 12, 31), date(2027, 1, 1)
    assert tree.chain_at("b", day_before) == ["b", "root"]
    assert tree.chain_at("b", day_after) == ["b", "a", "root"]
    assert tree.children_at(day_before)["root"] == ["a", "b"] and tree.children_at(day_after)["a"] == ["b"]
    assert tree.subtree_at("a", day_before) == {"a"} and tree.subtree_at("a", day_after) == {"a", "b"}
    assert tree.ancestors_any_time("b") == {"b", "a", "root"}
    assert tree.descendants_any_time("root") == {"root", "a", "b"}
    tree.put("b", [unit("a", "2027-01-01")])  # a rewrite drops the old parent from the index
    assert tree.children["root"] == {"a"} and "b" in tree
    tree.put("c", [unit("missing", "2020-01-01")])
    assert tree.unknown_above(["c", "b"]) == {"missing"}
    tree.put("x", [unit("y", "2020-01-01")])
    tree.put("y", [unit("x", "2020-01-01")])  # a cycle in bad data ends the walk
    assert tree.chain_at("x", day_before) == ["x", "y"] and tree.ancestors_any_time("x") == {"x", "y"}


def test_a_patch_field_may_be_left_out_but_not_cleared() -> None:
    class Patch(BaseModel):
        name: Annotated[str | None, NotNull] = None

    assert Patch().name is None and Patch(name="x").name == "x"
    with pytest.raises(ValueError, match="null is not allowed"):
        Patch.model_validate({"name": None})

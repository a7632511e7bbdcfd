"""``orgdir.http.run_batch``: each operation answers on its own, whatever the others do."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from orgdir import problems
from orgdir.http import BatchOperation, batch_target, run_batch


class Body(BaseModel):
    name: str


async def test_each_operation_answers_alone_in_the_order_given() -> None:
    finished: list[str] = []

    async def put(op: BatchOperation) -> tuple[bool, int]:
        batch_target(op.path, ["things"])
        body = Body.model_validate(op.body)
        if body.name == "slow":
            await asyncio.sleep(0.05)
        if body.name == "taken":
            raise problems.conflict("taken by another")
        if body.name == "bug":
            raise RuntimeError("a bug")
        finished.append(body.name)
        return body.name == "new", 1 if body.name == "new" else 3

    uid = "0b9f7a3c-1d2e-4f50-8a6b-7c8d9e0f1a2b"
    ops = [
        BatchOperation(path=f"/api/v1/things/{uid}", body={"name": "slow"}),
        BatchOperation(path=f"/things/{uid}", body={"name": "new"}),
        BatchOperation(path=f"/things/{uid}", body={}),
        BatchOperation(path=f"/things/{uid}", body={"name": "taken"}),
        BatchOperation(path=f"/things/{uid}", body={"name": "bug"}),
        BatchOperation(path="/others/x", body={"name": "x"}),
    ]
    out = await run_batch(ops, put)
    assert [(r.status, r.version) for r in out.results] == [
        (200, 3), (201, 1), (422, None), (409, None), (500, None), (404, None)
    ]
    invalid = out.results[2].problem
    assert invalid is not None and invalid.type.endswith("validation-error") and invalid.instance == ops[2].path
    assert invalid.errors is not None and [e.field for e in invalid.errors] == ["name"]
    assert finished == ["new", "slow"]  # concurrently: the slow one did not hold the others up


def test_a_batch_target_is_a_known_collection_and_a_uuid() -> None:
    uid = "0b9f7a3c-1d2e-4f50-8a6b-7c8d9e0f1a2b"
    assert batch_target(f"/api/v1/persons/{uid}", ["persons"]) == ("persons", uid)
    with pytest.raises(problems.BadRequest):
        batch_target("/persons/nope", ["persons"])
    for path in (f"/api/v1/persons/{uid}/terminate", f"/units/{uid}", "/"):
        with pytest.raises(problems.NotFound):
            batch_target(path, ["persons"])

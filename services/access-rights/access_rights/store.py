"""Storage of the access-rights service: catalogue repositories, projections, rights and accounts.

Hot paths are by ``_id`` only (FerretDB scans everything else); the unit tree,
engagements and the catalogue live in memory and are reloaded from here at startup.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from orgdir import context
from orgdir.events import new_event
from orgdir.store import Doc, Repository, StaleVersion, doc_lock, forget, guard, remember

M = TypeVar("M", bound=BaseModel)

ACCOUNT_NS = uuidlib.UUID("5b0c8f7e-6a53-4c1e-9a51-0f6a3c1d2e7b")

EventSpec = tuple[str, Callable[[int], dict[str, Any]]]


def account_id(person: str, it_system: str) -> str:
    """One account per person and IT system, with a stable UUID (replays give the same ids)."""
    return str(uuidlib.uuid5(ACCOUNT_NS, f"{person}:{it_system}"))


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True)


class PersonRightsRepository(Repository):
    """``person_rights``: one document per person holding the rights published for them.

    One write may publish several events (one per changed right), all pushed onto
    the outbox at once with consecutive sequences; a write with no events only
    refreshes the state (reasons, validity, next transition) without a version bump.
    """

    async def write(
        self,
        person: str,
        expected: int | None,
        state: dict[str, Any],
        events: list[EventSpec],
        next_transition_at: datetime | None,
    ) -> int:
        base = expected or 0
        now = self.clock.now()
        outbox = [
            new_event(
                service=self.service,
                type=kind,
                subject=person,
                sequence=base + i + 1,
                data=build(base + i + 1),
                time=now,
                correlationid=context.correlation_id.get(),
                causationid=context.causation_id.get(),
            ).model_dump(mode="json")
            for i, (kind, build) in enumerate(events)
        ]
        version = base + len(events)
        registrations = [self._registration(base + i + 1, kind, state, None) for i, (kind, _) in enumerate(events)]
        left: list[dict[str, Any]] = outbox
        async with doc_lock(self.col, person):
            if expected is None:
                try:
                    await self.col.insert_one(
                        {
                            "_id": person,
                            "version": version,
                            "state": state,
                            "next_transition_at": next_transition_at,
                            "created_at": now,
                            "updated_at": now,
                            "outbox": outbox,
                            "registrations": registrations,
                        }
                    )
                except DuplicateKeyError as exc:
                    raise StaleVersion(-1, 0) from exc
                remember(self.col, person, "version", version)
            else:
                update: dict[str, Any] = {
                    "$set": {
                        "state": state,
                        "version": version,
                        "updated_at": now,
                        "next_transition_at": next_transition_at,
                    }
                }
                if outbox:
                    update["$push"] = {
                        "outbox": {"$each": outbox},
                        "registrations": {"$each": registrations},
                    }
                query = await guard(self.col, person, "version", expected)
                doc = (
                    None
                    if query is None
                    else await self.col.find_one_and_update(query, update, return_document=ReturnDocument.AFTER)
                )
                if doc is None:
                    forget(self.col, person)
                    current = await self.col.find_one({"_id": person}, {"version": 1})
                    raise StaleVersion(int(current["version"]) if current else -1, expected)
                remember(self.col, person, "version", version)
                left = list(doc.get("outbox", []))
        if outbox:
            self.on_write(self.name, person, left)
        return version


async def load_all(db: AsyncDatabase[Doc], collection: str) -> list[Doc]:
    return [d async for d in db[collection].find({}, {"outbox": 0, "registrations": 0})]


def from_projection(model: type[M], doc: Doc) -> M:
    body = {k: v for k, v in doc.items() if k not in ("_id", "sequence")}
    return model.model_validate(body)


def from_repository(model: type[M], doc: Doc) -> M:
    return model.model_validate({"uuid": doc["_id"], "version": doc["version"], **doc["state"]})


async def reserve_username(
    db: AsyncDatabase[Doc], it_system: str, person: str, base: str, hints: dict[str, int]
) -> str:
    """The first free name of ``base``, ``base2``, ``base3`` … in the system.

    ``_id``-keyed documents make a name unique; ``hints`` remembers how far
    probing got per base, so a thousand namesakes do not cost a million probes.
    """
    col = db["usernames"]
    hint_key = f"{it_system}:{base}"
    n = hints.get(hint_key, 1)
    while n < 1_000_000:
        name = base if n == 1 else f"{base}{n}"
        key = f"{it_system}:{name}"
        try:
            await col.insert_one({"_id": key, "it_system": it_system, "username": name, "person": person})
            hints[hint_key] = n + 1
            return name
        except DuplicateKeyError:
            held = await col.find_one({"_id": key})
            if held is not None and held.get("person") == person:
                return name
        n += 1
    raise RuntimeError(f"no free username for {person} in {it_system}")

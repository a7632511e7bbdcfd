"""Storage of the access-rights service: catalogue repositories, projections, rights and accounts.

``INDEXES`` is every index the service's queries and invariants need, declared
once and created at every start (``Runtime.prepare``). Hot paths are by
``_id``; the unit tree, engagements and the catalogue live in memory (see
``readmodel`` and ``service``) and are loaded from here.
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Any, TypeVar

from pydantic import BaseModel
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from orgdir.store import Doc, Index, index

M = TypeVar("M", bound=BaseModel)

ACCOUNT_NS = uuidlib.UUID("5b0c8f7e-6a53-4c1e-9a51-0f6a3c1d2e7b")

INDEXES: list[Index] = [
    # Invariants: one account per person and IT system (its _id is derived from both as
    # well), one holder per username in an IT system (its _id is "<system>:<name>" as well).
    index("accounts", "state.person", "state.it_system", unique=True),
    index("usernames", "it_system", "username", unique=True),
    # Queries: GET /accounts?person=&it_system=&status= (person: the unique index's prefix),
    # catalogue list filters, held batches by status and person.
    index("accounts", "state.it_system"),
    index("accounts", "state.status"),
    index("roles", "state.timeline.it_system"),
    *(
        index("assignments", f"state.timeline.{key}")
        for key in ("person", "unit", "role", "role_group", "job_function", "kle", "status")
    ),
    index("held_batches", "status"),
    index("held_batches", "revocations.person"),
    # ?registered_at= reads: what of each org projection had arrived by an instant (its arrival log).
    *(index(f"{name}_log", "applied_at") for name in ("units", "engagements", "persons", "classes")),
]


def account_id(person: str, it_system: str) -> str:
    """One account per person and IT system, with a stable UUID (replays give the same ids)."""
    return str(uuidlib.uuid5(ACCOUNT_NS, f"{person}:{it_system}"))


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True)


async def load_all(db: AsyncDatabase[Doc], collection: str) -> list[Doc]:
    return [d async for d in db[collection].find({}, {"outbox": 0, "registrations": 0})]


def from_projection(model: type[M], doc: Doc) -> M:
    body = {k: v for k, v in doc.items() if k not in ("_id", "sequence")}
    return model.model_validate(body)


def from_repository(model: type[M], doc: Doc) -> M:
    return model.model_validate({"uuid": doc["_id"], "version": doc["version"], **doc["state"]})


async def reserve_username(db: AsyncDatabase[Doc], it_system: str, person: str, base: str) -> str:
    """The person's username in the system: the one reserved before, else the next free of
    ``base``, ``base2``, ``base3`` ….

    Every replica may reserve at once. A counter per base (one atomic
    ``$inc``) hands each reservation its own number, so namesakes reserved at
    once never probe the same name; the name itself is taken by one insert
    whose ``_id`` ``<system>:<name>`` (and the unique ``(it_system,
    username)`` index) admits one holder, so a name taken otherwise (a number
    that another base spells the same way, names from before the counter)
    is skipped. Names are never given back. ``username_holders`` (by
    ``<system>:<person>``) finds a person's name again after a crash between
    the reservation and the account's creation.
    """
    holders = db["username_holders"]
    holder_key = f"{it_system}:{person}"
    mine = await holders.find_one({"_id": holder_key})
    if mine is not None:
        return str(mine["username"])
    col = db["usernames"]
    counter = {"_id": f"{it_system}:{base}"}
    for _ in range(1_000_000):
        try:
            ticket = await db["username_counters"].find_one_and_update(
                counter, {"$inc": {"next": 1}}, upsert=True, return_document=ReturnDocument.AFTER
            )
        except DuplicateKeyError:  # two first upserts at once: the other created it
            continue
        assert ticket is not None  # upserted
        n = int(ticket["next"])
        name = base if n == 1 else f"{base}{n}"
        key = f"{it_system}:{name}"
        try:
            await col.insert_one({"_id": key, "it_system": it_system, "username": name, "person": person})
        except DuplicateKeyError:
            held = await col.find_one({"_id": key})
            if held is None or held.get("person") != person:
                continue
        await holders.update_one({"_id": holder_key}, {"$set": {"username": name}}, upsert=True)
        return name
    raise RuntimeError(f"no free username for {person} in {it_system}")

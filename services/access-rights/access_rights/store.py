"""Storage of the access-rights service: catalogue repositories, projections, rights and accounts.

Hot paths are by ``_id`` only (FerretDB scans everything else); the unit tree,
engagements and the catalogue live in memory and are reloaded from here at startup.
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Any, TypeVar

from pydantic import BaseModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from orgdir.store import Doc

M = TypeVar("M", bound=BaseModel)

ACCOUNT_NS = uuidlib.UUID("5b0c8f7e-6a53-4c1e-9a51-0f6a3c1d2e7b")

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

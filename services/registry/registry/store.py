"""Storage of the registry beyond its aggregates' repositories.

- ``INDEXES``: every index the registry's queries need, declared once.
- ``CprClaims``: one person per CPR number across replicas (unique ``_id``).
- ``AuditLog``: append-only record of CPR-capable reads.

The in-memory views the reads use are in ``registry.readmodel``.
"""

from __future__ import annotations

import logging
import time
import uuid as uuidlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from orgdir import problems
from orgdir.store import Doc, Index, index, paginate

log = logging.getLogger(__name__)

NO_HISTORY = {"outbox": 0, "registrations": 0}

INDEXES: list[Index] = [
    # A person's relations, re-read when a replica catches up on the person's section from scratch.
    index("engagements", "state.person"),
    index("associations", "state.person"),
    index("leaves", "state.person"),
    index("managers", "state.timeline.person"),  # a manager's person may change over time
    # GET /audit?person=…, paged by _id.
    index("audit", "person", "_id"),
    # One person per CPR number: ``cpr_claims`` is keyed by the CPR hash, so its
    # unique ``_id`` index (which every collection has) is the invariant's index.
]


# --- CPR numbers ------------------------------------------------------------------------------


def cpr_in_use() -> problems.Conflict:
    return problems.conflict("Another person has this CPR number.", kind="cpr-in-use", field="cpr")


class CprClaims:
    """One person per CPR number, across replicas: ``cpr_claims`` keyed by the CPR hash.

    A person write that gives a person a CPR hash first claims it, then writes
    the person: the claim is an insert whose ``_id`` is the hash, so of two
    replicas claiming one number at once exactly one insert succeeds; the
    other finds a claim of another person and answers 409 ``cpr-in-use``.

    A claim whose owner's stored person does not hold that hash is left over
    from a write that failed or was superseded (or from a change of number
    whose release did not happen); it may be taken over, by a conditional
    update on the claim's ``token``, once it is older than ``grace`` (younger,
    the owner's write may still be on its way). The owner of a claim refreshes
    its token when it claims again, so a takeover and a re-claim never both
    win. Changing a person's number releases the old claim, conditional on
    the token read before the person was written, so a claim made again
    meanwhile is never released.
    """

    def __init__(self, db: AsyncDatabase[Doc], persons: AsyncCollection[Doc], grace_seconds: float = 60.0) -> None:
        self.col: AsyncCollection[Doc] = db["cpr_claims"]
        self.persons = persons
        self.grace = timedelta(seconds=grace_seconds)

    async def _owner_holds(self, person: str, digest: str) -> bool:
        doc = await self.persons.find_one({"_id": person}, {"state.cpr_hash": 1})
        return doc is not None and (doc.get("state") or {}).get("cpr_hash") == digest

    async def claim(self, digest: str, person: str) -> None:
        """Make ``person`` the holder of ``digest`` or raise 409 ``cpr-in-use``."""
        for _ in range(10):
            now = datetime.now(UTC)
            token = uuidlib.uuid4().hex
            try:
                await self.col.insert_one({"_id": digest, "person": person, "token": token, "at": now})
                return
            except DuplicateKeyError:
                pass
            current = await self.col.find_one({"_id": digest})
            if current is None:
                continue  # released meanwhile: insert again
            if current["person"] == person:  # ours, from an earlier attempt: claim it again
                mine = await self.col.update_one(
                    {"_id": digest, "person": person}, {"$set": {"token": token, "at": now}}
                )
                if mine.matched_count:
                    return
                continue
            if await self._owner_holds(current["person"], digest):
                raise cpr_in_use()
            claimed_at = current.get("at")
            if isinstance(claimed_at, datetime):
                if claimed_at.tzinfo is None:
                    claimed_at = claimed_at.replace(tzinfo=UTC)
                if now - claimed_at < self.grace:
                    raise cpr_in_use()  # the owner's write may be in flight
            taken = await self.col.update_one(
                {"_id": digest, "token": current.get("token")},
                {"$set": {"person": person, "token": token, "at": now}},
            )
            if taken.matched_count:
                log.info("stale CPR claim taken over", extra={"person": person, "previous": current["person"]})
                return
        raise problems.conflict("The CPR number is being claimed concurrently; try again.")

    async def token(self, digest: str, person: str) -> str | None:
        """The token of ``person``'s claim on ``digest`` (read before a write that gives it up)."""
        current = await self.col.find_one({"_id": digest}, {"person": 1, "token": 1})
        if current is None or current.get("person") != person:
            return None
        return str(current.get("token"))

    async def release(self, digest: str, person: str, token: str | None) -> None:
        """Give up a claim after the person's write left it; only if nobody claimed it since."""
        if token is None:
            return
        try:
            await self.col.delete_one({"_id": digest, "person": person, "token": token})
        except Exception as exc:  # a leftover claim is taken over later; never fail the write for it
            log.warning("CPR claim not released", extra={"person": person, "error": str(exc)})

    async def backfill(self, holders: Mapping[str, str]) -> int:
        """Claims for persons stored with a CPR hash but no claim (data written before claims existed)."""
        have = {str(d["_id"]) async for d in self.col.find({}, {"_id": 1})}
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        missing = [
            {"_id": digest, "person": person, "token": uuidlib.uuid4().hex, "at": epoch}
            for digest, person in holders.items()
            if digest not in have
        ]
        if not missing:
            return 0
        try:
            await self.col.insert_many(missing, ordered=False)
        except BulkWriteError:
            pass  # another replica backfilled the same claims
        return len(missing)


# --- audit log --------------------------------------------------------------------------------


class AuditLog:
    """Append-only: inserts only, no update or delete path exists in the service."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.col = db["audit"]

    async def record(
        self, *, actor: str, persons: list[str], endpoint: str, when: datetime, action: str = "read-person"
    ) -> None:
        if not persons:
            return
        stamp = f"{time.time_ns():020d}"
        await self.col.insert_many(
            [
                {
                    "_id": f"{stamp}-{uuidlib.uuid4().hex[:12]}",
                    "at": when,
                    "actor": actor,
                    "person": p,
                    "endpoint": endpoint,
                    "action": action,
                }
                for p in persons
            ],
            ordered=False,
        )

    async def page(self, *, person: str | None, limit: int, cursor: str | None) -> tuple[list[Doc], str | None]:
        query: Mapping[str, Any] = {"person": person} if person else {}
        return await paginate(self.col, query, limit=limit, cursor=cursor)

"""The in-memory views notifier reads: other services' aggregates and the unit tree.

Subscriptions' unit filters and the SCIM connector read these. They belong
to the replica that handles ``notifier.all`` (single-active): its events keep
them current, and a replica taking the queue over reloads them from the
database first. Any other replica that sends a delivery catches them up
first with the copies stored since it last looked (``Projections.catch_up``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from orgdir import visibility
from orgdir.coalesce import Coalesced
from orgdir.contracts.orgunits import OrgUnitSlice
from orgdir.events import CloudEvent
from orgdir.store import Doc, Projection
from orgdir.tree import UnitTree

PROJECTED = {
    "orgunit": "p_units",
    "person": "p_persons",
    "engagement": "p_engagements",
    "manager": "p_managers",
    "account": "p_accounts",
    "access": "p_rights",
    "role": "p_roles",
    "class": "p_classes",  # the visibility classes decide what a target may see of addresses
}



def _now() -> datetime:
    return datetime.now(UTC)


class ProjectionCache:
    """Another service's aggregates, newest sequence wins; in memory, persisted by ``_id``.

    The stored copy is written conditionally (only over an older one), so a
    replica whose memory is behind can never make the database older; memory
    only ever holds what the database held, so it never runs ahead of it.
    """

    def __init__(self, db: AsyncDatabase[Doc], collection: str) -> None:
        self.stored = Projection(db, collection, stamped=True)
        self.col: AsyncCollection[Doc] = self.stored.col
        self.items: dict[str, Doc] = {}

    def keep(self, doc: Doc) -> bool:
        """Hold ``doc`` unless memory has this copy or a newer one; True when it was kept."""
        current = self.items.get(doc["_id"])
        if current is not None and int(current["sequence"]) >= int(doc["sequence"]):
            return False
        self.items[doc["_id"]] = doc
        return True

    async def load(self) -> None:
        """Everything stored; what memory holds is replaced only by newer copies."""
        async for d in self.col.find({}):
            self.keep(d)

    def newer(self, key: str, sequence: int) -> bool:
        current = self.items.get(key)
        return current is None or int(current["sequence"]) < sequence

    async def catch_up(self, since: datetime) -> list[Doc]:
        """The copies stored since ``since`` that memory lacked, now held."""
        return [d async for d in self.stored.changed_since(since, self.newer) if self.keep(d)]

    def get(self, key: str) -> Doc | None:
        return self.items.get(key)

    async def apply(self, key: str, sequence: int, body: dict[str, Any]) -> bool:
        current = self.items.get(key)
        if current is not None and int(current["sequence"]) >= sequence:
            return False
        if await self.stored.apply(key, sequence, body):
            self.keep({**body, "_id": key, "sequence": sequence})
            return True
        stored = await self.col.find_one({"_id": key})  # newer than memory: another replica's
        if stored is not None:
            self.keep(stored)
        return False


class Projections:
    """Notifier-side copies of what the filters and the SCIM connector need."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.caches = {agg: ProjectionCache(db, col) for agg, col in PROJECTED.items()}
        self.engagements_of: dict[str, set[str]] = {}
        self.accounts_of: dict[str, set[str]] = {}
        self.tree = UnitTree()  # the orgunit projection as a tree, for subscriptions' unit filters
        self._tree_sequence: dict[str, int] = {}  # which copy of each unit the tree holds
        self.loaded_at: datetime | None = None  # when memory last caught up with the database
        self._catching_up = Coalesced()  # concurrent senders share one catch-up begun after they asked

    async def load(self) -> None:
        started = _now()
        for aggregate, cache in self.caches.items():
            await cache.load()
            for uid, doc in cache.items.items():
                self._index(aggregate, uid, doc)
        self.loaded_at = started

    def _index(self, aggregate: str, uid: str, doc: Doc) -> None:
        """The lookups beside the copies: a person's engagements and accounts, the unit tree."""
        index = {"engagement": self.engagements_of, "account": self.accounts_of}.get(aggregate)
        if index is not None:
            index.setdefault(str(doc.get("person")), set()).add(uid)
        if aggregate == "orgunit":
            self._put_unit(uid)

    async def catch_up(self) -> None:
        """Memory at least as new as every copy stored before this call (the first one loads all).

        Memory follows only the events this replica consumed: while another replica
        handles ``notifier.all``, copies are applied there, and a delivery sent from
        here would be built, or checked after it lands, against an older picture."""
        ticket = self._catching_up.ticket()
        await self._catching_up.run(ticket, self._catch_up)

    async def _catch_up(self) -> None:
        if self.loaded_at is None:
            await self.load()
            return
        started = _now()
        for aggregate, cache in self.caches.items():
            for doc in await cache.catch_up(self.loaded_at):
                self._index(aggregate, str(doc["_id"]), doc)
        self.loaded_at = started

    async def reread(self, aggregate: str, subject: str) -> None:
        """One copy as stored: an event another replica applied came here again (redelivered)."""
        cache = self.caches.get(aggregate)
        doc = await cache.stored.get(subject) if cache is not None else None
        if cache is not None and doc is not None and cache.keep(doc):
            self._index(aggregate, subject, doc)

    async def reread_accounts(self, person: str) -> None:
        """The person's account copies as stored now.

        Even the replica handling ``notifier.all`` can lack one for a moment: a replica
        that held the queue before may still have been applying an event when it lost it
        (the event comes here again, but perhaps after a User was built without it)."""
        cache = self.caches["account"]
        async for doc in cache.col.find({"person": person}):
            if cache.keep(doc):
                self._index("account", str(doc["_id"]), doc)

    def __getitem__(self, aggregate: str) -> ProjectionCache:
        return self.caches[aggregate]

    async def apply(self, event: CloudEvent) -> None:
        aggregate = event.type.split(".", 1)[0]
        cache = self.caches.get(aggregate)
        if cache is None:
            return
        body: dict[str, Any] = {"data": event.data, "type": event.type}
        if aggregate in ("engagement", "account"):
            body["person"] = event.data.get("person")
        await cache.apply(event.subject, event.sequence, body)
        doc = cache.get(event.subject)  # this copy, or a newer stored one when this one lost
        if doc is not None:
            self._index(aggregate, event.subject, doc)

    def _put_unit(self, uid: str) -> None:
        """The tree follows the unit's copy in memory (every parent its timeline names)."""
        doc = self.caches["orgunit"].get(uid)
        if doc is None or self._tree_sequence.get(uid) == int(doc["sequence"]):
            return
        timeline = [OrgUnitSlice.model_validate(s) for s in doc["data"].get("timeline", [])]
        self.tree.put(uid, timeline)
        self._tree_sequence[uid] = int(doc["sequence"])

    def has_class(self, uuid: str) -> bool:
        return self.caches["class"].get(uuid) is not None

    def visibility_user_key(self, uuid: str) -> str | None:
        """A visibility class's user_key (``orgdir.visibility.UserKeyOf``); None when not (yet) known."""
        doc = self.caches["class"].get(uuid)
        if doc is None or doc["data"].get("facet") != visibility.FACET:
            return None
        timeline = doc["data"].get("timeline") or []
        return str(timeline[-1].get("user_key")) if timeline else None

    def units_of_person(self, person: str) -> set[str]:
        units: set[str] = set()
        for eid in self.engagements_of.get(person, ()):
            doc = self.caches["engagement"].get(eid)
            if doc:
                units |= {s["unit"] for s in doc["data"].get("timeline", []) if s.get("unit")}
        return units

    def units_of(self, event: CloudEvent) -> set[str]:
        """The units an event is about, for a subscription's subtree filter."""
        aggregate = event.type.split(".", 1)[0]
        data = event.data
        if aggregate == "orgunit":
            return {event.subject}
        units = {
            s["unit"] for s in data.get("timeline", []) if isinstance(s, dict) and s.get("unit")
        }
        if isinstance(data.get("unit"), str):
            units.add(data["unit"])
        if aggregate == "access":
            units |= {r["unit"] for r in data.get("reasons", []) if r.get("unit")}
        person = data.get("person") if isinstance(data.get("person"), str) else None
        if aggregate == "person":
            person = event.subject
        if person:
            units |= self.units_of_person(person)
        return units

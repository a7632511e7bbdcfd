"""The in-memory views notifier reads: other services' aggregates and the unit tree.

Subscriptions' unit filters and the SCIM connector read these. They belong
to the replica that handles ``notifier.all`` (single-active): its events keep
them current, and a replica taking the queue over (or sending a delivery
recorded elsewhere) reloads them from the database first.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from orgdir import visibility
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
        self.stored = Projection(db, collection)
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

    async def load(self) -> None:
        started = _now()
        for cache in self.caches.values():
            await cache.load()
        for uid, doc in self.caches["engagement"].items.items():
            self.engagements_of.setdefault(str(doc.get("person")), set()).add(uid)
        for uid, doc in self.caches["account"].items.items():
            self.accounts_of.setdefault(str(doc.get("person")), set()).add(uid)
        for uid in self.caches["orgunit"].items:
            self._put_unit(uid)
        self.loaded_at = started

    def __getitem__(self, aggregate: str) -> ProjectionCache:
        return self.caches[aggregate]

    async def reread_accounts(self, person: str) -> bool:
        """The person's account copies as stored now; True when memory was behind.

        Memory follows only the events this replica consumed: another replica may
        have applied (and sent) a newer account meanwhile."""
        changed = False
        async for doc in self.caches["account"].col.find({"person": person}):
            if self.caches["account"].keep(doc):
                self.accounts_of.setdefault(person, set()).add(str(doc["_id"]))
                changed = True
        return changed

    async def apply(self, event: CloudEvent) -> None:
        aggregate = event.type.split(".", 1)[0]
        cache = self.caches.get(aggregate)
        if cache is None:
            return
        body: dict[str, Any] = {"data": event.data, "type": event.type}
        if aggregate in ("engagement", "account"):
            body["person"] = event.data.get("person")
        if await cache.apply(event.subject, event.sequence, body):
            index = {"engagement": self.engagements_of, "account": self.accounts_of}.get(aggregate)
            if index is not None:
                index.setdefault(str(event.data.get("person")), set()).add(event.subject)
        if aggregate == "orgunit":  # memory may hold a newer stored copy even when this one lost
            self._put_unit(event.subject)

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

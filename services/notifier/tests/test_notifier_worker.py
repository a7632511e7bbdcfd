"""A target's delivery worker against a real database: what may be in flight at once."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from notifier import domain
from notifier.delivery import Pending, TargetWorker
from notifier.store import Deliveries
from orgdir.clock import SystemClock
from orgdir.events import new_event
from orgdir.store import connect
from orgdir_tools.testkit import eventually


class KeyedSender:
    """Holds each attempt a moment and records what was in flight; the key is the event's person."""

    concurrency = 4

    def __init__(self) -> None:
        self.flying: Counter[str] = Counter()
        self.most_per_key = 0
        self.most = 0
        self.sent: list[tuple[str, int]] = []

    def key_of(self, p: Pending) -> str:
        return str(p.event["data"]["person"])

    async def send(self, sub: dict[str, Any], p: Pending) -> domain.Outcome:
        key = self.key_of(p)
        self.flying[key] += 1
        self.most_per_key = max(self.most_per_key, self.flying[key])
        self.most = max(self.most, sum(self.flying.values()))
        await asyncio.sleep(0.03)
        self.flying[key] -= 1
        self.sent.append((p.stream, p.sequence))
        return domain.Outcome("ok", 200)

    async def close(self) -> None:
        pass


async def test_one_key_at_a_time_many_keys_at_once_each_stream_in_order(
    ns: str, mongodb_url: str, make_settings: Any
) -> None:
    db = connect(mongodb_url)[f"{ns}_worker"]
    store = Deliveries(db, SystemClock())
    sub = {"_id": "target", "kind": "scim", "url": "http://peer.invalid", "event_types": ["#"], "active": True}
    sender = KeyedSender()
    settings = make_settings()
    worker = TargetWorker(sub, sender, store, settings, "replica-a")
    # 3 persons; each has 3 streams (aggregates) of 3 events: 27 deliveries.
    for seq in (1, 2, 3):
        for person in ("p0", "p1", "p2"):
            for aggregate in ("person", "engagement", "account"):
                event = new_event(service="test", type=f"{aggregate}.updated", subject=f"{aggregate}-{person}",
                                  sequence=seq, data={"person": person})
                doc, _ = await store.create(sub, event, f"{aggregate}:{person}", "replica-a", settings.lease_seconds)
                assert doc is not None
                worker.add(Pending.of(doc, "replica-a"))
    worker.start()
    try:
        await eventually(lambda: len(sender.sent) == 27, within=30)
    finally:
        await worker.stop()
    assert sender.most_per_key == 1  # one person's deliveries never overlap
    assert sender.most >= 2  # different persons' do
    for stream in {s for s, _ in sender.sent}:
        assert [q for s, q in sender.sent if s == stream] == [1, 2, 3]
    assert not worker.ready or all(e[2] not in worker.streams for e in worker.ready)
    assert worker.known == set() and not worker.parked and not worker.busy

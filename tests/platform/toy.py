"""A minimal service on the platform, for the platform's own acceptance tests.

``widget`` aggregates are written through the real Repository and outbox;
``python -m tests.platform.toy consume`` is a consumer in its own process that
records what it applied in its own database.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from typing import Any

from fastapi import Depends, FastAPI
from prometheus_client import start_http_server
from pydantic import BaseModel

from orgdir import auth
from orgdir.bus import Bus, Router
from orgdir.clock import Clock
from orgdir.events import CloudEvent, register_aggregate
from orgdir.http import create_app
from orgdir.service import Runtime
from orgdir.settings import Settings
from orgdir.store import Change, MongoSeenStore, connect


class WidgetState(BaseModel):
    uuid: str
    version: int
    name: str


register_aggregate("widget", WidgetState, "widget", ("created", "updated"))


class WidgetIn(BaseModel):
    name: str


def create(settings: Settings, clock: Clock | None = None) -> FastAPI:
    runtime = Runtime(settings, clock)
    repo = runtime.repository("widgets")
    app = create_app(settings.service_name, ready=runtime.ready, lifespan=runtime.lifespan)

    @app.post("/api/v1/widgets", status_code=201)
    async def create_widget(body: WidgetIn, _: auth.Principal = Depends(auth.write)) -> dict[str, Any]:
        uid = str(uuid.uuid4())
        doc = await repo.insert(uid, Change({"name": body.name}, "widget.created"))
        return {"uuid": uid, "version": doc["version"]}

    @app.patch("/api/v1/widgets/{uid}")
    async def rename(uid: str, body: WidgetIn, _: auth.Principal = Depends(auth.write)) -> dict[str, Any]:
        doc = await repo.mutate(uid, lambda d: Change({"name": body.name}, "widget.updated"), what="widget")
        return {"uuid": uid, "version": doc["version"]}

    return app


async def consume(settings: Settings, metrics_port: int) -> None:
    """Apply widget events into ``applied``: one counter per event id and per subject."""
    start_http_server(metrics_port, addr="127.0.0.1")
    db = connect(settings.mongodb_url)[settings.database_name]
    bus = Bus(settings)
    bus.start()
    router = Router()

    @router.on("widget.*")
    async def apply(event: CloudEvent, data: WidgetState) -> None:
        await db.applied.update_one({"_id": event.id}, {"$inc": {"count": 1}}, upsert=True)
        await db.names.update_one(
            {"_id": event.subject}, {"$set": {"name": data.name, "seq": event.sequence}}, upsert=True
        )

    from orgdir.bus import Consumer

    consumer = Consumer(bus, "toy", router, MongoSeenStore(db))
    await consumer.start()
    print("consumer ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await consumer.stop()
    await bus.close()


if __name__ == "__main__":
    if sys.argv[1] == "consume":
        asyncio.run(consume(Settings(), int(os.environ["TOY_METRICS_PORT"])))

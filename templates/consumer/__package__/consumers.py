"""{{name}}'s queue, ``{{name}}.events``: the event types it is bound to and their handlers.

Declared at module level, like every Orgdir consumer. A refresh
(``POST /api/v1/refresh {"queue": "{{name}}.events"}`` on registry and
access-rights) sends straight to the queue, ``refresh.completed`` included.
"""

from __future__ import annotations

from orgdir.bus import Routes
from orgdir.contracts.access import AccessChange, RightsState
from orgdir.contracts.operations import RefreshCompleted
from orgdir.contracts.registry import PersonState
from orgdir.events import CloudEvent
from {{package}}.service import Directory

routes: Routes[Directory] = Routes("{{name}}", "events")


@routes.on("person.*")
async def on_person(directory: Directory, event: CloudEvent, data: PersonState) -> None:
    await directory.person(event, data)


@routes.on("access.*")
async def on_access(directory: Directory, event: CloudEvent, data: AccessChange | RightsState) -> None:
    await directory.access(event, data)


@routes.on("refresh.completed")
async def on_refresh_completed(directory: Directory, event: CloudEvent, data: RefreshCompleted) -> None:
    await directory.refreshed(event, data)

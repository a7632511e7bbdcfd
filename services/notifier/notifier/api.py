"""HTTP API under /api/v1: subscriptions (admin writes) and the delivery log with replay."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from notifier import domain
from notifier.schemas import DeliveryOut, ReplayOut, SubscriptionIn, SubscriptionOut, SubscriptionPatch
from notifier.service import Notifier
from orgdir import auth, visibility
from orgdir.http import IfMatch, Page, PageQuery, ReturnMinimal, minimal, set_etag

router = APIRouter(prefix="/api/v1")


async def _notifier(request: Request) -> Notifier:
    svc: Notifier = request.app.state.notifier
    return svc


Svc = Annotated[Notifier, Depends(_notifier)]
# Any UUID spelling is accepted (400 ``invalid-uuid`` otherwise); answers carry the canonical form.
SubscriptionId = Annotated[str, Path(description="The subscription's uuid.", json_schema_extra={"format": "uuid"})]
DeliveryId = Annotated[str, Path(description="`<subscription uuid>:<event id>`.")]


def _written(out: SubscriptionOut, created: bool, response: Response) -> SubscriptionOut:
    response.status_code = 201 if created else 200
    set_etag(response, out.version)
    return out


# ---------------------------------------------------------------------------- subscriptions


@router.get("/subscriptions", response_model=Page[SubscriptionOut], tags=["subscriptions"])
async def list_subscriptions(svc: Svc, paging: PageQuery, _: auth.Reader) -> Page[SubscriptionOut]:
    items, nxt = await svc.list_subscriptions(limit=paging.limit, cursor=paging.cursor)
    return Page(items=items, next_cursor=nxt)


@router.post("/subscriptions", status_code=201, response_model=SubscriptionOut, tags=["subscriptions"])
async def create_subscription(body: SubscriptionIn, svc: Svc, response: Response, _: auth.Admin) -> SubscriptionOut:
    out, created = await svc.create_subscription(body)
    return _written(out, created, response)


@router.put(
    "/subscriptions/{sid}",
    response_model=SubscriptionOut,
    responses={201: {"model": SubscriptionOut, "description": "Created"}},
    tags=["subscriptions"],
)
async def put_subscription(
    sid: SubscriptionId,
    body: SubscriptionIn,
    svc: Svc,
    if_match: IfMatch,
    response: Response,
    _: auth.Admin,
    rm: ReturnMinimal,
) -> SubscriptionOut | Response:
    """Create (201) or replace (200) under a client-chosen uuid; the same body twice changes nothing.
    ``secret`` and ``token`` may be omitted to keep the stored ones."""
    out, created = await svc.put_subscription(sid, body, if_match)
    return minimal(out.version, created) if rm else _written(out, created, response)


@router.patch("/subscriptions/{sid}", response_model=SubscriptionOut, tags=["subscriptions"])
async def patch_subscription(
    sid: SubscriptionId, body: SubscriptionPatch, svc: Svc, if_match: IfMatch, response: Response, _: auth.Admin
) -> SubscriptionOut:
    return _written(await svc.patch_subscription(sid, body, if_match), False, response)


@router.get("/subscriptions/{sid}", response_model=SubscriptionOut, tags=["subscriptions"])
async def get_subscription(sid: SubscriptionId, svc: Svc, response: Response, _: auth.Reader) -> SubscriptionOut:
    out = await svc.get_subscription(sid)
    set_etag(response, out.version)
    return out


@router.delete("/subscriptions/{sid}", status_code=204, response_class=Response, tags=["subscriptions"])
async def delete_subscription(sid: SubscriptionId, svc: Svc, if_match: IfMatch, _: auth.Admin) -> Response:
    """Removes the target; its undelivered deliveries become ``failed`` (still listed, replayable
    only after re-creating a subscription with the same uuid)."""
    await svc.delete_subscription(sid, if_match)
    return Response(status_code=204)


@router.post("/subscriptions/{sid}/replay", response_model=ReplayOut, tags=["subscriptions"])
async def replay_subscription(
    sid: SubscriptionId,
    svc: Svc,
    _: auth.Admin,
    since: Annotated[datetime, Query(description="Replay deliveries of events from this instant on.")],
    status: Annotated[
        list[str],
        Query(
            description="Which final states to send again.",
            json_schema_extra={"items": {"type": "string", "enum": list(domain.FINAL)}},
        ),
    ] = ["failed", "superseded", "delivered"],  # noqa: B006 - FastAPI copies query defaults
) -> ReplayOut:
    """Send again everything this target got (or failed to get) since a time, in order."""
    return await svc.replay_subscription(sid, since, status)


# ---------------------------------------------------------------------------- deliveries


@router.get("/deliveries", response_model=Page[DeliveryOut], tags=["deliveries"])
async def list_deliveries(
    svc: Svc,
    paging: PageQuery,
    _: auth.Reader,
    status: Annotated[
        str | None,
        Query(description="Only deliveries in this state.", json_schema_extra={"enum": list(domain.STATUSES)}),
    ] = None,
    subscription: Annotated[
        str | None, Query(description="A subscription's uuid.", json_schema_extra={"format": "uuid"})
    ] = None,
    subject: Annotated[str | None, Query(description="The events' subject (an aggregate's uuid).")] = None,
    event_type: Annotated[str | None, Query(description="An event type, e.g. person.updated.")] = None,
) -> Page[DeliveryOut]:
    items, nxt = await svc.list_deliveries(
        status=status,
        subscription=subscription,
        subject=subject,
        event_type=event_type,
        limit=paging.limit,
        cursor=paging.cursor,
    )
    return Page(items=items, next_cursor=nxt)


@router.get("/deliveries/{did}", response_model=DeliveryOut, tags=["deliveries"])
async def get_delivery(did: DeliveryId, svc: Svc, principal: auth.Reader) -> DeliveryOut:
    """The event as sent; secret addresses in it only with orgdir:read:secret."""
    secret = principal.has(visibility.READ_SECRET)
    return await svc.get_delivery(did, "secret" if secret else "internal")


@router.post("/deliveries/{did}/replay", response_model=DeliveryOut, status_code=202, tags=["deliveries"])
async def replay_delivery(did: DeliveryId, svc: Svc, _: auth.Admin) -> DeliveryOut:
    """Queue a delivery again (any final state); 409 while it is still pending."""
    return await svc.replay_delivery(did)

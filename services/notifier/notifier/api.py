"""HTTP API under /api/v1: subscriptions (admin writes) and the delivery log with replay."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel

from notifier import domain
from notifier.consumers import Core
from notifier.store import Doc
from orgdir import auth
from orgdir.http import Page, if_match, set_etag
from orgdir.problems import Problem, not_found, precondition_failed, rule
from orgdir.store import paginate

router = APIRouter(prefix="/api/v1")


def core_of(request: Request) -> Core:
    core: Core = request.app.state.core
    return core


class SubscriptionOut(BaseModel):
    uuid: str
    version: int
    kind: str
    name: str
    url: str
    event_types: list[str]
    unit: str | None = None
    it_system: str | None = None
    active: bool
    latest_state_only: bool
    has_secret: bool
    has_token: bool
    created_at: datetime | None = None
    updated_at: datetime | None = None
    status: dict[str, Any] = {}


class DeliveryOut(BaseModel):
    id: str
    subscription: str
    kind: str
    event_id: str
    event_type: str
    subject: str
    sequence: int
    event_time: datetime
    status: str
    attempts: int
    next_attempt_at: datetime | None = None
    created_at: datetime
    delivered_at: datetime | None = None
    last_status: int | None = None
    last_error: str | None = None
    event: dict[str, Any] | None = None


async def subs_out(core: Core, docs: list[Doc]) -> list[SubscriptionOut]:
    """``status``: the backlog as the database counts it (the same through every replica), the
    circuit and what is in flight as this replica sees them (each replica has its own breaker)."""
    backlogs = await core.deliveries.backlogs([d["_id"] for d in docs])
    return [
        SubscriptionOut(
            **domain.public_view(d),
            status={**core.dispatcher.status(d["_id"]), "backlog": backlogs.get(d["_id"], 0)},
        )
        for d in docs
    ]


async def sub_out(core: Core, doc: Doc) -> SubscriptionOut:
    return (await subs_out(core, [doc]))[0]


def delivery_out(doc: Doc) -> DeliveryOut:
    return DeliveryOut(
        id=doc["_id"], **{k: v for k, v in doc.items() if k in DeliveryOut.model_fields}
    )


def _uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise Problem(400, "invalid-uuid", "Invalid UUID", f"{value!r} is not a UUID.") from exc


async def _write(
    core: Core, sid: str, cfg: dict[str, Any], expected: int | None, response: Response
) -> SubscriptionOut:
    doc, created = await core.subscriptions.put(sid, cfg, expected)
    await core.subscription_changed(sid)  # this replica at once, the others within moments
    response.status_code = 201 if created else 200
    set_etag(response, doc["version"])
    return await sub_out(core, doc)


@router.get("/subscriptions", response_model=Page[SubscriptionOut])
async def list_subscriptions(
    request: Request,
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = None,
    _: auth.Principal = Depends(auth.read),
) -> Page[SubscriptionOut]:
    core = core_of(request)
    docs, nxt = await paginate(core.subscriptions.col, {}, limit=limit, cursor=cursor)
    return Page(items=await subs_out(core, docs), next_cursor=nxt)


@router.post("/subscriptions", status_code=201, response_model=SubscriptionOut)
async def create_subscription(
    body: domain.SubscriptionIn,
    request: Request,
    response: Response,
    _: auth.Principal = Depends(auth.admin),
) -> SubscriptionOut:
    core = core_of(request)
    return await _write(core, str(uuid.uuid4()), domain.new_config(body), None, response)


@router.put("/subscriptions/{sid}", response_model=SubscriptionOut)
async def put_subscription(
    sid: str,
    body: domain.SubscriptionIn,
    request: Request,
    response: Response,
    _: auth.Principal = Depends(auth.admin),
) -> SubscriptionOut:
    core = core_of(request)
    sid = _uuid(sid)
    expected = if_match(request)
    previous = await core.subscriptions.get(sid)
    return await _write(core, sid, domain.new_config(body, previous), expected, response)


@router.patch("/subscriptions/{sid}", response_model=SubscriptionOut)
async def patch_subscription(
    sid: str,
    body: domain.SubscriptionPatch,
    request: Request,
    response: Response,
    _: auth.Principal = Depends(auth.admin),
) -> SubscriptionOut:
    core = core_of(request)
    previous = await core.subscriptions.require(_uuid(sid))
    expected = if_match(request)
    if expected is not None and expected != previous["version"]:
        raise precondition_failed(previous["version"], expected)
    cfg = domain.patched_config(previous, body)
    return await _write(core, previous["_id"], cfg, previous["version"], response)


@router.get("/subscriptions/{sid}", response_model=SubscriptionOut)
async def get_subscription(
    sid: str, request: Request, response: Response, _: auth.Principal = Depends(auth.read)
) -> SubscriptionOut:
    core = core_of(request)
    doc = await core.subscriptions.require(_uuid(sid))
    set_etag(response, doc["version"])
    return await sub_out(core, doc)


@router.delete("/subscriptions/{sid}", status_code=204)
async def delete_subscription(
    sid: str, request: Request, _: auth.Principal = Depends(auth.admin)
) -> Response:
    """Removes the target; its undelivered deliveries become ``failed`` (still listed, replayable
    only after re-creating a subscription with the same uuid)."""
    core = core_of(request)
    sid = _uuid(sid)
    await core.subscriptions.delete(sid, if_match(request))
    await core.subscription_changed(sid)  # every replica stops its worker
    await core.deliveries.fail_pending_of(sid, "subscription deleted")
    return Response(status_code=204)


@router.post("/subscriptions/{sid}/replay")
async def replay_subscription(
    sid: str,
    request: Request,
    since: datetime = Query(description="Replay deliveries of events from this instant on."),
    status: list[str] = Query(
        default=["failed", "superseded", "delivered"],
        description="Which final states to send again.",
    ),
    _: auth.Principal = Depends(auth.admin),
) -> dict[str, Any]:
    """Send again everything this target got (or failed to get) since a time, in order."""
    core = core_of(request)
    sub = await core.subscriptions.require(_uuid(sid))
    bad = [s for s in status if s not in ("failed", "superseded", "delivered")]
    if bad:
        raise rule(
            "invalid-status", f"Only final deliveries can be replayed, not {bad}.", status=400
        )
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    docs = await core.deliveries.of_subscription_since(sub["_id"], since, status)
    docs.sort(key=lambda d: (d["stream"], d["sequence"]))
    for d in docs:
        await _replay(core, d["_id"])
    return {"subscription": sub["_id"], "replayed": len(docs)}


async def _replay(core: Core, did: str) -> Doc:
    """Back to pending, leased to this replica, which sends it (a conditional write: of two
    replays at once, one puts it back; the other finds it pending already)."""
    doc = await core.deliveries.replay(did, core.replica, core.settings.lease_seconds)
    if doc is None:
        doc = await core.deliveries.get(did)
        if doc is None:
            raise not_found("delivery", did)
    core.dispatcher.add(doc)
    return doc


@router.get("/deliveries", response_model=Page[DeliveryOut])
async def list_deliveries(
    request: Request,
    status: str | None = Query(None, description="pending, delivered, failed or superseded"),
    subscription: str | None = None,
    subject: str | None = None,
    event_type: str | None = None,
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = None,
    _: auth.Principal = Depends(auth.read),
) -> Page[DeliveryOut]:
    core = core_of(request)
    q: dict[str, Any] = {}
    if status is not None:
        if status not in domain.STATUSES:
            raise rule(
                "invalid-status", f"status must be one of {', '.join(domain.STATUSES)}.", status=400
            )
        q["status"] = status
    if subscription:
        q["subscription"] = _uuid(subscription)
    if subject:
        q["subject"] = subject
    if event_type:
        q["event_type"] = event_type
    docs, nxt = await core.deliveries.page(q, limit=limit, cursor=cursor)
    return Page(items=[delivery_out(d) for d in docs], next_cursor=nxt)


@router.get("/deliveries/{did}", response_model=DeliveryOut)
async def get_delivery(
    did: str, request: Request, _: auth.Principal = Depends(auth.read)
) -> DeliveryOut:
    doc = await core_of(request).deliveries.get(did)
    if doc is None:
        raise not_found("delivery", did)
    return delivery_out(doc)


@router.post("/deliveries/{did}/replay", response_model=DeliveryOut, status_code=202)
async def replay_delivery(
    did: str, request: Request, _: auth.Principal = Depends(auth.admin)
) -> DeliveryOut:
    """Queue a delivery again (any final state); 409 while it is still pending."""
    core = core_of(request)
    doc = await core.deliveries.get(did)
    if doc is None:
        raise not_found("delivery", did)
    if doc["status"] == "pending":
        raise rule(
            "delivery-pending", "This delivery is still pending; it will be sent.", status=409
        )
    if await core.subscriptions.get(doc["subscription"]) is None:
        raise rule(
            "subscription-missing", "The delivery's subscription no longer exists.", status=409
        )
    return delivery_out(await _replay(core, did))

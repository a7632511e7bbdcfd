"""Pure rules of the notifier: subscriptions, matching, signing, retry decisions.

No I/O here: the use cases (``service``) and the delivery workers call these so the
rules live in one place and are tested without servers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

from notifier.schemas import SubscriptionIn, SubscriptionPatch
from orgdir import visibility
from orgdir.bus import amqp_matches
from orgdir.events import CATALOGUE, CloudEvent
from orgdir.problems import bad_request, conflict, rule
from orgdir.tree import UnitTree

STATUSES: tuple[str, ...] = ("pending", "delivered", "failed", "superseded")
FINAL: tuple[str, ...] = ("failed", "superseded", "delivered")  # what a replay may send again

SCIM_DEFAULT_TYPES = ["account.*", "access.*", "person.*", "engagement.*", "manager.*", "role.*"]
_PATTERN = re.compile(r"^([a-z_]+|\*|#)(\.([a-z_]+|\*|#))*$")


CONFIG_FIELDS = (
    "kind",
    "name",
    "url",
    "event_types",
    "unit",
    "secret",
    "token",
    "it_system",
    "active",
    "latest_state_only",
    "visibility",
)


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret ``whsec_<base64>``."""
    if not secret.startswith("whsec_"):
        raise rule(
            "invalid-secret", "The secret must have the Standard Webhooks form whsec_<base64>."
        )
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise rule("invalid-secret", "The part after whsec_ is not valid base64.") from exc
    if len(key) < 16:
        raise rule(
            "invalid-secret", "The secret must hold at least 16 random bytes (24-64 recommended)."
        )
    return key


def validate_patterns(patterns: list[str]) -> list[str]:
    """Each pattern must be well formed and match at least one event type of the catalogue."""
    if not patterns:
        raise rule("event-types-required", "A subscription needs at least one event-type pattern.")
    out: list[str] = []
    for p in patterns:
        if not _PATTERN.match(p):
            raise rule(
                "invalid-event-pattern",
                f"{p!r} is not a routing-key pattern such as person.* or #.",
            )
        if not any(amqp_matches(p, t) for t in CATALOGUE):
            raise rule(
                "unknown-event-type", f"{p!r} matches no event type of the catalogue.", pattern=p
            )
        if p not in out:
            out.append(p)
    return out


def new_config(body: SubscriptionIn, previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The stored configuration of a PUT/POST body; write-only fields kept when omitted."""
    cfg = body.model_dump()
    for field in ("secret", "token"):
        if cfg[field] is None and previous is not None:
            cfg[field] = previous.get(field)
    if previous is not None and previous.get("kind") != cfg["kind"]:
        raise rule("kind-immutable", "A subscription's kind cannot change; create a new one.")
    return check_config(cfg)


def patched_config(previous: Mapping[str, Any], patch: SubscriptionPatch) -> dict[str, Any]:
    cfg = {k: previous.get(k) for k in CONFIG_FIELDS}
    for k, v in patch.model_dump(exclude_unset=True).items():
        cfg[k] = v
    try:
        SubscriptionIn.model_validate(
            {k: v for k, v in cfg.items() if v is not None or k == "unit"}
        )
    except ValueError as exc:
        raise rule("invalid-subscription", str(exc).splitlines()[0]) from exc
    return check_config(cfg)


def check_config(cfg: dict[str, Any]) -> dict[str, Any]:
    cfg["visibility"] = cfg.get("visibility") or visibility.DEFAULT  # stored before the field existed
    if cfg["kind"] == "webhook":
        if not cfg.get("secret"):
            raise rule("secret-required", "A webhook subscription needs a secret (whsec_<base64>).")
        decode_secret(cfg["secret"])
        cfg["event_types"] = validate_patterns(cfg.get("event_types") or [])
    else:
        cfg["event_types"] = validate_patterns(cfg.get("event_types") or SCIM_DEFAULT_TYPES)
    return cfg


def public_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A subscription as the API shows it: secrets replaced by flags."""
    out = {k: doc.get(k) for k in CONFIG_FIELDS if k not in ("secret", "token")}
    out["visibility"] = ceiling_of(doc)
    out["uuid"] = doc["_id"]
    out["version"] = doc["version"]
    out["has_secret"] = bool(doc.get("secret"))
    out["has_token"] = bool(doc.get("token"))
    out["created_at"] = doc.get("created_at")
    out["updated_at"] = doc.get("updated_at")
    return out


# --- address visibility ----------------------------------------------------------------------


def ceiling_of(sub: Mapping[str, Any]) -> visibility.Level:
    """How much of addresses a target may see (a subscription stored before the setting: internal)."""
    value = sub.get("visibility")
    return value if value in visibility.LEVELS else visibility.DEFAULT


def redact(event: CloudEvent, ceiling: visibility.Level, user_key_of: visibility.UserKeyOf) -> CloudEvent:
    """The event as a target allowed up to ``ceiling`` receives it: every ``addresses`` list of its
    timeline (persons, units) cut to what the target may see. The same event when nothing is cut."""
    timeline = event.data.get("timeline")
    if ceiling == "secret" or not isinstance(timeline, list):
        return event
    slices = [s for s in timeline if isinstance(s, Mapping)]
    if not any(isinstance(s.get("addresses"), list) and s["addresses"] for s in slices):
        return event
    stripped = visibility.strip_timeline(slices, ceiling, user_key_of)
    if stripped == slices:
        return event
    return event.model_copy(update={"data": {**event.data, "timeline": stripped}})


class ClassNotYetKnown(Exception):
    """An address names a visibility class whose creation this service has not yet seen.

    The class's event and the first address naming it come from different
    services and may cross. Cut as "unknown, so secret" the address would be
    missing from that delivery for good, so the consumer retries the event
    (as for ``UnitNotYetKnown``) until the class is projected.
    """


def unprojected_classes(event: CloudEvent, known: Callable[[str], bool]) -> set[str]:
    """The visibility classes the event's addresses name that ``known`` has not seen."""
    timeline = event.data.get("timeline")
    if not isinstance(timeline, list):
        return set()
    named = {
        str(a["visibility"])
        for s in timeline
        if isinstance(s, Mapping) and isinstance(s.get("addresses"), list)
        for a in s["addresses"]
        if isinstance(a, Mapping) and a.get("visibility")
    }
    return {c for c in named if not known(c)}


# --- requests -----------------------------------------------------------------------------


def parse_uuid(value: str) -> str:
    """A subscription id as the API accepts it (any UUID spelling), in its canonical form."""
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise bad_request("invalid-uuid", f"{value!r} is not a UUID.") from exc


def check_status(status: str) -> str:
    if status not in STATUSES:
        raise bad_request("invalid-status", f"status must be one of {', '.join(STATUSES)}.")
    return status


def check_replay_statuses(statuses: list[str]) -> list[str]:
    bad = [s for s in statuses if s not in FINAL]
    if bad:
        raise bad_request("invalid-status", f"Only final deliveries can be replayed, not {bad}.")
    return statuses


def check_replayable(delivery: Mapping[str, Any], subscription_exists: bool) -> None:
    """A single delivery may be sent again once it is final and its target still exists."""
    if delivery["status"] == "pending":
        raise conflict("This delivery is still pending; it will be sent.", kind="delivery-pending")
    if not subscription_exists:
        raise conflict("The delivery's subscription no longer exists.", kind="subscription-missing")


# --- matching ----------------------------------------------------------------------------


def stream_of(event_type: str, subject: str) -> str:
    """The ordering key: one aggregate's subject. ``person.*`` and ``access.*`` share the
    person's UUID as subject but have separate sequences, so the type's prefix is part of it."""
    return f"{event_type.split('.', 1)[0]}:{subject}"


def matches(patterns: Iterable[str], event_type: str) -> bool:
    return any(amqp_matches(p, event_type) for p in patterns)


class UnitNotYetKnown(Exception):
    """An event names a unit whose creation this service has not yet seen.

    Events from different services arrive in no fixed order (a unit's
    creation and its first engagement may cross), so a subtree filter cannot
    decide yet: the consumer retries the event, and dead-letters it (visible,
    replayable) if the unit never turns up, rather than drop it.
    """


def in_subtree(units: Iterable[str], root: str, tree: UnitTree) -> bool:
    """True when any of ``units`` is ``root`` or below it (any parent the timeline ever had).

    Undecided while a unit met walking up is not in ``tree`` (and ``root``
    was not met): raises ``UnitNotYetKnown``.
    """
    units = list(units)
    if any(root in tree.ancestors_any_time(u) for u in units):
        return True
    unknown = tree.unknown_above(units)
    if unknown:
        raise UnitNotYetKnown(f"units not yet known: {', '.join(sorted(unknown))}")
    return False


def slice_at(timeline: list[dict[str, Any]], day: date) -> dict[str, Any] | None:
    """The slice in force on ``day`` (raw event data), else the last one."""
    iso = day.isoformat()
    for s in timeline:
        v = s.get("validity") or {}
        if v.get("from", "") <= iso and (v.get("to") is None or iso < v["to"]):
            return s
    return timeline[-1] if timeline else None


# --- signing (Standard Webhooks) -------------------------------------------------------------


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 over "id.timestamp.body">`` as Standard Webhooks defines it."""
    key = decode_secret(secret)
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


# --- retry decisions -------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to: ``ok``, ``retry`` (transient) or ``fail`` (permanent)."""

    kind: Literal["ok", "retry", "fail"]
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None


def classify(status: int, retry_after: str | None = None, now: datetime | None = None) -> Outcome:
    """2xx ok; 408, 429 and 5xx transient; any other status permanent."""
    if 200 <= status < 300:
        return Outcome("ok", status)
    if status in (408, 429) or status >= 500:
        return Outcome("retry", status, f"HTTP {status}", parse_retry_after(retry_after, now))
    return Outcome("fail", status, f"HTTP {status}")


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def backoff(attempts: int, base: float, cap: float, rnd: random.Random | None = None) -> float:
    """Exponential backoff with equal jitter: half fixed, half random, so retries spread out."""
    delay = min(cap, base * 2 ** max(0, attempts - 1))
    return delay / 2 + (rnd or random).uniform(0, delay / 2)


def next_retry(
    attempts: int,
    outcome: Outcome,
    *,
    now: float,
    horizon_end: float,
    base: float,
    cap: float,
) -> float | None:
    """When to try again (epoch seconds), or None when the horizon would be passed."""
    delay = backoff(attempts, base, cap)
    if outcome.retry_after is not None:
        delay = max(delay, outcome.retry_after)
    at = now + delay
    return None if at > horizon_end else at


class CircuitBreaker:
    """Per target: open after N consecutive failures, half-open after the cool-down (one probe)."""

    def __init__(self, threshold: int, cooldown: float) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        self.open_until: float | None = None

    @property
    def state(self) -> Literal["closed", "open", "half-open"]:
        if self.open_until is None:
            return "closed"
        return "half-open" if self._now() >= self.open_until else "open"

    def _now(self) -> float:
        return time.time()

    def wait(self, now: float) -> float:
        """Seconds until the target may be tried again (0 when it may)."""
        return 0.0 if self.open_until is None else max(0.0, self.open_until - now)

    def success(self) -> None:
        self.failures = 0
        self.open_until = None

    def failure(self, now: float) -> bool:
        """Record a failure; True when this opened (or re-opened) the circuit."""
        self.failures += 1
        if self.open_until is not None or self.failures >= self.threshold:
            self.open_until = now + self.cooldown
            return True
        return False

"""The CloudEvents 1.0 envelope, the catalogue of event types, and its exports.

Every event type is registered here with the pydantic model of its ``data``
(the aggregate's full state), so consumers validate what they receive and
vendors get JSON Schema and an AsyncAPI 3 document generated from one source.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class CloudEvent(BaseModel):
    """Structured-mode CloudEvent with Orgdir's extensions."""

    model_config = ConfigDict(extra="forbid")

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(description="UUID; the idempotency key.")
    source: str = Field(description="/orgdir/<service>")
    type: str = Field(description="<aggregate>.<verb>", pattern=r"^[a-z_]+(\.[a-z_]+)+$")
    subject: str = Field(description="The aggregate's UUID.")
    time: datetime
    datacontenttype: Literal["application/json"] = "application/json"
    sequence: int = Field(ge=1, description="The aggregate's version after the change.")
    correlationid: str | None = None
    causationid: str | None = None
    dataversion: str = "1"
    data: dict[str, Any]

    def body(self) -> bytes:
        return self.model_dump_json().encode()


def new_event(
    *,
    service: str,
    type: str,
    subject: str,
    sequence: int,
    data: dict[str, Any],
    time: datetime | None = None,
    correlationid: str | None = None,
    causationid: str | None = None,
) -> CloudEvent:
    spec = CATALOGUE.get(type)
    return CloudEvent(
        id=str(uuid.uuid4()),
        source=f"/orgdir/{service}",
        type=type,
        subject=subject,
        time=time or datetime.now(UTC),
        sequence=sequence,
        correlationid=correlationid,
        causationid=causationid,
        dataversion=spec.dataversion if spec else "1",
        data=data,
    )


@dataclass(frozen=True)
class EventType:
    name: str
    data_model: type[BaseModel]
    description: str
    dataversion: str = "1"

    @property
    def aggregate(self) -> str:
        return self.name.split(".", 1)[0]


CATALOGUE: dict[str, EventType] = {}


def register(type: str, data_model: type[BaseModel], description: str, dataversion: str = "1") -> None:
    CATALOGUE[type] = EventType(type, data_model, description, dataversion)


def register_aggregate(
    aggregate: str,
    data_model: type[BaseModel],
    what: str,
    verbs: tuple[str, ...] = ("created", "updated", "terminated", "effective"),
) -> None:
    """Register ``<aggregate>.<verb>`` for each verb, all carrying the full state."""
    texts = {
        "created": f"A {what} was created.",
        "updated": f"A {what} changed from a date.",
        "terminated": f"A {what} ends from a date.",
        "effective": f"A future-dated change of a {what} became current today.",
        "moved": f"A {what} moved to another parent from a date.",
        "deleted": f"A {what} was deleted.",
    }
    for verb in verbs:
        register(f"{aggregate}.{verb}", data_model, texts.get(verb, f"A {what}: {verb}."))


# -------------------------------------------------------------------- previous dataversions

Downgrade = Callable[[dict[str, Any]], dict[str, Any] | None]

#: type -> (the previous dataversion, data in the new shape -> the old shape, or None where the old
#: shape cannot say it). While registered, every event of the type is emitted in both versions
#: (``side_by_side``): the compatibility promise of docs/consumer-guide.md. Remove one release later.
PREVIOUS: dict[str, tuple[str, Downgrade]] = {}
_VERSION_NS = uuid.UUID("5b1d2c0e-8f3a-4c61-9a7e-0d3f4c2b1a99")


def register_previous(type: str, dataversion: str, downgrade: Downgrade) -> None:
    PREVIOUS[type] = (dataversion, downgrade)


def side_by_side(event: CloudEvent) -> list[CloudEvent]:
    """The event, then the same event in its type's previous dataversion while that is still emitted.

    The copy has the same subject, sequence and type; its id derives from the
    original's, so a republished copy has the id of the first one (idempotent).
    A consumer handles the version it knows and skips the other (``is_current``).
    """
    previous = PREVIOUS.get(event.type)
    if previous is None or not is_current(event):
        return [event]
    data = previous[1](event.data)
    if data is None:
        return [event]
    old_id = str(uuid.uuid5(_VERSION_NS, f"{event.id}:{previous[0]}"))
    return [event, event.model_copy(update={"id": old_id, "dataversion": previous[0], "data": data})]


def is_current(event: CloudEvent) -> bool:
    """Whether the event is in the dataversion this code's catalogue knows (the other copy is skipped)."""
    spec = CATALOGUE.get(event.type)
    return spec is None or event.dataversion == spec.dataversion


class EventRejected(Exception):
    """A message that can never be handled: dead-letter it with this reason."""


def parse(body: bytes) -> CloudEvent:
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EventRejected(f"body is not JSON: {exc}") from exc
    try:
        event = CloudEvent.model_validate(raw)
    except ValidationError as exc:
        raise EventRejected(f"not an Orgdir CloudEvent: {_brief(exc)}") from exc
    if event.type not in CATALOGUE:
        raise EventRejected(f"unknown event type {event.type!r}")
    return event


def typed_data(event: CloudEvent) -> BaseModel:
    """The event's ``data`` validated against the model registered for its type."""
    spec = CATALOGUE.get(event.type)
    if spec is None:
        raise EventRejected(f"unknown event type {event.type!r}")
    try:
        return spec.data_model.model_validate(event.data)
    except ValidationError as exc:
        raise EventRejected(f"data does not match {event.type}: {_brief(exc)}") from exc


def _brief(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()[:5])


def catalogue_json_schema(catalogue: dict[str, EventType] | None = None) -> dict[str, Any]:
    """One JSON Schema document: the envelope plus each type's ``data`` schema (of ``CATALOGUE`` by default)."""
    defs: dict[str, Any] = {}
    types: dict[str, Any] = {}
    for name, spec in sorted((CATALOGUE if catalogue is None else catalogue).items()):
        schema = spec.data_model.model_json_schema(ref_template="#/$defs/{model}", by_alias=True)
        defs.update(schema.pop("$defs", {}))
        defs[spec.data_model.__name__] = schema
        types[name] = {
            "description": spec.description,
            "dataversion": spec.dataversion,
            "data": {"$ref": f"#/$defs/{spec.data_model.__name__}"},
        }
    envelope = CloudEvent.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Orgdir event catalogue",
        "envelope": envelope,
        "eventTypes": types,
        "$defs": defs,
    }


def asyncapi_document(exchange: str = "orgdir.events") -> dict[str, Any]:
    """AsyncAPI 3.0: one channel per routing key on the topic exchange."""
    schema = catalogue_json_schema()
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for name, spec in sorted(CATALOGUE.items()):
        key = name.replace(".", "_")
        messages[key] = {
            "name": name,
            "title": name,
            "summary": spec.description,
            "contentType": "application/cloudevents+json",
            "payload": {
                "allOf": [
                    {"$ref": "#/components/schemas/CloudEvent"},
                    {
                        "type": "object",
                        "properties": {
                            "type": {"const": name},
                            "data": {"$ref": f"#/components/schemas/{spec.data_model.__name__}"},
                        },
                    },
                ]
            },
        }
        channels[key] = {
            "address": name,
            "messages": {key: {"$ref": f"#/components/messages/{key}"}},
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": {"name": exchange, "type": "topic", "durable": True},
                }
            },
        }
        operations[f"receive_{key}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{key}"},
            "summary": spec.description,
        }
    schemas = {"CloudEvent": schema["envelope"], **_rewrite_refs(schema["$defs"])}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Orgdir domain events",
            "version": "1.0.0",
            "description": (
                "Every event carries the aggregate's full state in `data`. Apply an event only "
                "if its `sequence` is newer than what you hold for its `subject`."
            ),
        },
        "defaultContentType": "application/cloudevents+json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: (
                v.replace("#/$defs/", "#/components/schemas/")
                if k == "$ref" and isinstance(v, str)
                else _rewrite_refs(v)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node

"""Events of the platform itself (every service): the end of a refresh for one consumer."""

from __future__ import annotations

from pydantic import BaseModel, Field

from orgdir.events import register


class RefreshCompleted(BaseModel):
    """Sent to the one queue a refresh filled, after every state event of that refresh."""

    refresh_id: str = Field(description="The refresh job (`GET /api/v1/refresh/{id}` on the emitting service).")
    service: str = Field(description="The service whose aggregates were re-sent.")
    count: int = Field(ge=0, description="State events sent to the queue by this refresh.")


register(
    "refresh.completed",
    RefreshCompleted,
    "A refresh for one consumer queue is done: every matching aggregate's current state was sent before it "
    "(to that queue only; subject = refresh_id, sequence 1).",
)

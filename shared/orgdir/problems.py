"""Domain errors: what went wrong, never which HTTP status says so.

Domain code and use cases raise a ``Problem`` subclass; ``orgdir.http`` turns
each class into its RFC 9457 status in one table (``STATUS``), so the mapping
cannot drift between services and domain code stays free of HTTP. ``kind``
is a short, stable slug (``parent-not-active``) that becomes the problem's
``type``; extra keyword arguments become members of the problem document.
"""

from __future__ import annotations

from typing import Any

PROBLEM_BASE = "urn:orgdir:problem:"
PROBLEM_MEDIA_TYPE = "application/problem+json"


class Problem(Exception):
    """Base of every error a client may see; subclasses name the category."""

    default_title = "Request failed"

    def __init__(self, kind: str, title: str | None = None, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or title or kind)
        self.kind = kind
        self.title = title or kind.replace("-", " ").capitalize()
        self.detail = detail
        self.extra = extra

    def body(self, status: int, instance: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"type": PROBLEM_BASE + self.kind, "title": self.title, "status": status}
        if self.detail:
            out["detail"] = self.detail
        if instance:
            out["instance"] = instance
        out.update(self.extra)
        return out


class BadRequest(Problem):
    """A parameter is not well-formed (a date, a cursor, an If-Match, a UUID)."""


class Unauthorized(Problem):
    """No valid credentials."""


class Forbidden(Problem):
    """Valid credentials without the role the operation needs."""


class NotFound(Problem):
    """What the request names does not exist."""


class Conflict(Problem):
    """The current state forbids the change (a duplicate, a decided batch, a concurrent write)."""


class VersionMismatch(Problem):
    """``If-Match`` names another version than the current one."""


class Invalid(Problem):
    """The input is well-formed but breaks a rule of the domain."""


class Unavailable(Problem):
    """A dependency does not answer; retrying later may work."""


class Failed(Problem):
    """An unexpected error: a bug, never the client's fault."""


def rule(kind: str, detail: str, **extra: Any) -> Invalid:
    """A domain rule was violated; the slug names the rule."""
    return Invalid(kind, None, detail, **extra)


def invalid_validity(detail: str, field: str = "validity") -> Invalid:
    """The one error for a period that is not a period (``to`` not after ``from``), in every service."""
    return Invalid("invalid-validity", "Invalid validity", detail, field=field)


def bad_request(kind: str, detail: str, **extra: Any) -> BadRequest:
    return BadRequest(kind, None, detail, **extra)


def not_found(what: str, key: object) -> NotFound:
    return NotFound("not-found", f"{what} not found", f"No {what} with id {key}.")


def missing(kind: str, detail: str, **extra: Any) -> NotFound:
    """Something the request refers to (not the resource itself) does not exist."""
    return NotFound(kind, None, detail, **extra)


def conflict(detail: str, kind: str = "conflict", **extra: Any) -> Conflict:
    return Conflict(kind, "Conflict" if kind == "conflict" else None, detail, **extra)


def precondition_failed(current: int, given: int) -> VersionMismatch:
    return VersionMismatch(
        "version-mismatch",
        "Precondition failed",
        f"If-Match names version {given}, but the current version is {current}.",
        current_version=current,
    )


def unavailable(detail: str) -> Unavailable:
    return Unavailable("service-unavailable", "Service unavailable", detail)

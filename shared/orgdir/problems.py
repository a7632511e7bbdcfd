"""RFC 9457 problem details: the one shape every error takes."""

from __future__ import annotations

from typing import Any

PROBLEM_BASE = "urn:orgdir:problem:"
PROBLEM_MEDIA_TYPE = "application/problem+json"


class Problem(Exception):
    """Raise anywhere in a request; the app turns it into problem JSON.

    ``kind`` is a short, stable slug (``parent-not-active``) that becomes the
    machine-readable ``type``; extra keyword arguments are added as members.
    """

    def __init__(self, status: int, kind: str, title: str, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or title)
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
        self.extra = extra

    def body(self, instance: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"type": PROBLEM_BASE + self.kind, "title": self.title, "status": self.status}
        if self.detail:
            out["detail"] = self.detail
        if instance:
            out["instance"] = instance
        out.update(self.extra)
        return out


def not_found(what: str, key: object) -> Problem:
    return Problem(404, "not-found", f"{what} not found", f"No {what} with id {key}.")


def rule(kind: str, detail: str, status: int = 422, **extra: Any) -> Problem:
    """A domain rule was violated; the slug names the rule."""
    return Problem(status, kind, kind.replace("-", " ").capitalize(), detail, **extra)


def conflict(detail: str, **extra: Any) -> Problem:
    return Problem(409, "conflict", "Conflict", detail, **extra)


def precondition_failed(current: int, given: int) -> Problem:
    return Problem(
        412,
        "version-mismatch",
        "Precondition failed",
        f"If-Match names version {given}, but the current version is {current}.",
        current_version=current,
    )


def unavailable(detail: str) -> Problem:
    return Problem(503, "service-unavailable", "Service unavailable", detail)

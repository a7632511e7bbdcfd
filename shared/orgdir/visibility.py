"""Address visibility: which addresses a reader or a downstream target may see.

Every address (a person's ``ContactAddress``, a unit's ``UnitAddress``) names
a class of the seeded ``visibility`` facet, or none. The classes are ordered
levels, by their user_key:

- ``offentlig`` → ``public``: may leave the municipality (a public phone book,
  a citizen portal);
- ``intern`` → ``internal`` (also an address without a class): every reader
  with ``orgdir:read`` and every downstream target by default;
- ``hemmelig`` → ``secret``: only readers with ``orgdir:read:secret`` and
  targets an admin set to ``secret``.

A class this rule does not know (another user_key, or a UUID the caller has
not projected) counts as secret: unknown is never shown. Events on the broker
carry every address (they are internal); the registry's reads and the
notifier's payloads apply this rule. Written once here, used by both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    from orgdir.contracts.orgunits import ClassState

Level = Literal["public", "internal", "secret"]
LEVELS: tuple[Level, ...] = ("public", "internal", "secret")
#: the visibility facet's class user_keys (orgunits' vocabulary) → level
CLASS_LEVELS: dict[str, Level] = {"offentlig": "public", "intern": "internal", "hemmelig": "secret"}
FACET = "visibility"
DEFAULT: Level = "internal"
READ_SECRET = "orgdir:read:secret"

#: a visibility class UUID → its user_key, or None when the caller does not know the class
UserKeyOf = Callable[[str], str | None]

A = TypeVar("A")


def level(visibility: str | None, user_key_of: UserKeyOf) -> Level:
    """The level of an address whose visibility class is ``visibility`` (None: internal)."""
    if visibility is None:
        return DEFAULT
    return CLASS_LEVELS.get(user_key_of(visibility) or "", "secret")


def allows(ceiling: Level, lvl: Level) -> bool:
    """True when a viewer allowed up to ``ceiling`` may see an address of level ``lvl``."""
    return LEVELS.index(lvl) <= LEVELS.index(ceiling)


def visible(addresses: Iterable[A], ceiling: Level, user_key_of: UserKeyOf) -> list[A]:
    """The addresses (models with ``visibility``, or raw dicts) a viewer allowed up to ``ceiling`` sees."""
    return [a for a in addresses if allows(ceiling, level(_visibility(a), user_key_of))]


def hidden(addresses: Iterable[A], ceiling: Level, user_key_of: UserKeyOf) -> list[A]:
    """The addresses such a viewer does not see (a write keeps them: see the registry)."""
    return [a for a in addresses if not allows(ceiling, level(_visibility(a), user_key_of))]


def ceiling_of(roles: Iterable[str]) -> Level:
    """How far a reader sees: secret with ``orgdir:read:secret``, else internal."""
    return "secret" if READ_SECRET in set(roles) else "internal"


def class_user_key(classes: Mapping[str, ClassState]) -> UserKeyOf:
    """The rule's look-up over a service's classes (a class of another facet is unknown: secret)."""

    def user_key_of(uuid: str) -> str | None:
        cls = classes.get(uuid)
        if cls is None or cls.facet != FACET or not cls.timeline:
            return None
        return cls.timeline[-1].user_key

    return user_key_of


def keep_hidden(new: list[A], old: Iterable[A], ceiling: Level, user_key_of: UserKeyOf) -> list[A]:
    """A write's ``new`` addresses plus the stored ``old`` ones its writer cannot see.

    A writer replaces only what it can see, so one without ``orgdir:read:secret``
    that reads a record and writes it back does not erase a secret address. A
    kept address goes back to its old position, so writing back what was read
    leaves the list as it was (no new version).
    """
    out = list(new)
    for i, a in enumerate(old):
        if a not in new and not allows(ceiling, level(_visibility(a), user_key_of)):
            out.insert(min(i, len(out)), a)
    return out if len(out) != len(new) else new


def strip_timeline(
    timeline: Iterable[Mapping[str, Any]], ceiling: Level, user_key_of: UserKeyOf
) -> list[dict[str, Any]]:
    """Raw slices (event data) with every ``addresses`` list cut to what ``ceiling`` allows."""
    out = []
    for s in timeline:
        s = dict(s)
        if isinstance(s.get("addresses"), list):
            s["addresses"] = visible(s["addresses"], ceiling, user_key_of)
        out.append(s)
    return out


def _visibility(address: Any) -> str | None:
    value = address.get("visibility") if isinstance(address, Mapping) else getattr(address, "visibility", None)
    return str(value) if value is not None else None

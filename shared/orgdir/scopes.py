"""Scoped administration: a role held on a unit and everything below it.

A grant is a role (``orgdir:write``: everywhere) or a role on a unit
(``orgdir:write@<unit uuid or user_key>``: that unit's subtree). Grants come
from the token (roles, or group paths such as ``/orgdir/write/boern-og-unge``)
and from the binding list an administrator keeps in the settings
(``ORGDIR_ROLE_BINDINGS``), so every replica decides alike. Whether a unit
lies inside a scope is decided on the unit tree of the write's day; these are
the pure rules, ``orgdir.auth.check_scope`` applies them to a request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date

from orgdir.tree import UnitTree

SEP = "@"


def split_grants(grants: Iterable[str]) -> tuple[set[str], dict[str, set[str]]]:
    """Grants as (roles held everywhere, role -> the units it is held on)."""
    roles: set[str] = set()
    scoped: dict[str, set[str]] = {}
    for grant in grants:
        role, sep, unit = grant.strip().partition(SEP)
        if not sep:
            roles.add(role)
        elif unit:
            scoped.setdefault(role, set()).add(unit)
    return roles, scoped


def grants_from_groups(groups: Iterable[object], prefix: str) -> set[str]:
    """Group paths under ``prefix``: ``<prefix>write`` is ``orgdir:write``, ``<prefix>write/<unit>`` the scoped one."""
    out: set[str] = set()
    if not prefix:
        return out
    for group in groups:
        if not isinstance(group, str) or not group.startswith(prefix):
            continue
        role, _, unit = group[len(prefix) :].strip("/").partition("/")
        if role:
            out.add(f"orgdir:{role}" + (f"{SEP}{unit}" if unit else ""))
    return out


def resolve(tree: UnitTree, ref: str, day: date) -> str | None:
    """A unit by UUID, or by the user_key it has on ``day`` (else at any time)."""
    if ref in tree:
        return ref
    later: str | None = None
    for unit, timeline in tree.units.items():
        for s in timeline:
            if s.user_key == ref:
                if s.validity.contains(day):
                    return unit
                later = later or unit
    return later


def outside(tree: UnitTree, anchors: Iterable[str], units: Iterable[str], day: date) -> list[str]:
    """The ``units`` that lie in none of the ``anchors``' subtrees on ``day``.

    A unit not in the tree on ``day`` (not created yet, or ended) is inside
    only if it is inside at the start of each of its slices; an unknown unit
    is outside.
    """
    roots = {u for u in (resolve(tree, a, day) for a in anchors) if u is not None}
    out = []
    for unit in units:
        chain = tree.chain_at(unit, day)
        chains = [chain] if chain else [tree.chain_at(unit, s.validity.from_) for s in tree.units.get(unit, [])]
        if not chains or not all(set(c) & roots for c in chains):
            out.append(unit)
    return out


def names(tree: UnitTree, units: Iterable[str], day: date) -> list[str]:
    """Units as people know them, for a problem's message."""
    out = []
    for u in units:
        timeline = tree.units.get(u) or []
        s = tree.at(u, day) or (timeline[-1] if timeline else None)
        out.append(f"{s.name} ({u})" if s is not None else u)
    return out


def expand_scoped(scoped: Mapping[str, set[str]], implies: Mapping[str, set[str]]) -> dict[str, frozenset[str]]:
    """``orgdir:admin@X`` holds ``orgdir:write@X`` and ``orgdir:read@X`` too."""
    out: dict[str, set[str]] = {r: set(u) for r, u in scoped.items()}
    changed = True
    while changed:
        changed = False
        for role, units in list(out.items()):
            for implied in implies.get(role, set()):
                have = out.setdefault(implied, set())
                if not units <= have:
                    have |= units
                    changed = True
    return {r: frozenset(u) for r, u in out.items()}

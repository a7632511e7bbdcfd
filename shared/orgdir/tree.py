"""Walking the unit tree (or any graph of ids), shared by the services' in-memory views."""

from __future__ import annotations

from collections.abc import Callable, Iterable


def reachable(start: str, neighbours: Callable[[str], Iterable[str]]) -> set[str]:
    """``start`` and everything reachable from it; safe against cycles in bad data."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        todo.extend(neighbours(node))
    return seen

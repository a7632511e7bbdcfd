"""The adapter interface: where records come from.

A CSV directory and a JSON document are two sources (``readers``); an SD-Løn
or OPUS delta feed is one more module with a class that has these members and
yields the same records. Nothing downstream knows which source it reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from importer.records import Export, Invalid, Record


@runtime_checkable
class Source(Protocol):
    """Yields every record of an export (or every changed record of a delta), each with its origin."""

    #: shown in the plan and the summary (a path, a feed's name)
    name: str
    #: True for a full snapshot: only then may ``--full-sync`` end what the source does not mention
    complete: bool

    def records(self) -> Iterator[Record | Invalid]:
        """Every record, or an ``Invalid`` for a row that cannot be read (with its origin and why)."""
        ...


def collect(source: Source) -> Export:
    """All of a source's records in one ``Export``."""
    export = Export()
    for item in source.records():
        export.add(item)
    return export

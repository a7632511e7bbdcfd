"""The two file sources: a directory of CSV files (one per kind) and one JSON document.

Both give every record its file and line. CSV: one file per kind, ``<kind>.csv``
(``units.csv``, ``persons.csv`` … ``assignments.csv``; any may be missing),
UTF-8 (a BOM is accepted), header row first. JSON: ``{"units": [{…}, …], …}``;
the line of a record is the line its ``{`` is on.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from importer.adapters import Source
from importer.records import COLUMNS, KINDS, Export, Invalid, Origin, Record, RecordError, parse, to_row


class CsvSource:
    """A directory with one CSV file per kind."""

    complete = True

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.name = str(directory)

    def records(self) -> Iterator[Record | Invalid]:
        for kind in KINDS:
            path = self.directory / f"{kind}.csv"
            if not path.exists():
                continue
            with path.open(encoding="utf-8-sig", newline="") as f:
                reader = csv.DictReader(f)
                unknown = sorted(set(reader.fieldnames or ()) - set(COLUMNS[kind]))
                if unknown:
                    yield Invalid(kind, None, Origin(path.name, 1), f"unknown columns {', '.join(unknown)}")
                    continue
                for row in reader:
                    # the line the row ends on (rows with quoted newlines span several)
                    origin = Origin(path.name, reader.line_num)
                    yield _parsed(kind, row, origin)


class JsonSource:
    """One JSON document: an object with a list of records per kind."""

    complete = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)

    def records(self) -> Iterator[Record | Invalid]:
        text = self.path.read_text(encoding="utf-8-sig")
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            yield Invalid("units", None, Origin(self.path.name, exc.lineno), f"not JSON: {exc.msg}")
            return
        if not isinstance(document, dict):
            yield Invalid("units", None, Origin(self.path.name, 1), "the document must be an object")
            return
        lines = record_lines(text)
        for kind in KINDS:
            rows = document.get(kind) or []
            for i, row in enumerate(rows):
                origin = Origin(self.path.name, lines.get((kind, i), 1))
                if not isinstance(row, dict):
                    yield Invalid(kind, None, origin, "a record must be an object")
                    continue
                yield _parsed(kind, row, origin)


def _parsed(kind: str, row: dict[str, Any], origin: Origin) -> Record | Invalid:
    try:
        return parse(kind, row, origin)
    except RecordError as exc:
        return Invalid(kind, (row.get("key") or None) and str(row.get("key")), origin, str(exc))


def record_lines(text: str) -> dict[tuple[str, int], int]:
    """(kind, index) → line of each record's opening brace, by a scan that skips strings."""
    out: dict[tuple[str, int], int] = {}
    depth, line, i, n = 0, 1, 0, len(text)
    member: str | None = None  # the top-level member whose array we are in
    index = -1
    last_string = ""
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            last_string = text[i + 1 : j]
            i = j
        elif c in "{[":
            if depth == 1 and c == "[":
                member, index = last_string, -1
            elif depth == 2 and c == "{" and member is not None:
                index += 1
                out[(member, index)] = line
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 1:
                member = None
        i += 1
    return out


def _typed(row: dict[str, str]) -> dict[str, Any]:
    """A CSV row as JSON values: empty → null, booleans, numbers, lists."""
    out: dict[str, Any] = {c: (v or None) for c, v in row.items()}
    for flag in ("primary", "sensitive", "inherit"):
        if flag in out:
            out[flag] = out[flag] == "true"
    if out.get("fraction"):
        out["fraction"] = float(out["fraction"])
    if out.get("grace_days"):
        out["grace_days"] = int(out["grace_days"])
    for listed in ("responsibilities", "roles"):  # ``;``-separated in CSV, a list in JSON
        if listed in out:
            out[listed] = [r for r in (out[listed] or "").split(";") if r]
    return out


def open_source(path: Path) -> Source:
    """A CSV directory or a ``.json`` file."""
    if path.is_dir():
        return CsvSource(path)
    if path.suffix == ".json":
        return JsonSource(path)
    raise ValueError(f"{path}: expected a directory of CSV files or a .json file")


def write_csv(export: Export, directory: Path) -> None:
    """Write an export as one CSV file per kind (UTF-8, header row)."""
    directory.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        with (directory / f"{kind}.csv").open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS[kind], lineterminator="\n")
            writer.writeheader()
            for record in export.of(kind):
                writer.writerow(to_row(record))


def write_json(export: Export, path: Path) -> None:
    """Write an export as one JSON document, one record per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        f.write("{\n")
        for k, kind in enumerate(KINDS):
            f.write(f'  "{kind}": [\n')
            rows = export.of(kind)
            for i, record in enumerate(rows):
                row = _typed(to_row(record))
                f.write("    " + json.dumps(row, ensure_ascii=False) + ("," if i < len(rows) - 1 else "") + "\n")
            f.write("  ]" + ("," if k < len(KINDS) - 1 else "") + "\n")
        f.write("}\n")

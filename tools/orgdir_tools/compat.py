"""The compatibility promise of the event catalogue, checked against a committed snapshot.

Rule (docs/consumer-guide.md): within one ``dataversion`` of an event type,
changes to its ``data`` are additive only. Every value a consumer may receive
must be one the snapshot already promised: a field present in the snapshot
stays (and stays always present if it was required), keeps its JSON types
and format, and admits no new enum values; new fields may be added anywhere.
Anything else bumps ``dataversion`` (and the old version is emitted side by
side for one release). Removing an event type is breaking too.

``python -m orgdir_tools.compat`` compares the catalogue with the snapshot
(exit 1 on a breaking change); ``--write`` updates the snapshot, and refuses
while a change is breaking (``make catalogue-snapshot``).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SNAPSHOT = Path(__file__).resolve().parents[2] / "docs" / "contracts" / "catalogue.snapshot.json"

Schema = dict[str, Any]


@dataclass(frozen=True)
class Breaking:
    event_type: str
    path: str  # where in ``data``: ``timeline[].surname``
    problem: str

    def __str__(self) -> str:
        return f"{self.event_type}: data.{self.path or '<root>'}: {self.problem}"


def current_catalogue() -> Schema:
    import orgdir.contracts  # noqa: F401  (registers every event type)
    from orgdir.events import catalogue_json_schema

    doc: Schema = json.loads(json.dumps(catalogue_json_schema(), default=str))
    return doc


def _resolve(schema: Schema, defs: Schema) -> Schema:
    seen = 0
    while "$ref" in schema and seen < 50:
        schema = {**defs[schema["$ref"].rsplit("/", 1)[-1]], **{k: v for k, v in schema.items() if k != "$ref"}}
        seen += 1
    return schema


def _alternatives(schema: Schema, defs: Schema) -> list[Schema]:
    """The schema as a list of single-type alternatives (``anyOf``/``oneOf`` and type lists split)."""
    schema = _resolve(schema, defs)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return [alt for sub in schema[key] for alt in _alternatives(sub, defs)]
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return _alternatives({**schema["allOf"][0], **{k: v for k, v in schema.items() if k != "allOf"}}, defs)
    types = schema.get("type")
    if isinstance(types, list):
        return [{**schema, "type": t} for t in types]
    if types is None and "const" in schema:
        return [{**schema, "type": _json_type(schema["const"])}]
    if types is None and "enum" in schema:
        return [{**schema, "type": t, "enum": [v for v in schema["enum"] if _json_type(v) == t]}
                for t in dict.fromkeys(_json_type(v) for v in schema["enum"])]
    return [schema]


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _kind(alt: Schema) -> str:
    t = alt.get("type", "any")
    return f"{t}:{alt['format']}" if t == "string" and "format" in alt else str(t)


def _values(alt: Schema) -> list[Any] | None:
    if "const" in alt:
        return [alt["const"]]
    return list(alt["enum"]) if "enum" in alt else None


def _compare(old: Schema, new: Schema, old_defs: Schema, new_defs: Schema, path: str, out: list[str]) -> None:
    old_alts = {_kind(a): a for a in _alternatives(old, old_defs)}
    for new_alt in _alternatives(new, new_defs):
        kind = _kind(new_alt)
        if "any" in old_alts:
            continue
        old_alt = old_alts.get(kind)
        if old_alt is None:
            out.append(f"{path or '<root>'}: retyped: may now be {kind} (was {' | '.join(sorted(old_alts))})")
            continue
        old_values, new_values = _values(old_alt), _values(new_alt)
        if old_values is not None:
            extra = [v for v in (new_values if new_values is not None else ["<any>"]) if v not in old_values]
            if extra:
                out.append(f"{path or '<root>'}: new values {extra} (was {old_values})")
        if kind == "array":
            _compare(old_alt.get("items", {}), new_alt.get("items", {}), old_defs, new_defs, f"{path}[]", out)
        elif kind == "object":
            old_props, new_props = old_alt.get("properties", {}), new_alt.get("properties", {})
            old_required, new_required = set(old_alt.get("required", [])), set(new_alt.get("required", []))
            for name, sub in old_props.items():
                where = f"{path}.{name}" if path else name
                if name not in new_props:
                    out.append(f"{where}: removed")
                    continue
                if name in old_required and name not in new_required:
                    out.append(f"{where}: no longer always present")
                _compare(sub, new_props[name], old_defs, new_defs, where, out)


def breaking_changes(old: Schema, new: Schema) -> list[Breaking]:
    """What ``new`` breaks of ``old`` (catalogue JSON Schema documents); empty when compatible."""
    found: list[Breaking] = []
    old_types, new_types = old.get("eventTypes", {}), new.get("eventTypes", {})
    for name, spec in sorted(old_types.items()):
        if name not in new_types:
            found.append(Breaking(name, "", "event type removed"))
            continue
        if str(new_types[name].get("dataversion")) != str(spec.get("dataversion")):
            continue  # a new version of data: any change is allowed (emit the old one beside it for a release)
        problems: list[str] = []
        _compare(spec["data"], new_types[name]["data"], old.get("$defs", {}), new.get("$defs", {}), "", problems)
        for p in problems:
            where, _, what = p.partition(": ")
            found.append(Breaking(name, "" if where == "<root>" else where, what))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orgdir-compat", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--snapshot", type=Path, default=SNAPSHOT)
    parser.add_argument("--write", action="store_true", help="update the snapshot (refused on a breaking change)")
    args = parser.parse_args(argv)
    current = current_catalogue()
    problems = breaking_changes(json.loads(args.snapshot.read_text()), current) if args.snapshot.exists() else []
    for p in problems:
        print(f"breaking: {p}", file=sys.stderr)
    if problems:
        print("Bump the event type's dataversion (register(..., dataversion=\"2\")) or make the change additive; "
              "see docs/consumer-guide.md.", file=sys.stderr)
        return 1
    if args.write:
        args.snapshot.parent.mkdir(parents=True, exist_ok=True)
        args.snapshot.write_text(json.dumps(current, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        print(f"wrote {args.snapshot} ({len(current['eventTypes'])} event types)")
    else:
        print(f"compatible with {args.snapshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

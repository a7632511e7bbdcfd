"""``make docs``: the vendor site, static HTML built offline from the code.

- ``events.html``: every event type of the catalogue: when it is emitted,
  which service emits it, its routing key, its ``dataversion``, the fields of
  its ``data`` and an example payload (the whole CloudEvent);
- ``openapi/<service>.html`` (+ ``.json``): each service's OpenAPI document,
  its operations with parameters, bodies and statuses;
- ``consumer-guide.html`` from ``docs/consumer-guide.md``;
- beside them ``events.schema.json`` and ``asyncapi.json``.

A small renderer rather than the AsyncAPI/Redoc generators: those are npm
packages (``@asyncapi/cli`` with its html template, ``@redocly/cli``) that
``make install`` would have to fetch and pin with a Node toolchain, while the
catalogue and the OpenAPI documents are generated here anyway. Anything the
site cannot say (an event type without a description or an emitting service,
a broken link) is a warning, and a warning fails the build.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "consumer-guide.md"
EXCHANGE = "orgdir.events"
SERVICE_OF_MODULE = {
    "orgdir.contracts.orgunits": "orgunits",
    "orgdir.contracts.registry": "registry",
    "orgdir.contracts.access": "access-rights",
    "orgdir.contracts.operations": "every service",
}
APPS = [
    ("orgunits", "orgunits"), ("registry", "registry"), ("access-rights", "access_rights"), ("notifier", "notifier")
]
CSS = """body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;line-height:1.45}
code,pre{font-family:ui-monospace,monospace;font-size:.9em}pre{background:#f5f5f5;padding:.8rem;overflow:auto}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;
vertical-align:top}section{border-top:1px solid #ccc;margin-top:1.5rem}nav a{margin-right:1rem}
.method{font-weight:bold;text-transform:uppercase}"""

Schema = dict[str, Any]
e = html.escape


def page(title: str, body: str, depth: int = 0) -> str:
    up = "../" * depth
    nav = (f'<nav><a href="{up}index.html">Orgdir for vendors</a><a href="{up}events.html">Events</a>'
           + "".join(f'<a href="{up}openapi/{s}.html">{s} API</a>' for s, _ in APPS)
           + f'<a href="{up}consumer-guide.html">Write a consumer</a></nav>')
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
            f"<style>{CSS}</style></head><body>{nav}<h1>{e(title)}</h1>{body}</body></html>\n")


def _resolve(schema: Schema, defs: Schema) -> Schema:
    while "$ref" in schema:
        schema = {**defs[schema["$ref"].rsplit("/", 1)[-1]], **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _branches(schema: Schema, defs: Schema) -> list[Schema]:
    schema = _resolve(schema, defs)
    alts = schema.get("anyOf") or schema.get("oneOf")
    return [_resolve(a, defs) for a in alts] if alts else [schema]


def type_label(schema: Schema, defs: Schema) -> str:
    labels = []
    for s in _branches(schema, defs):
        if "const" in s:
            labels.append(json.dumps(s["const"]))
        elif "enum" in s:
            labels.append(" | ".join(json.dumps(v) for v in s["enum"]))
        elif s.get("type") == "array":
            labels.append(f"array of {type_label(s.get('items', {}), defs)}")
        elif s.get("type") == "object" or "properties" in s:
            labels.append(str(s.get("title", "object")))
        else:
            labels.append(f"{s.get('type', 'any')}{' (' + s['format'] + ')' if 'format' in s else ''}")
    return " | ".join(labels)


def field_rows(schema: Schema, defs: Schema, prefix: str = "", depth: int = 0) -> list[tuple[str, str, bool, str]]:
    """(path, type, required, description) for every field, nested objects and arrays of objects included."""
    rows: list[tuple[str, str, bool, str]] = []
    for s in _branches(schema, defs):
        if s.get("type") == "array":
            s = _resolve(s.get("items", {}), defs)
            prefix = f"{prefix}[]" if prefix else prefix
        props = s.get("properties", {})
        required = set(s.get("required", []))
        for name, sub in props.items():
            path = f"{prefix}.{name}" if prefix else name
            resolved = _resolve(sub, defs)
            rows.append((path, type_label(sub, defs), name in required, str(resolved.get("description", ""))))
            if depth < 6:
                rows += field_rows(sub, defs, path, depth + 1)
    return rows


SAMPLE_UUID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"


def example(schema: Schema, defs: Schema, name: str = "") -> Any:
    s = _resolve(schema, defs)
    if s.get("examples"):
        return s["examples"][0]
    if "default" in s and s["default"] not in (None, [], {}):
        return s["default"]
    if "const" in s:
        return s["const"]
    if "enum" in s:
        return s["enum"][0]
    branches = [b for b in _branches(s, defs) if b.get("type") != "null"]
    if len(branches) > 1 or (branches and branches[0] is not s):
        return example(branches[0], defs, name) if branches else None
    kind = s.get("type")
    if kind == "object" or "properties" in s:
        return {k: example(v, defs, k) for k, v in s.get("properties", {}).items()}
    if kind == "array":
        return [example(s.get("items", {}), defs, name)]
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return False
    if kind == "string":
        fmt = s.get("format")
        if fmt == "date":
            return "2025-01-01"
        if fmt == "date-time":
            return "2025-01-01T08:00:00Z"
        if name in ("uuid", "person", "unit", "role", "it_system", "parent", "engagement", "assignment", "subject",
                    "job_function", "engagement_type", "unit_type", "unit_level", "address_type", "refresh_id"):
            return SAMPLE_UUID
        return name or "text"
    return None


def events_page(warnings: list[str]) -> str:
    import orgdir.contracts  # noqa: F401
    from orgdir.events import CATALOGUE, catalogue_json_schema

    doc = catalogue_json_schema()
    defs = doc["$defs"]
    toc, sections = [], []
    for name, spec in sorted(CATALOGUE.items()):
        service = SERVICE_OF_MODULE.get(spec.data_model.__module__)
        if service is None:
            warnings.append(f"{name}: no emitting service known for {spec.data_model.__module__}")
            service = "?"
        if not spec.description:
            warnings.append(f"{name}: no description (when is it emitted?)")
        data_schema = doc["eventTypes"][name]["data"]
        data = example(data_schema, defs)
        envelope = {
            "specversion": "1.0", "id": "b6f2c1d0-8c1e-4c7a-9d55-2f1c0e7f4a10",
            "source": f"/orgdir/{service if service != 'every service' else 'registry'}", "type": name,
            "subject": SAMPLE_UUID, "time": "2025-01-01T08:00:00Z", "datacontenttype": "application/json",
            "sequence": data.get("version", 1) if isinstance(data, dict) else 1,
            "correlationid": None, "causationid": None, "dataversion": spec.dataversion, "data": data,
        }
        routing = (f"<code>{e(name)}</code> on the topic exchange <code>{EXCHANGE}</code>"
                   if name != "refresh.completed"
                   else "none: sent straight to the refreshed queue (default exchange, routing key = queue name)")
        rows = "".join(
            f"<tr><td><code>{e(p)}</code></td><td>{e(t)}</td><td>{'yes' if r else ''}</td><td>{e(d)}</td></tr>"
            for p, t, r, d in field_rows(data_schema, defs)
        )
        anchor = name.replace(".", "-")
        toc.append(f'<li><a href="#{anchor}">{e(name)}</a> — {e(spec.description)}</li>')
        sections.append(
            f'<section id="{anchor}"><h2>{e(name)}</h2><p>{e(spec.description)}</p>'
            f"<table><tr><th>emitted by</th><td>{e(service)}</td></tr><tr><th>routing key</th><td>{routing}</td></tr>"
            f"<tr><th>dataversion</th><td>{e(spec.dataversion)}</td></tr>"
            f"<tr><th>data model</th><td><code>{e(spec.data_model.__name__)}</code></td></tr></table>"
            f"<h3>data</h3><table><tr><th>field</th><th>type</th><th>required</th><th>description</th></tr>{rows}"
            f"</table><h3>Example</h3><pre>{e(json.dumps(envelope, indent=2, ensure_ascii=False))}</pre></section>"
        )
    intro = (
        "<p>Every event is a CloudEvent (structured JSON) whose <code>data</code> is the aggregate's full state. "
        "Apply an event only if its <code>sequence</code> is newer than what you hold for its <code>subject</code> "
        "and aggregate (the part of <code>type</code> before the dot). Machine-readable: "
        '<a href="events.schema.json">JSON Schema</a>, <a href="asyncapi.json">AsyncAPI 3</a>. '
        'The compatibility rule is in the <a href="consumer-guide.html">consumer guide</a>.</p>'
    )
    return page("Event catalogue", intro + f"<ul>{''.join(toc)}</ul>" + "".join(sections))


def openapi_document(package: str, service: str) -> Schema:
    import importlib

    from orgdir.settings import Settings

    module = importlib.import_module(f"{package}.app")
    settings_cls: type[Settings] = _settings_class(module)
    settings = settings_cls.model_validate({
        "service_name": service, "auth_mode": "static", "allow_static_tokens": True, "declare_topology": False,
    })
    app = module.create_app(settings)
    doc: Schema = app.openapi()
    return doc


def _settings_class(module: Any) -> Any:
    """The service's own settings class, as its ``app`` module imports it."""
    from orgdir.settings import Settings

    candidates = [
        v for v in vars(module).values() if isinstance(v, type) and issubclass(v, Settings) and v is not Settings
    ]
    return candidates[0] if candidates else Settings


def openapi_page(service: str, doc: Schema, warnings: list[str]) -> str:
    schemas = doc.get("components", {}).get("schemas", {})
    ops = []
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            params = "".join(
                f"<tr><td><code>{e(p['name'])}</code></td><td>{e(p['in'])}</td>"
                f"<td>{'yes' if p.get('required') else ''}</td><td>{e(type_label(p.get('schema', {}), schemas))}</td>"
                f"<td>{e(p.get('description', ''))}</td></tr>"
                for p in op.get("parameters", [])
            )
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            responses = sorted(op.get("responses", {}).items())
            statuses = ", ".join(f"{s} {e(r.get('description', ''))}" for s, r in responses)
            security = "bearer token" if op.get("security") else "open"
            if not op.get("summary"):
                warnings.append(f"{service} {method.upper()} {path}: no summary")
            ops.append(
                f'<section><h3><span class="method">{method}</span> <code>{e(path)}</code></h3>'
                f"<p>{e(op.get('summary', ''))}</p><p>{e(op.get('description', ''))}</p><p>Auth: {security}</p>"
                + (f"<table><tr><th>parameter</th><th>in</th><th>required</th><th>type</th><th>description</th></tr>"
                   f"{params}</table>" if params else "")
                + (f"<p>Body: <code>{e(type_label(body, schemas))}</code></p>" if body else "")
                + f"<p>Responses: {statuses}</p></section>"
            )
    intro = (f'<p>{e(doc.get("info", {}).get("title", service))} {e(doc.get("info", {}).get("version", ""))}: '
             f'the <a href="{service}.json">OpenAPI document</a>; conventions in docs/api-conventions.md.</p>')
    return page(f"{service} API", intro + "".join(ops), depth=1)


def guide_page() -> str:
    from markdown_it import MarkdownIt

    return page("Write a consumer", MarkdownIt("commonmark", {"html": False}).enable("table").render(GUIDE.read_text()))


def index_page() -> str:
    return page("Orgdir for vendors", (
        "<p>What a consumer of Orgdir's events needs: the <a href=\"events.html\">event catalogue</a>, "
        "the four services' APIs, and <a href=\"consumer-guide.html\">how to write a consumer</a> "
        "(<code>orgdir new-consumer NAME</code> renders a working one).</p><ul>"
        + "".join(f'<li><a href="openapi/{s}.html">{s}</a></li>' for s, _ in APPS) + "</ul>"
    ))


def check_links(out: Path, warnings: list[str]) -> None:
    for page_path in out.rglob("*.html"):
        for target in re.findall(r'href="([^"#:]+)', page_path.read_text()):
            if not (page_path.parent / target).exists():
                warnings.append(f"{page_path.relative_to(out)}: broken link {target}")


def build(out: Path, log: Callable[[str], None] = print) -> list[str]:
    """Write the site into ``out``; the warnings (empty: a clean build)."""
    from orgdir.events import asyncapi_document, catalogue_json_schema

    warnings: list[str] = []
    (out / "openapi").mkdir(parents=True, exist_ok=True)
    (out / "events.schema.json").write_text(json.dumps(catalogue_json_schema(), indent=2, default=str))
    (out / "asyncapi.json").write_text(json.dumps(asyncapi_document(), indent=2, default=str))
    (out / "events.html").write_text(events_page(warnings))
    for service, package in APPS:
        doc = openapi_document(package, service)
        (out / "openapi" / f"{service}.json").write_text(json.dumps(doc, indent=2))
        (out / "openapi" / f"{service}.html").write_text(openapi_page(service, doc, warnings))
    (out / "consumer-guide.html").write_text(guide_page())
    (out / "index.html").write_text(index_page())
    check_links(out, warnings)
    log(f"wrote the vendor site to {out / 'index.html'}")
    return warnings

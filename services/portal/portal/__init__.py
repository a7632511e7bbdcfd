"""Orgdir portal: server-rendered pages (FastAPI + Jinja2 + htmx) over the four public APIs."""

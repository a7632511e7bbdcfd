"""Orgdir HR import: read an export (CSV or JSON, or an adapter's feed), plan against the services, apply.

Talks to the services' public HTTP APIs only. See docs/import-format.md.
"""

"""The demo municipality (Kolding Kommune), loaded through the four services' HTTP APIs.

One module per service. ``LOADERS`` runs them in dependency order: orgunits
first (its units and classes reach the registry and access-rights as events;
their loaders wait for them), then the registry, access-rights and the
notifier. Every loader PUTs under fixed UUIDs, so loading twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx

from orgdir_tools.demo import access_rights, notifier, orgunits, registry

Loader = Callable[[httpx.AsyncClient], Awaitable[None]]

#: (service name, loader), in the order the stack loads them
LOADERS: list[tuple[str, Loader]] = [
    ("orgunits", orgunits.load),
    ("registry", registry.load),
    ("access-rights", access_rights.load),
    ("notifier", notifier.load),
]

"""The public event contracts: the ``data`` of every event type, by owning service.

Importing this package registers the whole catalogue (``orgdir.events.CATALOGUE``).
"""

from orgdir.contracts import access, operations, orgunits, registry

__all__ = ["access", "operations", "orgunits", "registry"]

"""The queue table every service declares is derived from the services' own consumer declarations."""

from __future__ import annotations

from orgdir import queues
from orgdir_tools import topology


def test_generated_queue_table_matches_the_services_declarations() -> None:
    assert topology.TARGET.read_text() == topology.render(), "run `make topology`"


def test_every_declared_queue_belongs_to_its_service_and_has_handlers() -> None:
    routes = topology.declared()
    assert {r.full_name for r in routes} == set(queues.CONSUMER_QUEUES)
    for r in routes:
        assert r.patterns, r.full_name
        assert r.full_name.startswith(f"{r.service}.")
        # a service's package name is its service name with underscores
        assert any(fn.__module__.startswith(r.service.replace("-", "_")) for _, fn in r.routes), r.full_name

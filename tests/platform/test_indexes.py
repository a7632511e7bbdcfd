"""Every service creates exactly the indexes it declares, and creating them again changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from access_rights.app import create_app as access_app
from access_rights.settings import AccessRightsSettings
from notifier.app import create_app as notifier_app
from notifier.settings import NotifierSettings
from orgdir import store
from orgdir_tools.testkit import RunningApp, settings_for
from orgunits.app import create_app as orgunits_app
from orgunits.settings import OrgunitsSettings
from registry.app import create_app as registry_app
from registry.settings import RegistrySettings

APPS: list[tuple[str, Any, Any]] = [
    ("orgunits", orgunits_app, OrgunitsSettings),
    ("registry", registry_app, RegistrySettings),
    ("access-rights", access_app, AccessRightsSettings),
    ("notifier", notifier_app, NotifierSettings),
]


@pytest.mark.parametrize(("service", "factory", "settings_cls"), APPS, ids=[a[0] for a in APPS])
async def test_indexes_match_the_declaration(
    service: str, factory: Any, settings_cls: Any, ns: str, amqp_url: str, mongodb_url: str
) -> None:
    settings = settings_for(settings_cls, ns=ns, service=service, amqp_url=amqp_url, mongodb_url=mongodb_url)
    async with RunningApp(factory(settings)) as app:
        runtime = app.runtime
        declared = {(ix.collection, ix.name): (list(ix.keys), ix.unique) for ix in runtime.indexes}
        assert declared, f"{service} declares no index"
        await store.ensure_indexes(runtime.db, runtime.indexes)  # a second replica's start: idempotent
        found: dict[tuple[str, str], tuple[list[tuple[str, int]], bool]] = {}
        for collection in await runtime.db.list_collection_names():
            for name, info in (await runtime.db[collection].index_information()).items():
                if name == "_id_":
                    continue
                keys = [(k, int(d)) for k, d in info["key"]]
                found[(collection, name)] = (keys, bool(info.get("unique", False)))
        assert found == declared

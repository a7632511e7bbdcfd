"""Where the services are and how to sign in, from the environment (``ORGDIR_IMPORT_*``).

The defaults are the local stack's (``make up``): orgunits on 8101, the
registry on 8102, access-rights on 8103, the static ``dev-admin`` token. Production sets a real
token (a service account with ``orgdir:write``, and ``orgdir:read:cpr`` to
compare CPR numbers exactly).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _env(name: str, default: str) -> str:
    return os.environ.get(f"ORGDIR_IMPORT_{name}", default)


@dataclass(frozen=True)
class ImportSettings:
    orgunits_url: str = field(default_factory=lambda: _env("ORGUNITS_URL", "http://127.0.0.1:8101"))
    registry_url: str = field(default_factory=lambda: _env("REGISTRY_URL", "http://127.0.0.1:8102"))
    access_rights_url: str = field(default_factory=lambda: _env("ACCESS_RIGHTS_URL", "http://127.0.0.1:8103"))
    token: str = field(default_factory=lambda: _env("TOKEN", "dev-admin"))
    #: requests in flight at once per service, each of up to ``batch`` PUTs where the service takes batches
    #: (services scale by replicas; this bounds the load one import puts on them)
    concurrency: int = field(default_factory=lambda: int(_env("CONCURRENCY", "16")))
    #: PUTs per request to a service with a batch endpoint (the registry); 1 sends each on its own
    batch: int = field(default_factory=lambda: int(_env("BATCH", "50")))
    timeout_seconds: float = field(default_factory=lambda: float(_env("TIMEOUT_SECONDS", "60")))
    #: attempts after the first when a service does not answer or answers 409/429/502-504 (backoff up to 5 s)
    retries: int = field(default_factory=lambda: int(_env("RETRIES", "6")))
    #: how long to wait for the registry to learn new units (orgunits events) before writing engagements
    projection_wait_seconds: float = field(default_factory=lambda: float(_env("PROJECTION_WAIT_SECONDS", "120")))

    def url(self, service: str) -> str:
        return {"orgunits": self.orgunits_url, "registry": self.registry_url,
                "access-rights": self.access_rights_url}[service]

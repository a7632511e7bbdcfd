"""Settings of the registry service (env prefix ``ORGDIR_``)."""

from __future__ import annotations

from pydantic import Field

from orgdir.settings import Settings


class RegistrySettings(Settings):
    service_name: str = "registry"
    cpr_hash_key: str = Field(
        "orgdir-dev-cpr-key",
        description="HMAC key for cpr_hash in events; set a secret per deployment.",
    )

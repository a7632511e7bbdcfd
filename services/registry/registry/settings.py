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
    directory_refresh_seconds: float = Field(
        300.0,
        gt=0,
        description="Reload the unit/class projection into memory (other replicas' consumers).",
    )
    search_reindex_seconds: float = Field(3600.0, gt=0, description="Rebuild the address book index (today moves on).")

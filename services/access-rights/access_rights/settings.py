"""Settings of the access-rights service (env prefix ``ORGDIR_``)."""

from __future__ import annotations

from pydantic import Field

from orgdir.settings import Settings


class AccessRightsSettings(Settings):
    service_name: str = "access-rights"
    mass_revoke_threshold: int = Field(
        500, ge=0, description="One change revoking rights from more people than this is held."
    )
    recompute_concurrency: int = Field(16, ge=1, description="Persons written in parallel.")

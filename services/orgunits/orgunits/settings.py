"""Settings of the orgunits service (env prefix ``ORGDIR_``)."""

from __future__ import annotations

from pydantic import Field

from orgdir.settings import Settings


class OrgunitsSettings(Settings):
    service_name: str = "orgunits"
    seed_vocabulary: bool = Field(
        True, description="Create the default facets and classes on start."
    )
    cache_refresh_seconds: float = Field(
        15.0,
        gt=0,
        description=(
            "How often the in-memory copy of units and vocabulary picks up writes made by other "
            "replicas (this process's own writes are applied at once)."
        ),
    )
    tree_cache_days: int = Field(16, ge=1, description="Dates whose tree views are kept in memory.")

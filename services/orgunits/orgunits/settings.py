"""Settings of the orgunits service (env prefix ``ORGDIR_``)."""

from __future__ import annotations

from pydantic import Field

from orgdir.settings import Settings


class OrgunitsSettings(Settings):
    service_name: str = "orgunits"
    seed_vocabulary: bool = Field(
        True, description="Create the default facets and classes on start."
    )
    kle_csv: str | None = Field(
        None,
        description="A `number,title` CSV of KLE numbers to seed (e.g. KL's whole emneplan); default: the "
        "extract shipped in orgunits/data/kle.csv.",
    )
    tree_cache_days: int = Field(16, ge=1, description="Dates whose tree views are kept in memory.")

"""Settings of the registry service (env prefix ``ORGDIR_``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from orgdir.settings import Settings

DEV_CPR_HASH_KEY = "orgdir-dev-cpr-key"


class RegistrySettings(Settings):
    seals_data: ClassVar[bool] = True  # CPR numbers
    service_name: str = "registry"
    cpr_hash_key: str = Field(
        DEV_CPR_HASH_KEY,
        description="HMAC key of cpr_hash (events, uniqueness); a secret per deployment, required outside static mode.",
    )

    def startup_problems(self) -> list[str]:
        out = super().startup_problems()
        if not self.static_mode and self.cpr_hash_key == DEV_CPR_HASH_KEY:
            # With the public key, a birth date and ~10^4 guesses recover a CPR number from an event's cpr_hash.
            out.append("ORGDIR_CPR_HASH_KEY must be set to a secret (at least 32 characters) outside static mode.")
        elif not self.static_mode and len(self.cpr_hash_key) < 32:
            out.append("ORGDIR_CPR_HASH_KEY must be at least 32 characters.")
        return out

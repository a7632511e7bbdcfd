"""Portal settings (``ORGDIR_`` prefix, like the services): where the four APIs are, and sign-in."""

from __future__ import annotations

from pydantic import Field

from orgdir.settings import Settings, StaticToken

DEV_SESSION_SECRET = "orgdir-dev-session-secret-not-for-production"


class PortalSettings(Settings):
    """The portal holds the session and calls the APIs with the user's bearer token (backend-for-frontend).

    ``auth_mode``, the static tokens, ``oidc_issuer`` and ``oidc_client_id`` come from the shared
    settings: the portal offers the same tokens the services accept and reads their roles to hide what
    a user may not do. The services still decide; the portal only spares the user a 403.
    """

    service_name: str = "portal"
    orgunits_url: str = Field("http://127.0.0.1:8101", description="Base URL of the orgunits API.")
    registry_url: str = Field("http://127.0.0.1:8102", description="Base URL of the registry API.")
    access_rights_url: str = Field("http://127.0.0.1:8103", description="Base URL of the access-rights API.")
    notifier_url: str = Field("http://127.0.0.1:8104", description="Base URL of the notifier API.")
    api_timeout_seconds: float = Field(10.0, gt=0, description="One API call, connect to last byte.")
    session_secret: str = Field(
        DEV_SESSION_SECRET,
        description="Seals the session cookie (AES-GCM key derived from it); the same on every replica. "
        "Required (not the default) in oidc mode.",
    )
    session_max_age_seconds: int = Field(8 * 3600, ge=60, description="A sign-in lasts this long.")
    session_https_only: bool = Field(False, description="Mark the session cookie Secure (behind TLS).")
    default_language: str = Field("da", pattern="^(da|en)$", description="Language without ?lang= or a cookie.")
    # OIDC authorization code with PKCE (portal/oidc.py; see services/portal/README.md).
    oidc_login_client_id: str = Field(
        "orgdir-portal", description="The portal's own client at the issuer (sign-in); not the services' role client."
    )
    oidc_client_secret: str = Field("", description="Portal's client secret, if the client is confidential.")
    oidc_redirect_url: str = Field(
        "", description="Callback URL registered with the issuer, e.g. https://…/callback (empty: from the request)."
    )
    oidc_scopes: str = Field("openid profile email", description="Scopes asked for at sign-in.")

    def startup_problems(self) -> list[str]:
        """The portal stores nothing, so it needs no encryption keys; it needs a way to sign users in."""
        out: list[str] = []
        if self.auth_mode is None:
            out.append(
                "No authentication configured: ORGDIR_AUTH_MODE=oidc (with ORGDIR_OIDC_ISSUER, "
                "ORGDIR_OIDC_CLIENT_ID and ORGDIR_SESSION_SECRET), or on a laptop only "
                "ORGDIR_AUTH_MODE=static with ORGDIR_ALLOW_STATIC_TOKENS=true."
            )
        elif self.auth_mode == "static" and not self.allow_static_tokens:
            out.append("ORGDIR_AUTH_MODE=static is refused unless ORGDIR_ALLOW_STATIC_TOKENS=true.")
        elif self.auth_mode == "oidc":
            if self.session_secret == DEV_SESSION_SECRET or len(self.session_secret) < 32:
                out.append("ORGDIR_SESSION_SECRET must be set: 32 random characters or more, the same everywhere.")
            if not (self.oidc_issuer and self.oidc_login_client_id):
                out.append("ORGDIR_AUTH_MODE=oidc needs ORGDIR_OIDC_ISSUER and ORGDIR_OIDC_LOGIN_CLIENT_ID.")
        return out

    def dev_tokens(self) -> list[tuple[str, StaticToken]]:
        """The tokens offered on the local sign-in page (name, token), least powerful first."""
        return sorted(self.tokens().items(), key=lambda item: (len(item[1].roles), item[0]))

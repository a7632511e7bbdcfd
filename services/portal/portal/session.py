"""The session in a cookie that is encrypted and authenticated (AES-256-GCM), not only signed.

It carries the user's bearer token, so a signed-only cookie (readable base64) would hand the token
to whoever sees the cookie; sealed, it is opaque and tamper-proof. No server-side store: any replica
opens any replica's cookie with the shared ``ORGDIR_SESSION_SECRET``. The sealed value holds the time
it was issued, so a cookie older than ``max_age`` is refused even if a browser keeps sending it.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
import zlib
from typing import Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

NONCE_BYTES = 12
CONTEXT = b"orgdir portal session v1"  # key derivation info and associated data: a key for this only


class Session(dict[str, Any]):
    """A dict that knows whether a request changed it (only then is a cookie sent)."""

    modified = False

    def __setitem__(self, key: str, value: Any) -> None:
        self.modified = True
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.modified = True
        super().__delitem__(key)

    def pop(self, key: str, *default: Any) -> Any:
        if key in self:
            self.modified = True
        return super().pop(key, *default)

    def clear(self) -> None:
        self.modified = True
        super().clear()

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.modified = True
        super().update(*args, **kwargs)


class Sealer:
    """Seals a JSON-able dict into a cookie-safe string and opens it again (None if forged, foreign or old)."""

    def __init__(self, secret: str, max_age: int) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=CONTEXT).derive(secret.encode())
        self.aead = AESGCM(key)
        self.max_age = max_age

    def seal(self, data: dict[str, Any], now: float | None = None) -> str:
        plain = zlib.compress(json.dumps({"iat": int(now or time.time()), "s": data}, separators=(",", ":")).encode())
        nonce = os.urandom(NONCE_BYTES)
        return base64.urlsafe_b64encode(nonce + self.aead.encrypt(nonce, plain, CONTEXT)).decode().rstrip("=")

    def open(self, value: str, now: float | None = None) -> dict[str, Any] | None:
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            plain = self.aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], CONTEXT)
            body = json.loads(zlib.decompress(plain))
        except (binascii.Error, ValueError, InvalidTag, zlib.error):
            return None
        if not isinstance(body, dict) or not isinstance(body.get("s"), dict):
            return None
        if (now or time.time()) - int(body.get("iat", 0)) > self.max_age:
            return None
        data: dict[str, Any] = body["s"]
        return data


class SealedSessionMiddleware:
    """``request.session`` from a sealed cookie; written back only when a request changed it."""

    def __init__(
        self, app: ASGIApp, *, secret: str, cookie: str, max_age: int, https_only: bool = False,
        same_site: Literal["lax", "strict"] = "lax",
    ) -> None:
        self.app = app
        self.sealer = Sealer(secret, max_age)
        self.cookie = cookie
        self.max_age = max_age
        # HttpOnly: no script reads it. SameSite=Lax: a form posted from another site carries no
        # session, so no cross-site writes (the sign-in callback is a top-level GET, which Lax allows).
        self.flags = f"path=/; HttpOnly; SameSite={same_site.capitalize()}" + ("; Secure" if https_only else "")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = HTTPConnection(scope).cookies.get(self.cookie)
        opened = self.sealer.open(sent) if sent else None
        session = Session(opened or {})
        scope["session"] = session

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start" and session.modified:
                headers = MutableHeaders(scope=message)
                headers.add_vary_header("Cookie")
                if session:
                    value = self.sealer.seal(dict(session))
                    headers.append("Set-Cookie", f"{self.cookie}={value}; Max-Age={self.max_age}; {self.flags}")
                elif sent:
                    headers.append("Set-Cookie", f"{self.cookie}=; Max-Age=0; {self.flags}")
            await send(message)

        await self.app(scope, receive, send_with_cookie)

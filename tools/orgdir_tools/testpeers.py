"""Real peers for tests: a webhook receiver that verifies Standard Webhooks signatures,
``scim2-server`` in its own process, and a small OpenID Connect issuer (``OidcIssuer``). Used by the
notifier's tests, the cross-service tests and the portal's sign-in tests; needs ``standardwebhooks``
and ``scim2-server``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from standardwebhooks import Webhook

from orgdir_tools.localservers import free_port


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()



class QuietHandler(BaseHTTPRequestHandler):
    """A test peer's request handler: logs nothing (the test's output stays readable)."""

    def log_message(self, *args: Any) -> None:
        pass

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("content-length", 0)))


def serve(port: int, handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """An HTTP server on 127.0.0.1:``port`` in a daemon thread (stop it with ``server.shutdown()``)."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread

class Receiver:
    """A local webhook endpoint: verifies every request with the standardwebhooks library.

    ``mode`` is ``ok`` (204), ``fail`` (500), ``reject`` (410) or ``hang`` (never answers in time).
    ``got`` lists the events it acknowledged, in arrival order; ``seen`` every request.
    A request whose body ends before its ``content-length`` was cut off by a sender that died
    mid-request (the tests SIGKILL replicas): it is counted in ``cut``, not as a bad signature,
    since nobody is left to answer. ``refusals`` says why each bad signature was refused.
    """

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.mode = "ok"
        self.got: list[dict[str, Any]] = []
        self.seen: list[str] = []
        self.bad_signatures = 0
        self.refusals: list[str] = []
        self.cut = 0
        self.arrivals: dict[str, float] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.body()
                if len(body) < int(self.headers.get("content-length", 0)):
                    with receiver.lock:
                        receiver.cut += 1
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    event = Webhook(receiver.secret).verify(body, headers)
                except Exception as exc:
                    with receiver.lock:
                        receiver.bad_signatures += 1
                        receiver.refusals.append(f"{type(exc).__name__}: {exc} ({len(body)} bytes)")
                    self.send_response(401)
                    self.end_headers()
                    return
                with receiver.lock:
                    receiver.seen.append(event["id"])
                    mode = receiver.mode
                if mode == "hang":
                    time.sleep(30)
                    return
                if mode in ("fail", "reject"):
                    self.send_response(500 if mode == "fail" else 410)
                    self.end_headers()
                    return
                with receiver.lock:
                    receiver.got.append(event)
                    receiver.arrivals[event["id"]] = time.time()
                self.send_response(204)
                self.end_headers()

        self.port = free_port()
        self.server, self.thread = serve(self.port, Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def ids(self) -> list[str]:
        with self.lock:
            return [e["id"] for e in self.got]

    def of_subject(self, subject: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.got if e["subject"] == subject]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ScimServer:
    """``scim2-server`` in its own process (the PyPI package), with a bearer token."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.port = free_port()
        exe = Path(sys.executable).parent / "scim2-server"
        self.proc = subprocess.Popen(
            [str(exe), "--port", str(self.port), "--bearer-token", token],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ},
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(f"{self.url}/ServiceProviderConfig", headers=self.headers, timeout=1)
                if r.status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError("scim2-server did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str, timeout: float = 5, **params: Any) -> dict[str, Any]:
        r = httpx.get(f"{self.url}{path}", headers=self.headers, params=params, timeout=timeout)
        r.raise_for_status()
        out: dict[str, Any] = r.json()
        return out

    def all(self, path: str, page: int = 500) -> list[dict[str, Any]]:
        """Every resource at ``path``, page by page (a peer caps ``count``; 1,000 at most was
        read before, and a run with 2,000 Users never settled)."""
        out: list[dict[str, Any]] = []
        while True:
            body = self.get(path, timeout=30, startIndex=len(out) + 1, count=page)
            got = body.get("Resources", [])
            out += got
            if not got or len(out) >= int(body.get("totalResults", 0)):
                return out

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = httpx.post(f"{self.url}{path}", headers=self.headers, json=body, timeout=5)
        r.raise_for_status()
        out: dict[str, Any] = r.json()
        return out

    def user(self, username: str) -> dict[str, Any] | None:
        """The SCIM User with ``userName``, or None."""
        users: list[dict[str, Any]] = self.get("/Users", filter=f'userName eq "{username}"').get("Resources", [])
        return users[0] if users else None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class HoldingProxy:
    """A forwarding HTTP proxy that holds back the requests ``hold`` picks until ``release()``.

    It puts one request of a real peer behind the others, so a race between concurrent
    deliveries can be played out in a chosen order instead of waited for."""

    def __init__(self, upstream: str, hold: Callable[[str, str, bytes], bool]) -> None:
        self.upstream = upstream.rstrip("/")
        self.released = threading.Event()
        self.held = threading.Event()  # set once a request is being held
        proxy = self

        class Handler(QuietHandler):
            def _forward(self) -> None:
                body = self.body()
                if hold(self.command, self.path, body):
                    proxy.held.set()
                    proxy.released.wait(30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                r = httpx.request(self.command, proxy.upstream + self.path, headers=headers, content=body, timeout=30)
                self.send_response(r.status_code)
                for k, v in r.headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(k, v)
                self.send_header("content-length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        upstream_path = urlsplit(self.upstream).path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{upstream_path}"
        self.upstream = self.upstream[: len(self.upstream) - len(upstream_path)]
        self.server, self.thread = serve(self.port, Handler)

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


class OidcIssuer:
    """A small, real OpenID Connect issuer over HTTP: discovery, an authorization endpoint that approves
    at once as ``user`` (no login page), a token endpoint that checks the PKCE verifier (S256), the
    redirect URI and the client, a JWKS with its RS256 key, and an end-session endpoint.

    Tokens: the access token has ``aud`` = ``audience`` (the services') and the user's roles in
    ``realm_access``, the ID token ``aud`` = the client id and the request's ``nonce``. A code is used
    once. ``authorize_requests`` and ``token_requests`` record what clients sent; ``token_errors`` the
    refusals; ``nonce_override`` makes the next ID token carry another nonce (a replay, for tests).
    """

    def __init__(
        self, *, client_id: str = "orgdir-portal", client_secret: str = "", audience: str = "orgdir",
        user: dict[str, Any] | None = None, lifetime: int = 300,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.audience = audience
        self.user = user or {"sub": "u-1", "preferred_username": "anne.admin", "roles": ["orgdir:admin"]}
        self.lifetime = lifetime
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = secrets.token_hex(4)
        self.codes: dict[str, dict[str, str]] = {}
        self.authorize_requests: list[dict[str, str]] = []
        self.token_requests: list[dict[str, str]] = []
        self.token_errors: list[str] = []
        self.nonce_override: str | None = None
        self.lock = threading.Lock()
        self.port = free_port()
        issuer = self

        class Handler(QuietHandler):
            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _redirect(self, url: str) -> None:
                self.send_response(302)
                self.send_header("Location", url)
                self.end_headers()

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/.well-known/openid-configuration":
                    self._json(200, issuer.discovery())
                elif url.path == "/jwks":
                    self._json(200, issuer.jwks())
                elif url.path == "/authorize":
                    self._redirect(issuer.authorize(query))
                elif url.path == "/logout":
                    self._redirect(query.get("post_logout_redirect_uri") or issuer.url)
                else:
                    self._json(404, {"error": "not_found"})

            def do_POST(self) -> None:
                if urlsplit(self.path).path != "/token":
                    self._json(404, {"error": "not_found"})
                    return
                body = self.body().decode()
                form = {k: v[0] for k, v in parse_qs(body).items()}
                status, answer = issuer.token(form, self.headers.get("Authorization", ""))
                self._json(status, answer)

        self.server, self.thread = serve(self.port, Handler)

    @property
    def url(self) -> str:
        """The issuer identifier (``iss``), also the base of every endpoint."""
        return f"http://127.0.0.1:{self.port}"

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "authorization_endpoint": f"{self.url}/authorize",
            "token_endpoint": f"{self.url}/token",
            "jwks_uri": f"{self.url}/jwks",
            "end_session_endpoint": f"{self.url}/logout",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "subject_types_supported": ["public"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "none"],
        }

    def jwks(self) -> dict[str, Any]:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def authorize(self, query: dict[str, str]) -> str:
        """Approve at once: back to the client's redirect URI with a one-time code (or an error)."""
        with self.lock:
            self.authorize_requests.append(query)
        redirect = query.get("redirect_uri", "")
        state = {"state": query["state"]} if "state" in query else {}
        if query.get("client_id") != self.client_id or not redirect:
            return f"{redirect or self.url}?{urlencode({'error': 'unauthorized_client', **state})}"
        if query.get("response_type") != "code" or query.get("code_challenge_method") != "S256" \
                or not query.get("code_challenge"):
            return f"{redirect}?{urlencode({'error': 'invalid_request', **state})}"
        code = secrets.token_urlsafe(24)
        with self.lock:
            self.codes[code] = {"challenge": query["code_challenge"], "redirect_uri": redirect,
                                "nonce": query.get("nonce", ""), "scope": query.get("scope", "")}
        return f"{redirect}?{urlencode({'code': code, **state})}"

    def token(self, form: dict[str, str], authorization: str) -> tuple[int, dict[str, Any]]:
        """The code for tokens, only with the verifier whose S256 challenge came with the code."""
        with self.lock:
            self.token_requests.append(form)
            grant = self.codes.pop(form.get("code", ""), None)

        def refuse(error: str, why: str) -> tuple[int, dict[str, Any]]:
            with self.lock:
                self.token_errors.append(why)
            return 400, {"error": error, "error_description": why}

        if self.client_secret:
            expected = "Basic " + base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
            if authorization != expected:
                return refuse("invalid_client", "wrong client credentials")
        elif form.get("client_id") != self.client_id:
            return refuse("invalid_client", "unknown client")
        if form.get("grant_type") != "authorization_code":
            return refuse("unsupported_grant_type", "only authorization_code")
        if grant is None:
            return refuse("invalid_grant", "unknown or used code")
        if form.get("redirect_uri") != grant["redirect_uri"]:
            return refuse("invalid_grant", "redirect_uri differs from the authorization request's")
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        if not verifier or not secrets.compare_digest(challenge, grant["challenge"]):
            return refuse("invalid_grant", "code_verifier does not match the code_challenge")
        now = int(time.time())
        user = dict(self.user)
        roles = user.pop("roles", [])
        common = {"iss": self.url, "iat": now, "exp": now + self.lifetime, "sub": user["sub"], "azp": self.client_id}
        access = {**common, "aud": self.audience, "realm_access": {"roles": roles}, "scope": grant["scope"],
                  "preferred_username": user.get("preferred_username")}
        nonce = self.nonce_override if self.nonce_override is not None else grant["nonce"]
        identity = {**common, **user, "aud": self.client_id, "nonce": nonce}
        return 200, {
            "access_token": self.sign(access),
            "id_token": self.sign(identity),
            "token_type": "Bearer",
            "expires_in": self.lifetime,
            "scope": grant["scope"],
        }

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

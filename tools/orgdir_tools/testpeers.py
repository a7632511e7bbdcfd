"""Real peers for tests: a webhook receiver that verifies Standard Webhooks signatures, and
``scim2-server`` in its own process. Used by the notifier's tests and the cross-service tests;
needs ``standardwebhooks`` and ``scim2-server``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks import Webhook

from orgdir_tools.localservers import free_port


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class Receiver:
    """A local webhook endpoint: verifies every request with the standardwebhooks library.

    ``mode`` is ``ok`` (204), ``fail`` (500), ``reject`` (410) or ``hang`` (never answers in time).
    ``got`` lists the events it acknowledged, in arrival order; ``seen`` every request.
    """

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.mode = "ok"
        self.got: list[dict[str, Any]] = []
        self.seen: list[str] = []
        self.bad_signatures = 0
        self.arrivals: dict[str, float] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    event = Webhook(receiver.secret).verify(body, headers)
                except Exception:
                    with receiver.lock:
                        receiver.bad_signatures += 1
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
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

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

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        r = httpx.get(f"{self.url}{path}", headers=self.headers, params=params, timeout=5)
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

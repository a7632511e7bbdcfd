"""Helpers for tests against real servers: isolated settings, in-process apps, event capture.

Used by every service's tests and the cross-service tests; no mocks: apps talk
to the real RabbitMQ and MongoDB-wire server the pytest plugin started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO, Any, TypeVar

import aio_pika
import httpx
from aio_pika.abc import AbstractIncomingMessage
from fastapi import FastAPI
from pydantic import TypeAdapter

from orgdir.bus import declare_exchanges
from orgdir.clock import Clock
from orgdir.events import CloudEvent, is_current
from orgdir.service import Runtime
from orgdir.settings import Settings
from orgdir_tools.cli import uvicorn_command, wait_ready
from orgdir_tools.localservers import ServerError, free_port

SettingsT = TypeVar("SettingsT", bound=Settings)

ADMIN = {"Authorization": "Bearer dev-admin"}
WRITER = {"Authorization": "Bearer dev-writer"}
READER = {"Authorization": "Bearer dev-reader"}
APPROVER = {"Authorization": "Bearer dev-approver"}
SECRET_READER = {"Authorization": "Bearer dev-secret-reader"}


def auth_environment(settings: Settings) -> dict[str, str]:
    """The ORGDIR_* variables that give a service process the same auth and keys as ``settings``."""
    env = {
        "ORGDIR_AUTH_MODE": settings.auth_mode or "",
        "ORGDIR_ALLOW_STATIC_TOKENS": str(settings.allow_static_tokens).lower(),
        "ORGDIR_OIDC_ISSUER": settings.oidc_issuer,
        "ORGDIR_OIDC_AUDIENCE": settings.oidc_audience,
        "ORGDIR_OIDC_JWKS_URL": settings.oidc_jwks_url,
        "ORGDIR_OIDC_ALGORITHMS": json.dumps(settings.oidc_algorithms),
        "ORGDIR_OIDC_CLIENT_ID": settings.oidc_client_id,
        "ORGDIR_ENCRYPTION_KEY_ID": settings.encryption_key_id,
    }
    if settings.static_tokens:
        env["ORGDIR_STATIC_TOKENS"] = json.dumps({k: v.model_dump() for k, v in settings.static_tokens.items()})
    if settings.encryption_keys:
        env["ORGDIR_ENCRYPTION_KEYS"] = json.dumps(settings.encryption_keys)
    if hash_key := getattr(settings, "cpr_hash_key", None):
        env["ORGDIR_CPR_HASH_KEY"] = str(hash_key)
    return {k: v for k, v in env.items() if v}


def settings_for(
    cls: type[SettingsT], *, ns: str, service: str, amqp_url: str, mongodb_url: str, **overrides: Any
) -> SettingsT:
    """Settings that keep this test's data, exchange and queues apart from every other test."""
    values: dict[str, Any] = {
        "service_name": service,
        "mongodb_url": mongodb_url,
        "amqp_url": amqp_url,
        "database": f"{ns}_{service.replace('-', '_')}",
        "exchange": f"{ns}.events",
        "queue_prefix": f"{ns}.",
        "relay_sweep_seconds": 0.5,
        "retry_delay_seconds": 0.05,
        "scheduler_interval_seconds": 3600,
        "declare_topology": False,  # each test declares only what it consumes
        # The dev tokens (dev-admin ...) and the public development key, explicitly: services refuse
        # to start without auth configuration (orgdir.settings.Settings.startup_problems).
        "auth_mode": "static",
        "allow_static_tokens": True,
    }
    values.update(overrides)
    return cls.model_validate(values)


DEPLOYED_TIMING = ("relay_sweep_seconds", "retry_delay_seconds", "scheduler_interval_seconds")


def bench_settings_for(
    cls: type[SettingsT], *, ns: str, service: str, amqp_url: str, mongodb_url: str, **overrides: Any
) -> SettingsT:
    """``settings_for`` with the timings a deployment has (the settings' defaults), for benchmarks.

    The tests' half-second outbox sweep is a full scan of every collection twice a second in every
    process; at the municipality preset that was most of the database server's work, and every
    figure measured with it was the sweep's as much as the code's.
    """
    timing = {name: cls.model_fields[name].default for name in DEPLOYED_TIMING}
    return settings_for(cls, ns=ns, service=service, amqp_url=amqp_url, mongodb_url=mongodb_url,
                        **{**timing, **overrides})


def as_documented(body: Any, model: Any) -> None:
    """``body`` is exactly what ``model`` makes of it: a route that sends a body as built
    (``orgdir.http.prebuilt``) neither leaves out a documented field nor adds one."""
    adapter = TypeAdapter(model)
    assert adapter.dump_python(adapter.validate_python(body), mode="json", by_alias=True) == body


async def eventually(check: Callable[[], Any], within: float = 20, interval: float = 0.1) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; that value is returned."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {within}s (last: {last!r})")


class RunningApp:
    """A service app running in this process with its lifespan, and an HTTP client for it."""

    def __init__(self, app: FastAPI, headers: dict[str, str] | None = None) -> None:
        self.app = app
        self.headers = headers or ADMIN
        self.client: httpx.AsyncClient | None = None
        self._stack = contextlib.AsyncExitStack()

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    async def __aenter__(self) -> RunningApp:
        await self._stack.enter_async_context(self.app.router.lifespan_context(self.app))
        self.client = await self._stack.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=self.app, raise_app_exceptions=False),
                base_url="http://test",
                headers=self.headers,
                timeout=30,
            )
        )
        await self.runtime.bus.wait_connected(30)
        await self.runtime.consumers_ready(30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    @property
    def http(self) -> httpx.AsyncClient:
        assert self.client is not None
        return self.client

    async def settle(self, timeout: float = 10) -> None:
        """Wait until this app's outbox is empty (everything written is published)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while await self.runtime.relay.sweep(min_age=None) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(
    factory: Callable[[Any, Clock | None], FastAPI], settings: Settings, clock: Clock | None = None
) -> AsyncIterator[RunningApp]:
    async with RunningApp(factory(settings, clock)) as app:
        yield app


class EventCollector:
    """Binds its own queue to the test's exchange and records every event, in arrival order."""

    def __init__(self, amqp_url: str, exchange: str, pattern: str = "#") -> None:
        self.amqp_url = amqp_url
        self.exchange = exchange
        self.pattern = pattern
        self.events: list[CloudEvent] = []
        self.previous_versions: list[CloudEvent] = []
        self._changed = asyncio.Condition()
        self._conn: aio_pika.abc.AbstractConnection | None = None

    async def __aenter__(self) -> EventCollector:
        self._conn = await aio_pika.connect(self.amqp_url)
        channel = await self._conn.channel()
        await declare_exchanges(channel, self.exchange)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(self.exchange, routing_key=self.pattern)
        await queue.consume(self._on_message, no_ack=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._conn:
            await self._conn.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        event = CloudEvent.model_validate(json.loads(message.body))
        # The copy in a previous dataversion (orgdir.events.side_by_side) is kept apart.
        (self.events if is_current(event) else self.previous_versions).append(event)
        async with self._changed:
            self._changed.notify_all()

    def of_type(self, *types: str, subject: str | None = None) -> list[CloudEvent]:
        return [e for e in self.events if (not types or e.type in types) and (subject is None or e.subject == subject)]

    async def wait_for(self, predicate: Callable[[list[CloudEvent]], bool], timeout: float = 15) -> list[CloudEvent]:
        async def check() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self.events))

        try:
            await asyncio.wait_for(check(), timeout)
        except TimeoutError as exc:
            seen = [f"{e.type}:{e.subject}@{e.sequence}" for e in self.events]
            raise AssertionError(f"events not seen within {timeout}s; got {seen}") from exc
        return self.events

    async def wait_type(
        self, event_type: str, count: int = 1, timeout: float = 15, subject: str | None = None
    ) -> list[CloudEvent]:
        await self.wait_for(lambda _: len(self.of_type(event_type, subject=subject)) >= count, timeout)
        return self.of_type(event_type, subject=subject)


class ServiceProcess:
    """A service app under uvicorn in its own OS process, as in production (benchmarks, crash tests).

    In-process apps share one interpreter and one core with the load
    generator; a separate process lets a benchmark use the machine's cores.
    """

    def __init__(self, package: str, settings: Settings, *, env: dict[str, str] | None = None) -> None:
        self.package = package
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    def environment(self) -> dict[str, str]:
        s = self.settings
        return {
            **os.environ,
            "ORGDIR_SERVICE_NAME": s.service_name,
            "ORGDIR_AMQP_URL": s.amqp_url,
            "ORGDIR_MONGODB_URL": s.mongodb_url,
            "ORGDIR_DATABASE": s.database_name,
            "ORGDIR_EXCHANGE": s.exchange,
            "ORGDIR_QUEUE_PREFIX": s.queue_prefix,
            "ORGDIR_LOG_LEVEL": "WARNING",
            **auth_environment(s),
            **self.extra_env,
        }

    async def __aenter__(self) -> ServiceProcess:
        await self.start()
        return self

    async def start(self) -> None:
        """Start (again, on the same port) and wait until ``/readyz`` answers 200."""
        log = self._log_file()
        try:
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - a child process; readiness is awaited below
                [*uvicorn_command(self.package, self.port), "--log-level", "warning"],
                env=self.environment(),
                stderr=log,
            )
        finally:
            if log is not None:
                log.close()  # the child holds its own descriptor
        try:
            await wait_ready(self.url, self.proc, timeout=90, name=self.package)
        except ServerError as exc:
            self.stop()
            raise ServerError(f"{exc}{self._log_tail()}") from exc  # why, in the test report itself
        except BaseException:
            self.stop()
            raise

    def _log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"; the end of {self.log_path}:\n" + "\n".join(tail)

    def _log_file(self) -> IO[bytes] | None:
        """Under pytest, the log goes to a file the session scans for secrets (``orgdir_tools.logscan``)."""
        directory = os.environ.get("ORGDIR_TEST_LOG_DIR")
        if not directory or not Path(directory).is_dir():
            return None  # inherit stderr
        self.log_path = Path(directory) / f"{self.package}-{self.port}-{uuid.uuid4().hex[:6]}.log"
        return self.log_path.open("wb")

    def _show_log(self) -> None:
        """Echo the process's log to stderr, where pytest shows it with a failing test."""
        if self.log_path is not None and self.log_path.exists():
            text = self.log_path.read_text(errors="replace")
            if text:
                sys.stderr.write(f"--- {self.package} :{self.port} log ---\n{text[-20000:]}")
            self.log_path = None

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, nothing flushed, as when a node dies."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._show_log()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._show_log()

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

"""pytest plugin (``-p orgdir_tools.testing``): real servers and isolation for tests.

One RabbitMQ node and one mongo-java-server (memory backend) serve the whole
session (started concurrently, only when a test asks for them); tests keep
apart by naming their databases, exchanges and queues with the ``ns`` prefix.
Tests that stop and restart a server get one of their own. ``AMQP_URL`` /
``MONGODB_URL`` in the environment point the session at existing servers
instead (``ORGDIR_MONGO_BACKEND=h2`` runs the session's server on H2).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orgdir_tools.localservers import (
    MongoServer,
    RabbitNode,
    ServerSet,
    cleanup_stale_test_dirs,
    run_dir,
)
from orgdir_tools.logscan import LogScanner, scan_files

_scanner = LogScanner()


def pytest_configure(config: pytest.Config) -> None:
    """Scan every log record and every service process's log file of the session for secrets."""
    logging.getLogger().addHandler(_scanner)
    if "ORGDIR_TEST_LOG_DIR" not in os.environ:
        os.environ["ORGDIR_TEST_LOG_DIR"] = tempfile.mkdtemp(prefix="orgdir-test-logs-")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No log line of a test run may hold a CPR number or a bearer token (issue #16): a leak fails the run."""
    logs = Path(os.environ["ORGDIR_TEST_LOG_DIR"])
    leaks = _scanner.leaks + scan_files(logs)
    if os.environ.get("ORGDIR_KEEP_TEST_LOGS"):  # to read a failed run's service logs whole
        print(f"\nservice logs kept in {logs}", file=sys.stderr)
    else:
        shutil.rmtree(logs, ignore_errors=True)
    if leaks:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = [f"{len(leaks)} log line(s) hold a CPR number or a token:", *leaks[:50]]
        if reporter is not None:
            reporter.write_sep("=", "secrets in logs", red=True)
            for line in lines:
                reporter.write_line(line)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _short_id() -> str:
    """``t`` + 8 hex chars: unique enough per session, valid in every name we build."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def orgdir_test_dir() -> Iterator[Path]:
    """``.run/test-<pid>/``: this session's server data, removed at the end."""
    cleanup_stale_test_dirs()
    path = run_dir() / f"test-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def orgdir_servers(orgdir_test_dir: Path) -> Iterator[ServerSet]:
    """The session's RabbitMQ and MongoDB-wire server, both started at once."""
    servers = ServerSet.for_dir(orgdir_test_dir, rabbit_name=f"test{os.getpid()}")
    servers.start()
    yield servers
    servers.stop()


@pytest.fixture(scope="session")
def amqp_url(orgdir_servers: ServerSet) -> str:
    return orgdir_servers.amqp_url


@pytest.fixture(scope="session")
def mongodb_url(orgdir_servers: ServerSet) -> str:
    return orgdir_servers.mongodb_url


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> Iterator[str]:
    """A unique name prefix for this test's databases, exchanges and queues.

    The session's broker holds every test's queues; one RabbitMQ node here
    stops answering at a few hundred quorum queues (313 seen), so the
    topology queues a test's services declared are deleted after it.
    """
    name = _short_id()
    yield name
    if "amqp_url" in request.fixturenames:
        _delete_topology_queues(str(request.getfixturevalue("amqp_url")), name)


def _delete_topology_queues(amqp_url: str, prefix: str) -> None:
    from orgdir.queues import CONSUMER_QUEUES

    names = [f"{prefix}.events.unrouted"]
    for queue in CONSUMER_QUEUES:
        names += [f"{prefix}.{queue}", f"{prefix}.{queue}.dead"]

    async def delete() -> None:
        import aio_pika

        connection = await aio_pika.connect(amqp_url.split(",")[0], timeout=10)
        try:
            channel = await connection.channel()
            for queue in names:  # deleting a queue that does not exist is no error
                await channel.queue_delete(queue)
        finally:
            await connection.close()

    loop = asyncio.new_event_loop()  # not asyncio.run: it would unset the session's loop
    try:
        loop.run_until_complete(asyncio.wait_for(delete(), 30))
    except Exception as exc:  # never fail a test over cleanup; the broker goes with the session
        print(f"note: could not delete the queues of {prefix}: {exc}")
    finally:
        loop.close()


@pytest.fixture
def private_rabbit(orgdir_test_dir: Path) -> Iterator[Callable[[], RabbitNode]]:
    """Factory: ``private_rabbit()`` starts a node for this test alone; stopped at teardown."""
    nodes: list[RabbitNode] = []

    def make() -> RabbitNode:
        name = _short_id()
        node = RabbitNode(name, orgdir_test_dir / "private" / f"rabbit-{name}")
        nodes.append(node)
        node.start()
        return node

    yield make
    for node in nodes:
        node.stop()


@pytest.fixture
def private_mongo(orgdir_test_dir: Path) -> Iterator[Callable[..., MongoServer]]:
    """Factory: ``private_mongo()`` starts a server for this test only; stopped after it.

    The memory backend loses its data on stop; a test that restarts the server
    and expects its data back asks for ``private_mongo(backend="h2")``.
    """
    servers: list[MongoServer] = []

    def make(backend: str = "memory") -> MongoServer:
        server = MongoServer(orgdir_test_dir / "private" / f"mongo-{_short_id()}", backend=backend)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()

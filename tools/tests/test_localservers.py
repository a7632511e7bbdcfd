"""The local servers are real: RabbitMQ speaks AMQP with quorum queues, mongo-java-server keeps data."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import aio_pika
import pymongo
import pytest
from pymongo import AsyncMongoClient

from orgdir_tools.localservers import MongoServer, RabbitNode, ServerSet, free_port, port_open


async def test_session_rabbitmq_declares_a_quorum_queue(amqp_url: str, ns: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{ns}.q", durable=True, arguments={"x-queue-type": "quorum"})
        await channel.default_exchange.publish(aio_pika.Message(b"hello"), routing_key=queue.name)
        message = await queue.get(timeout=5)
        assert message is not None and message.body == b"hello"
        await message.ack()
        await queue.delete(if_unused=False, if_empty=False)


async def test_session_mongo_inserts_and_finds(mongodb_url: str, ns: str) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongodb_url)
    async with client:
        coll = client[ns]["things"]
        await coll.insert_one({"_id": "a", "n": 1})
        assert await coll.find_one({"_id": "a"}) == {"_id": "a", "n": 1}
        await client.drop_database(ns)


async def test_session_mongo_reports_a_wire_version_pymongo_accepts(mongodb_url: str) -> None:
    """PyMongo 4.20+ needs wire version 17 (MongoDB 6.0); the library alone reports 8."""
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongodb_url)
    async with client:
        hello = await client.admin.command("hello")
        assert hello["isWritablePrimary"] is True and int(hello["maxWireVersion"]) >= 17
        legacy = await client.admin.command("isMaster")  # what PyMongo's handshake sends
        assert int(legacy["maxWireVersion"]) == int(hello["maxWireVersion"])


async def test_private_h2_mongo_stops_and_keeps_data_over_restart(
    private_mongo: Callable[..., MongoServer], ns: str
) -> None:
    server: MongoServer = private_mongo(backend="h2")
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(server.url)
    async with client:
        await client[ns]["things"].insert_one({"_id": "kept"})

    server.stop()  # SIGTERM: the shutdown hook closes the H2 file
    assert not port_open(server.port) and server.pid is None
    down: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(server.url, serverSelectionTimeoutMS=500)
    async with down:
        with pytest.raises(pymongo.errors.ServerSelectionTimeoutError):
            await down.admin.command("ping")

    port = server.port
    await server.arestart()
    assert server.port == port and server.data_file.is_file()
    client = AsyncMongoClient(server.url)
    async with client:
        assert await client[ns]["things"].find_one({"_id": "kept"}) == {"_id": "kept"}


async def test_private_rabbit_keeps_port_and_durable_messages_over_restart(private_rabbit, ns):
    node: RabbitNode = private_rabbit()
    connection = await aio_pika.connect(node.url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{ns}.q", durable=True, arguments={"x-queue-type": "quorum"})
        await channel.default_exchange.publish(
            aio_pika.Message(b"survivor", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=queue.name,
        )

    url = node.url
    await node.astop()  # the awaitable variants keep the event loop running
    assert not port_open(node.port) and node.pid is None
    await node.arestart()
    assert node.url == url

    connection = await aio_pika.connect(node.url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{ns}.q", durable=True, arguments={"x-queue-type": "quorum"})
        message = await queue.get(timeout=10)
        assert message is not None and message.body == b"survivor"
        await message.ack()


def test_ns_is_a_short_unique_prefix(ns: str) -> None:
    assert re.fullmatch(r"t[0-9a-f]{8}", ns)


def test_free_port_never_repeats_within_a_process() -> None:
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20
    assert not ports & {4369, *range(35672, 35683)}


def test_tests_use_memory_the_stack_h2_and_the_environment_overrides(tmp_path: Path) -> None:
    def backend(env: dict[str, str], **kw: str) -> str:
        servers = ServerSet.for_dir(tmp_path / "s", rabbit_name="x", env={"AMQP_URL": "amqp://x/", **env}, **kw)
        assert servers.mongo is not None
        return servers.mongo.backend

    assert backend({}) == "memory"
    assert backend({}, mongo_backend="h2") == "h2"
    assert backend({"ORGDIR_MONGO_BACKEND": "memory"}, mongo_backend="h2") == "memory"


def test_cli_uses_urls_from_the_environment(tmp_path: Path) -> None:
    """With both URLs given, ``up`` starts nothing and only records them."""
    env = dict(
        os.environ,
        ORGDIR_RUN_DIR=str(tmp_path),
        AMQP_URL="amqp://guest:guest@example.invalid:5672/",
        MONGODB_URL="mongodb://example.invalid:27017/",
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orgdir_tools.localservers", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert cli("up").returncode == 0
    printed = cli("env")
    assert printed.returncode == 0
    assert printed.stdout == (
        "AMQP_URL=amqp://guest:guest@example.invalid:5672/\nMONGODB_URL=mongodb://example.invalid:27017/\n"
    )
    assert cli("status").returncode == 0
    assert cli("down").returncode == 0
    assert cli("env").returncode == 1

"""A service's broker connection fails over between the nodes it is given (``ORGDIR_AMQP_URL=a,b``).

Two independent real nodes stand in for two cluster nodes: the connection
starts on a private node, the node is SIGKILLed, and the same connection
(its robust channel, queue and consumer restored) must carry on on the other
node, without anyone calling ``connect`` again. The cluster itself (quorum
queues replicated, leaders moving) is exercised by ``tests/e2e/test_chaos_e2e.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import aio_pika

from orgdir.bus import Bus, FailoverConnection
from orgdir.settings import Settings
from orgdir_tools.localservers import RabbitCluster, RabbitNode, ServerSet, free_port
from orgdir_tools.testkit import eventually, settings_for


def test_amqp_url_takes_a_comma_separated_list_of_nodes() -> None:
    s = Settings.model_validate({"amqp_url": "amqp://a:5672/, amqp://b:5672/,", "auth_mode": "static"})
    assert s.amqp_urls == ["amqp://a:5672/", "amqp://b:5672/"]
    assert Settings.model_validate({"amqp_url": "amqp://a/"}).amqp_urls == ["amqp://a/"]


async def test_a_dead_first_node_is_skipped_on_connect(ns: str, amqp_url: str, mongodb_url: str) -> None:
    nobody = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    settings = settings_for(Settings, ns=ns, service="toy", amqp_url=f"{nobody},{amqp_url}", mongodb_url=mongodb_url)
    bus = Bus(settings)
    bus._attempts = 0  # start at the dead node on purpose
    bus.start()
    try:
        await bus.wait_connected(30)
        assert isinstance(bus.connection, FailoverConnection) and str(bus.connection.url) == amqp_url
    finally:
        await bus.close()


async def test_a_killed_node_hands_the_connection_and_its_consumer_to_the_next(
    ns: str, amqp_url: str, private_rabbit: Callable[[], RabbitNode]
) -> None:
    node = await asyncio.to_thread(private_rabbit)
    connection = FailoverConnection([node.url, amqp_url], start=0, reconnect_interval=0.2)
    await connection.connect(timeout=10)
    got: list[bytes] = []
    try:
        assert connection.url.port == node.port
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{ns}.failover", durable=True, arguments={"x-queue-type": "quorum"})

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            got.append(message.body)
            await message.ack()

        await queue.consume(on_message)
        await channel.default_exchange.publish(aio_pika.Message(b"before"), routing_key=queue.name)
        await eventually(lambda: got == [b"before"])

        await asyncio.to_thread(node.kill)
        await eventually(lambda: connection.connected.is_set() and connection.url.port != node.port, within=30)
        assert str(connection.url) == amqp_url
        # The channel, its queue and its consumer came back on the other node by themselves.
        await eventually(lambda: not channel.is_closed, within=30)
        await channel.default_exchange.publish(aio_pika.Message(b"after"), routing_key=queue.name)
        await eventually(lambda: got == [b"before", b"after"], within=30)
    finally:
        await connection.close()


def test_the_local_stack_can_run_a_cluster_of_three(tmp_path: Path) -> None:
    """``ORGDIR_RABBITMQ_NODES=3``: three nodes, and the services get all three URLs (nothing started here)."""
    servers = ServerSet.for_dir(tmp_path, rabbit_name="x", env={"MONGODB_URL": "mongodb://m/"}, rabbit_nodes=3)
    assert isinstance(servers.rabbit, RabbitCluster)
    settings = Settings.model_validate({"amqp_url": servers.amqp_url})
    assert settings.amqp_urls == [node.url for node in servers.rabbit.nodes]
    assert len({node.port for node in servers.rabbit.nodes}) == 3

"""Settings from the environment (prefix ``ORGDIR_``), like every Orgdir service's."""

from __future__ import annotations

from pydantic import Field

from orgdir.settings import Settings


class ConsumerSettings(Settings):
    """Orgdir's shared settings (broker, database, auth, prefetch, retries) with this consumer's defaults.

    ``ORGDIR_AMQP_URL`` and ``ORGDIR_MONGODB_URL`` point it at the installation;
    its queue is ``<ORGDIR_QUEUE_PREFIX>{{name}}.events`` and its database
    ``orgdir_{{package}}`` (``ORGDIR_DATABASE``).
    """

    service_name: str = Field("{{name}}", description="Must stay {{name}}: it names the queue.")
    declare_topology: bool = Field(False, description="Orgdir's own queues are not this consumer's to declare.")

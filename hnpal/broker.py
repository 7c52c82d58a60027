"""The Celery broker transport: kombu's Redis transport with one client object per channel.

kombu 5.7 builds a new ``redis.Redis`` client for every command it sends outside the consumer's poll
(each publish, each acknowledgement, each batch of worker events). With redis-py 8 that constructor
costs more than the command itself (~0.15 ms: it copies the response-callback table), and a discussion
message pays it about ten times on its way through the bot and the workers. The client only wraps the
channel's connection pool, and redis-py takes a pooled connection per command, so one client per pool
is equivalent; it is rebuilt whenever kombu replaces the pool (after a connection error).

:func:`install` (called by celeryconfig.py) makes it kombu's transport for ``redis://`` and ``rediss://``
URLs, so the broker URL keeps its scheme: Flower recognises it (Broker tab, ``/api/queues/length``),
which it did not under a custom ``broker_transport`` name. An explicit ``redis+socket://`` URL, as the
embedded Redis uses, keeps kombu's own transport.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _shared_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # the consumer's own BRPOP/pub-sub clients: kombu's way
            return super()._create_client(asynchronous=True)
        pool = self.pool
        client = self._shared_client
        if client is None or client.connection_pool is not pool:
            client = self._shared_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel


def install() -> None:
    """Use :class:`Transport` for ``redis://`` and ``rediss://`` broker URLs in this process."""
    from kombu.transport import TRANSPORT_ALIASES

    TRANSPORT_ALIASES["redis"] = TRANSPORT_ALIASES["rediss"] = "hnpal.broker:Transport"

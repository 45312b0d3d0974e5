"""The tail's connections: a pool of its own, no silent retries, one cluster node.

A tail must see every lost connection (to backfill what pub/sub dropped), so its
clients never retry on their own: redis-py's retries would reconnect and
re-subscribe behind its back. On a Redis Cluster, ``PUBLISH`` reaches every node,
so the tail subscribes on one node and reads topic keys through the cluster
client it was given.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from rdebug_nb.errors import ConnectionFailed, PermissionDenied, RdebugError

logger = logging.getLogger(__name__)

RECOVERABLE: Final = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterError,
)
"""Errors after which the tail reconnects (and backfills) instead of failing."""

CONNECT_TIMEOUT: Final = 1.0
"""Seconds a tail waits for a connection, so that stop() stays prompt."""

_POOL_ONLY: Final = frozenset(
    {
        "retry",
        "retry_on_error",
        "retry_on_timeout",
        "maint_notifications_pool_handler",
        "maint_notifications_config",
        "oss_cluster_maint_notifications_handler",
        "orig_host_address",
        "orig_socket_timeout",
        "orig_socket_connect_timeout",
        "himport_registry",
        "health_check_interval",
        "client_name",
        "decode_responses",
        "socket_connect_timeout",
        "redis_connect_func",
    }
)


class Connections:
    """The command client and the subscriber client of one tail.

    Parameters
    ----------
    source : Bus, redis.Redis, redis.RedisCluster or callable returning one
        Where the guild lives.
    guild_id : str
        Used to name the connections (``CLIENT LIST`` shows
        ``rdebug-tail:<guild_id>``).
    """

    def __init__(self, source: Any, guild_id: str) -> None:
        client = source_client(source)
        self.name = client_name(guild_id)
        self.cluster = isinstance(client, redis.RedisCluster)
        self._cluster: Any = client if self.cluster else None
        self.commands: Any = client if self.cluster else own_client(client, self.name)
        self._listeners: dict[str, redis.Redis] = {}

    def pubsub(self) -> Any:
        """A new PubSub on the subscriber client (a fresh connection)."""
        return self.listener().pubsub()  # type: ignore[no-untyped-call]

    def listener(self) -> redis.Redis:
        """The client that subscribes: the tail's own, or one cluster node's."""
        if self._cluster is None:
            return self.commands  # type: ignore[no-any-return]
        node = self._cluster.get_default_node()
        if node.name not in self._listeners:
            self._listeners[node.name] = own_client(node.redis_connection, self.name)
            logger.debug("tail %s subscribes on cluster node %s", self.name, node.name)
        return self._listeners[node.name]

    def close(self) -> None:
        """Close the clients the tail made (a cluster client given to it stays)."""
        own = list(self._listeners.values())
        if self._cluster is None:
            own.append(self.commands)
        for client in own:
            client.connection_pool.disconnect()  # close() keeps a given pool open


def source_client(source: Any) -> redis.Redis:
    """The client behind a Bus, a client, or a function that returns one."""
    client = getattr(source, "client", None)
    if isinstance(client, redis.Redis | redis.RedisCluster):
        return client  # type: ignore[return-value]
    if isinstance(source, redis.Redis | redis.RedisCluster):
        return source  # type: ignore[return-value]
    if client is not None:
        raise RdebugError(
            f"{source!r} reads {type(client).__name__}, not a Redis server: a "
            "snapshot has no live traffic to tail; open the server with "
            "rdebug_nb.connect(url)"
        )
    if callable(source):
        made = source()
        if isinstance(made, redis.Redis | redis.RedisCluster):
            return made  # type: ignore[return-value]
    raise RdebugError(
        f"{source!r} is not a Bus, a redis client or a function returning one; "
        "pass rdebug_nb.connect(url) or redis.Redis.from_url(url)"
    )


def own_client(client: redis.Redis, name: str) -> redis.Redis:
    """A client with a pool of its own: same server, no retries, a name."""
    pool = client.connection_pool
    kwargs = {k: v for k, v in pool.connection_kwargs.items() if k not in _POOL_ONLY}
    own = redis.ConnectionPool(
        connection_class=pool.connection_class,
        retry=Retry(NoBackoff(), 0),
        socket_connect_timeout=CONNECT_TIMEOUT,
        health_check_interval=10,
        client_name=name,
        **kwargs,
    )
    return redis.Redis(connection_pool=own)


def client_name(guild_id: str) -> str:
    """``rdebug-tail:<guild_id>``, without what CLIENT SETNAME refuses.

    >>> client_name("acme support:echo")
    'rdebug-tail:acme_support:echo'
    """
    name = "".join(c if c.isprintable() and not c.isspace() else "_" for c in guild_id)
    return f"rdebug-tail:{name}"[:100]


def as_package_error(err: Exception, guild_id: str) -> Exception:
    """The package's exception for an error that ends a tail, cause chained."""
    where = f"the tail of {guild_id!r} stopped"
    if isinstance(err, redis.exceptions.AuthenticationError):
        failure: Exception = ConnectionFailed(
            f"{where}: the server rejected the credentials ({err}); check the user "
            "and password in the URL"
        )
    elif isinstance(err, redis.exceptions.NoPermissionError):
        failure = PermissionDenied(
            f"{where}: the Redis user may not PSUBSCRIBE or read the topic keys "
            f"({err}); grant +psubscribe +punsubscribe and read commands"
        )
    else:
        return err
    failure.__cause__ = err
    return failure

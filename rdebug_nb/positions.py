"""Delivery positions read from Redis, and the backlog they imply.

Source layer: reads ``eo:pos:*`` keys (``SCAN MATCH`` + one pipelined ``GET``
round trip) and the stored members of the topics they point at, then hands both to
the pure :func:`rdebug_nb.backlog.backlog_table`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pandas as pd
import redis

from rdebug_nb import discovery
from rdebug_nb.backlog import backlog_table, position_table
from rdebug_nb.errors import GuildNotFound
from rdebug_nb.guilds import Position
from rdebug_nb.keys import POSITION_PREFIX, glob_escape

if TYPE_CHECKING:
    from rdebug_nb.bus import Bus

logger = logging.getLogger(__name__)


def read_positions(client: redis.Redis, guild_id: str | None = None) -> list[Position]:
    """Read every delivery position, or those of one guild or namespace.

    Parameters
    ----------
    client : redis.Redis
        A client created with ``decode_responses=False``.
    guild_id : str, optional
        Keep positions of this guild's agents and positions on topics of this
        namespace (so an organisation id selects its inbox readers).

    Returns
    -------
    list of Position
        With ``message_id`` filled in (None where the key holds no number),
        sorted by key.
    """
    space = discovery.scan_keyspace(
        client, count_distinct=False, match=glob_escape(POSITION_PREFIX) + "*"
    )
    if guild_id is not None:
        space.positions = [
            p for p in space.positions if guild_id in (p.key.guild_id, p.key.namespace)
        ]
    discovery.position_values(client, space)
    return sorted(space.positions, key=lambda p: p.name)


def load_backlog(bus: Bus, guild_id: str) -> pd.DataFrame:
    """The backlog of every position of a guild (see :func:`backlog_table`).

    Reads the guild's positions, then the stored members of each topic they
    point at (in the guild's namespace and in the organisation namespace).
    Positions on topics that no longer exist count zero entries.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`rdebug_nb.backlog.BACKLOG_COLUMNS`.
    """
    with bus._guard("SCAN MATCH eo:pos:* and GET of the positions"):
        positions = read_positions(bus.client, guild_id)
    table = position_table(positions)
    if table.empty:
        bus.topics(guild_id)  # raises GuildNotFound for a guild that does not exist
    frames = [
        _stored(bus, str(namespace), sorted(set(group["topic"])))
        for namespace, group in table.groupby("namespace")
        if namespace
    ]
    deliveries = pd.concat([f for f in frames if not f.empty] or [_no_deliveries()])
    logger.debug("backlog of %s: %s positions", guild_id, len(table))
    return backlog_table(table, deliveries)


def _stored(bus: Bus, namespace: str, topics: list[str]) -> pd.DataFrame:
    try:
        existing = set(bus.topics(namespace)["topic"])
    except GuildNotFound:
        return _no_deliveries()
    wanted = [topic for topic in topics if topic in existing]
    if not wanted:
        return _no_deliveries()
    return bus.deliveries(namespace, topics=wanted)


def _no_deliveries() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "guild_id": pd.Series(dtype=object),
            "topic": pd.Series(dtype=object),
            "id": pd.array([], dtype="UInt64"),
            "timestamp_ms": pd.Series(dtype="int64"),
        }
    )

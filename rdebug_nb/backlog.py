"""Backlog: how far each agent got in each topic it reads.

RusticAI's Redis backend records, per client (``<guild_id>$<agent_id>``) and topic
key, the id of the last message the client finished (or dead-lettered) in an
``eo:pos:*`` key. On restart it replays the topic's members whose **id** is
greater than that position. Ids sort by priority first (an urgent message has a
smaller id than a normal one sent earlier), so "after the position" by id is not
"after the position" in time; :func:`backlog_table` reports both.

This module is pure: :mod:`rdebug_nb.positions` reads the keys from Redis.

Examples
--------
>>> from rdebug_nb.guilds import Position
>>> from rdebug_nb.keys import parse_position_key
>>> key = "eo:pos:g$echo:g:t"
>>> positions = [Position(key, parse_position_key(key), 7436657122856673280)]
>>> deliveries = pd.DataFrame({
...     "guild_id": ["g", "g"], "topic": ["t", "t"],
...     "id": pd.array([7436657122856673280, 2824971229302112256], dtype="UInt64"),
...     "timestamp_ms": [1796300982833, 1796301012605],
... })
>>> row = backlog_table(positions, deliveries).iloc[0]
>>> int(row["pending_by_id"]), int(row["pending_by_time"]), int(row["lag_ms"])
(0, 1, 29772)
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any, Final

import numpy as np
import pandas as pd

from rdebug_nb.guilds import Position
from rdebug_nb.ids import decode_ids, to_uint64

POSITION_COLUMNS: Final = (
    "key",
    "client_id",
    "guild_id",
    "agent_id",
    "namespace",
    "topic",
    "position_id",
)
"""Columns of :func:`position_table`, in order."""

BACKLOG_COLUMNS: Final = (
    "guild_id",
    "agent_id",
    "namespace",
    "topic",
    "position_id",
    "position_time",
    "position_stored",
    "entries",
    "pending_by_id",
    "pending_by_time",
    "newest_id",
    "newest_time",
    "lag_ms",
    "key",
)
"""Columns of :func:`backlog_table`, in order."""


def position_table(positions: Iterable[Position]) -> pd.DataFrame:
    """Tabulate delivery positions (as read from ``eo:pos:*`` keys).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`POSITION_COLUMNS`; ``position_id`` is ``UInt64``,
        ``<NA>`` where the key held no number. Sorted by key.

    Examples
    --------
    >>> position_table([]).columns.tolist() == list(POSITION_COLUMNS)
    True
    """
    rows = [
        (
            p.name,
            f"{p.key.guild_id}${p.key.agent_id}",
            p.key.guild_id,
            p.key.agent_id,
            p.key.namespace,
            p.key.topic,
            p.message_id,
        )
        for p in positions
    ]
    frame = pd.DataFrame(rows, columns=list(POSITION_COLUMNS))
    frame["position_id"] = pd.array(frame["position_id"].tolist(), dtype="UInt64")
    return frame.sort_values("key", kind="stable").reset_index(drop=True)


def backlog_table(
    positions: pd.DataFrame | Iterable[Position], deliveries: pd.DataFrame
) -> pd.DataFrame:
    """For each position: the last processed message and what is stored after it.

    Parameters
    ----------
    positions : DataFrame or iterable of Position
        :func:`position_table` rows, or the :class:`~rdebug_nb.guilds.Position`
        records themselves.
    deliveries : pandas.DataFrame
        Stored messages of the namespaces involved: a delivery frame (``guild_id``
        = namespace, ``topic``, ``id``, ``timestamp_ms``) or a message frame
        (``topics`` lists are exploded).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`BACKLOG_COLUMNS`, one row per position:
        ``position_id`` / ``position_time`` (the last processed message; its
        stored time, else the time in its GemstoneID), ``position_stored``
        (the topic still holds it), ``entries`` (stored in the topic),
        ``pending_by_id`` (members with a greater id: what RusticAI would
        replay), ``pending_by_time`` (members stored later), ``newest_id`` /
        ``newest_time`` (the topic's latest member) and ``lag_ms`` (newest time
        minus position time when something is pending by time, else 0).
    """
    table = (
        positions if isinstance(positions, pd.DataFrame) else position_table(positions)
    )
    stored = _topic_index(_as_deliveries(deliveries))
    rows = [_backlog_row(row, stored) for row in table.to_dict("records")]
    frame = pd.DataFrame(rows, columns=list(BACKLOG_COLUMNS))
    for column in ("position_id", "newest_id"):
        frame[column] = pd.array(frame[column].tolist(), dtype="UInt64")
    for column in ("position_time", "newest_time"):
        frame[column] = pd.to_datetime(
            pd.array(frame[column].tolist(), dtype="Int64"), unit="ms", utc=True
        )
    frame["lag_ms"] = pd.array(frame["lag_ms"].tolist(), dtype="Int64")
    return frame.astype({"entries": "int64", "position_stored": bool})


class _Topic:
    """The stored members of one topic key, sorted by id and by time."""

    def __init__(self, ids: np.ndarray[Any, Any], stamps: np.ndarray[Any, Any]) -> None:
        by_id = np.argsort(ids, kind="stable")
        self.ids, self.id_stamps = ids[by_id], stamps[by_id]
        self.stamps = np.sort(stamps, kind="stable")
        newest = np.lexsort((ids, stamps))[-1] if len(ids) else None
        self.newest = (
            None if newest is None else (int(ids[newest]), int(stamps[newest]))
        )

    def stamp_of(self, message_id: int) -> int | None:
        at = int(np.searchsorted(self.ids, np.uint64(message_id), side="left"))
        found = at < len(self.ids) and int(self.ids[at]) == message_id
        return int(self.id_stamps[at]) if found else None

    def after_id(self, message_id: int) -> int:
        cut = np.searchsorted(self.ids, np.uint64(message_id), side="right")
        return int(len(self.ids) - cut)

    def after_time(self, stamp: int) -> int:
        return int(len(self.stamps) - np.searchsorted(self.stamps, stamp, side="right"))


_EMPTY: Final = _Topic(np.asarray([], dtype=np.uint64), np.asarray([], dtype=np.int64))


def _as_deliveries(frame: pd.DataFrame) -> pd.DataFrame:
    if "topic" in frame.columns:
        return frame[["guild_id", "topic", "id", "timestamp_ms"]]
    exploded = frame[["guild_id", "topics", "id", "timestamp_ms"]].explode("topics")
    return exploded.rename(columns={"topics": "topic"}).dropna(subset=["topic"])


def _topic_index(deliveries: pd.DataFrame) -> dict[tuple[str, str], _Topic]:
    deliveries = deliveries.drop_duplicates(["guild_id", "topic", "id"])
    index: dict[tuple[str, str], _Topic] = {}
    for (namespace, topic), group in deliveries.groupby(["guild_id", "topic"]):
        ids = to_uint64(group["id"])
        stamps = group["timestamp_ms"].to_numpy(dtype=np.int64)
        index[str(namespace), str(topic)] = _Topic(ids, stamps)
    return index


def _backlog_row(
    position: dict[Hashable, Any], stored: dict[tuple[str, str], _Topic]
) -> tuple[Any, ...]:
    topic = stored.get((position["namespace"], position["topic"]), _EMPTY)
    mid = position["position_id"]
    mid = None if mid is None or mid is pd.NA else int(mid)
    return (
        position["guild_id"],
        position["agent_id"],
        position["namespace"],
        position["topic"],
        mid,
        *_pending(topic, mid),
        position["key"],
    )


def _pending(topic: _Topic, mid: int | None) -> tuple[Any, ...]:
    """Position time, stored?, entries, pending by id / time, newest id / time, lag."""
    newest_id, newest_time = topic.newest or (None, None)
    entries = len(topic.ids)
    if mid is None:
        return None, False, entries, entries, entries, newest_id, newest_time, None
    stamp = topic.stamp_of(mid)
    at = _id_time(mid) if stamp is None else stamp
    by_time = topic.after_time(at)
    lag = newest_time - at if by_time and newest_time is not None else 0
    after = topic.after_id(mid)
    return at, stamp is not None, entries, after, by_time, newest_id, newest_time, lag


def _id_time(message_id: int) -> int:
    return int(decode_ids([message_id])["timestamp_ms"].iloc[0])

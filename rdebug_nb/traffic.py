"""Traffic: how many messages pass through each topic and agent per interval.

Examples
--------
>>> from rdebug_nb.latency import _example_messages
>>> msgs = _example_messages()  # a probe's message and the echo agent's answer
>>> print(throughput(msgs, "1s")[["kind", "name", "messages"]].to_string())
    kind   name  messages
0  agent   echo         1
1  agent  probe         1
2  topic      t         2
"""

from __future__ import annotations

from typing import Final

import pandas as pd

from rdebug_nb.errors import GuildNotFound
from rdebug_nb.latency import home_guilds
from rdebug_nb.messages import require_messages

THROUGHPUT_COLUMNS: Final = ("time", "guild_id", "kind", "name", "messages", "errors")
"""Columns of :func:`throughput`, in order."""

THROUGHPUT_INPUT: Final = (
    "id",
    "guild_id",
    "topics",
    "timestamp",
    "sender_id",
    "is_error",
    "is_dead_letter",
    "process_status",
)
"""Message-frame columns :func:`throughput` reads."""

_KEYS: Final = ["time", "guild_id", "kind", "name"]


def throughput(
    msgs: pd.DataFrame, freq: str = "1s", *, fill: bool = False
) -> pd.DataFrame:
    """Count messages per interval, per topic and per agent.

    Parameters
    ----------
    msgs : pandas.DataFrame
        A message frame (:data:`rdebug_nb.messages.MESSAGE_COLUMNS`), possibly
        concatenated from several guilds.
    freq : str, default "1s"
        Interval length, a pandas offset alias (``"100ms"``, ``"1s"``, ``"1min"``).
    fill : bool, default False
        Also list intervals without messages (zero rows), from the first to the
        last interval of the frame, for every topic and agent.

    Returns
    -------
    pandas.DataFrame
        Long frame, columns :data:`THROUGHPUT_COLUMNS`: ``time`` (interval start,
        UTC), ``guild_id`` (topic: its namespace; agent: its home guild),
        ``kind`` (``"topic"`` or ``"agent"``), ``name`` (topic or agent id),
        ``messages`` and ``errors`` (error messages, error statuses and dead
        letters). Topic rows count each message once per topic it was stored
        under; agent rows count the messages an agent sent, a cross-guild copy
        once.

    Raises
    ------
    InvalidQuery
        If ``msgs`` is not a message frame (a delivery frame is collapsed to
        one row per message first); the message names the missing columns.

    Examples
    --------
    >>> from rdebug_nb.latency import _example_messages
    >>> counts = throughput(_example_messages(), "10ms", fill=True)
    >>> counts.loc[counts["name"] == "t", "messages"].tolist()
    [1, 0, 1]
    """
    msgs = require_messages(msgs, THROUGHPUT_INPUT, "throughput")
    msgs = msgs.reset_index(drop=True)
    frame = pd.concat([_topic_counts(msgs, freq), _agent_counts(msgs, freq)])
    if fill and not frame.empty:
        frame = _filled(frame, freq)
    frame = frame.sort_values(_KEYS, kind="stable").reset_index(drop=True)
    return frame.loc[:, list(THROUGHPUT_COLUMNS)]


def busiest_guild(guilds: pd.DataFrame) -> str:
    """The namespace with the most messages in a guilds table.

    Parameters
    ----------
    guilds : pandas.DataFrame
        ``bus.guilds()``: columns ``namespace`` and ``messages``.

    Returns
    -------
    str
        The namespace (a guild id, or an organisation id) to analyse by default.

    Raises
    ------
    GuildNotFound
        If the table is empty: the server holds no topic key at all.

    Examples
    --------
    >>> busiest_guild(pd.DataFrame({"namespace": ["a", "b"], "messages": [3, 7]}))
    'b'
    """
    if guilds.empty:
        raise GuildNotFound(
            "the server holds no guild: no topic key <guild_id>:<topic> was found. "
            "Connect to the Redis server your guilds use, or open a snapshot of "
            "it with rd.open_snapshot(path)"
        )
    ranked = guilds.sort_values("messages", kind="stable")
    return str(ranked["namespace"].iloc[-1])


def _failed(msgs: pd.DataFrame) -> pd.Series:
    status = msgs["process_status"].astype("object").eq("error").fillna(False)
    return msgs["is_error"].astype(bool) | msgs["is_dead_letter"].astype(bool) | status


def _topic_counts(msgs: pd.DataFrame, freq: str) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "time": msgs["timestamp"].dt.floor(freq),
            "guild_id": msgs["guild_id"],
            "name": msgs["topics"],
            "failed": _failed(msgs),
        }
    ).explode("name")
    return _counts(frame.dropna(subset=["name"]), "topic")


def _agent_counts(msgs: pd.DataFrame, freq: str) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "id": msgs["id"],
            "time": msgs["timestamp"].dt.floor(freq),
            "guild_id": home_guilds(msgs),
            "name": msgs["sender_id"],
            "failed": _failed(msgs),
        }
    ).drop_duplicates("id")
    return _counts(frame, "agent")


def _counts(frame: pd.DataFrame, kind: str) -> pd.DataFrame:
    grouped = frame.assign(kind=kind).groupby(_KEYS, sort=True, dropna=False)
    counts = grouped.agg(messages=("failed", "size"), errors=("failed", "sum"))
    return counts.astype("int64").reset_index()


def _filled(frame: pd.DataFrame, freq: str) -> pd.DataFrame:
    times = pd.date_range(frame["time"].min(), frame["time"].max(), freq=freq)
    series = frame[["guild_id", "kind", "name"]].drop_duplicates()
    grid = series.merge(pd.DataFrame({"time": times}), how="cross")
    full = grid.merge(frame, on=_KEYS, how="left")
    full[["messages", "errors"]] = full[["messages", "errors"]].fillna(0)
    return full.astype({"messages": "int64", "errors": "int64"})

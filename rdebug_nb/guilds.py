"""Guilds and topics: what a scan of the keyspace found, as tables.

:class:`Keyspace` is the plain result of one discovery pass (filled by
:func:`rdebug_nb.discovery.scan_keyspace`); :func:`guild_table` and
:func:`topic_table` turn it into the frames :meth:`rdebug_nb.Bus.guilds` and
:meth:`rdebug_nb.Bus.topics` return.

A namespace is a guild id, or an organisation id whose only topics are
``guild_inbox:<guild id>`` (RusticAI's shared namespace for cross-guild traffic);
the latter has ``kind == "organisation"``.

Examples
--------
>>> space = Keyspace()
>>> space.topic_keys["g:t"] = TopicKey("g:t", "g", "t", 2, 1796300977681.0, None)
>>> space.distinct_ids["g"] = 2
>>> table = guild_table(space)
>>> row = table.iloc[0]
>>> row["namespace"], row["kind"], int(row["topic_keys"]), int(row["deliveries"])
('g', 'guild', 1, 2)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import pandas as pd

from rdebug_nb.keys import ORG_INBOX_PREFIX, PositionKey
from rdebug_nb.messages import Skip

GUILD_COLUMNS: Final = (
    "namespace",
    "kind",
    "topic_keys",
    "deliveries",
    "messages",
    "first_time",
    "last_time",
    "agents",
    "message_keys",
    "positions",
    "has_guild_state",
    "agent_states",
)
"""Columns of :func:`guild_table`."""

TOPIC_COLUMNS: Final = ("topic", "key", "entries", "first_time", "last_time")
"""Columns of :func:`topic_table`."""


@dataclass(frozen=True, slots=True)
class TopicKey:
    """One sorted-set key recognised as a guild topic."""

    key: str
    namespace: str
    topic: str
    entries: int
    first_score: float | None
    last_score: float | None


@dataclass(frozen=True, slots=True)
class Position:
    """One ``eo:pos:*`` key and the id it holds (None if unread or not a number)."""

    name: str
    key: PositionKey
    message_id: int | None


@dataclass
class Keyspace:
    """Everything one discovery pass learned about the keyspace.

    Attributes
    ----------
    topic_keys : dict of str to TopicKey
        Recognised topic keys by key name.
    message_keys : dict of str to int
        Number of ``msg:`` keys per namespace.
    positions : list of Position
        Every delivery-position key.
    guild_states : set of str
        Guild ids with a ``managed_state:<guild>`` hash.
    agent_states : dict of str to list of str
        Agent ids with state, per guild id.
    distinct_ids : dict of str to int
        Distinct message ids per namespace (when counted).
    other_keys : int
        Keys that belong to no known pattern.
    skips : list of Skip
        Keys under a guild prefix that could not be read as what they look like.
    """

    topic_keys: dict[str, TopicKey] = field(default_factory=dict)
    message_keys: dict[str, int] = field(default_factory=dict)
    positions: list[Position] = field(default_factory=list)
    guild_states: set[str] = field(default_factory=set)
    agent_states: dict[str, list[str]] = field(default_factory=dict)
    distinct_ids: dict[str, int] = field(default_factory=dict)
    other_keys: int = 0
    skips: list[Skip] = field(default_factory=list)

    @property
    def namespaces(self) -> set[str]:
        """Namespaces that own a topic key or a ``msg:`` key."""
        return {t.namespace for t in self.topic_keys.values()} | set(self.message_keys)

    def topics_of(self, namespace: str) -> list[TopicKey]:
        """Topic keys of one namespace, sorted by topic."""
        found = [t for t in self.topic_keys.values() if t.namespace == namespace]
        return sorted(found, key=lambda topic: topic.topic)


def guild_table(space: Keyspace) -> pd.DataFrame:
    """One row per namespace: volumes, time span, agents and state keys.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`GUILD_COLUMNS`, sorted by namespace. ``messages`` is
        ``<NA>`` when distinct ids were not counted.
    """
    rows = [_guild_row(space, namespace) for namespace in sorted(space.namespaces)]
    frame = pd.DataFrame(rows, columns=list(GUILD_COLUMNS))
    for column in ("first_time", "last_time"):
        frame[column] = pd.to_datetime(frame[column], unit="ms", utc=True)
    frame["messages"] = frame["messages"].astype("Int64")
    frame.attrs["skips"] = tuple(space.skips)
    return frame


def topic_table(space: Keyspace, namespace: str) -> pd.DataFrame:
    """One row per topic key of a namespace.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TOPIC_COLUMNS`, sorted by topic.
    """
    rows = [
        (t.topic, t.key, t.entries, t.first_score, t.last_score)
        for t in space.topics_of(namespace)
    ]
    frame = pd.DataFrame(rows, columns=list(TOPIC_COLUMNS))
    for column in ("first_time", "last_time"):
        frame[column] = pd.to_datetime(frame[column], unit="ms", utc=True)
    return frame


def kind_of(topics: list[str]) -> str:
    """``"organisation"`` if every topic is a guild inbox, else ``"guild"``.

    >>> kind_of(["guild_inbox:a", "guild_inbox:b"]), kind_of(["default_topic"])
    ('organisation', 'guild')
    """
    if topics and all(topic.startswith(ORG_INBOX_PREFIX) for topic in topics):
        return "organisation"
    return "guild"


def _guild_row(space: Keyspace, namespace: str) -> tuple[object, ...]:
    topics = space.topics_of(namespace)
    firsts = [t.first_score for t in topics if t.first_score is not None]
    lasts = [t.last_score for t in topics if t.last_score is not None]
    agents = sorted(
        {p.key.agent_id for p in space.positions if p.key.guild_id == namespace}
    )
    return (
        namespace,
        kind_of([t.topic for t in topics]),
        len(topics),
        sum(t.entries for t in topics),
        space.distinct_ids.get(namespace),
        min(firsts) if firsts else None,
        max(lasts) if lasts else None,
        agents,
        space.message_keys.get(namespace, 0),
        sum(1 for p in space.positions if p.key.namespace == namespace),
        namespace in space.guild_states,
        sorted(space.agent_states.get(namespace, [])),
    )

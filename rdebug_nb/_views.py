"""Pure builders behind the widgets: tables, one message's view, its links.

Nothing here imports a display library; :mod:`rdebug_nb.widgets` and
:mod:`rdebug_nb._render` turn these values into widgets and HTML.

A message's *parent* is the message it answers: ``in_response_to``, or else the
``origin`` of its last ``message_history`` hop. Its *children* are the messages
whose parent it is, and its *trace* is every message reachable through these
links (the root and everything descending from it), in time order.

Examples
--------
>>> rows = [{"id": 1, "in_response_to": None, "message_history": []},
...         {"id": 2, "in_response_to": 1, "message_history": []},
...         {"id": 3, "in_response_to": None, "message_history": [{"origin": 2}]}]
>>> links = build_links(pd.DataFrame(rows))
>>> links.parents[3], links.children[1], links.trace(3)
(2, (2,), (1, 2, 3))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import pandas as pd

from rdebug_nb._query import is_missing
from rdebug_nb.errors import MessageNotFound
from rdebug_nb.ids import IdParts, decode_id

TABLE_COLUMNS: Final = (
    "time",
    "id",
    "topics",
    "agent",
    "format",
    "priority",
    "status",
    "hops",
    "size",
)
"""Columns of :func:`message_table`: display text, one row per message."""

HEADER_FIELDS: Final = (
    "guild_id",
    "topics",
    "message_topics",
    "timestamp",
    "priority_name",
    "sender_id",
    "sender_name",
    "format",
    "in_response_to",
    "thread",
    "recipients",
    "is_error",
    "is_dead_letter",
    "process_status",
    "conversation_id",
    "ttl",
    "traceparent",
    "forward_header",
    "session_state",
    "origin_guild_stack",
    "enrich_with_history",
    "payload_size",
    "size",
)
"""Message-frame columns shown as header fields of one message."""

STEP_FIELDS: Final = (
    "agent",
    "agent_type",
    "method_name",
    "message_format",
    "destination",
    "process_status",
    "route_times",
    "reason",
)
"""Routing-slip step fields shown per step."""

HOP_FIELDS: Final = (
    "agent",
    "processor",
    "from_topic",
    "to_topics",
    "origin",
    "result",
    "reason",
)
"""``message_history`` hop fields shown per hop."""


@dataclass(frozen=True, slots=True)
class Links:
    """Parent and child links between the messages of one frame.

    Attributes
    ----------
    parents : mapping of int to int
        Message id to the id it answers (only messages that answer one).
    children : mapping of int to tuple of int
        Message id to the ids answering it, in frame order.
    order : mapping of int to int
        Message id to its row position in the frame.
    """

    parents: Mapping[int, int] = field(default_factory=dict)
    children: Mapping[int, tuple[int, ...]] = field(default_factory=dict)
    order: Mapping[int, int] = field(default_factory=dict)

    def trace(self, message_id: int) -> tuple[int, ...]:
        """Every message linked to ``message_id``, from its root down, by row."""
        root = self.root(message_id)
        found, todo = {root}, [root]
        while todo:
            for child in self.children.get(todo.pop(), ()):
                if child not in found:
                    found.add(child)
                    todo.append(child)
        return tuple(sorted(found, key=lambda mid: self.order.get(mid, -1)))

    def root(self, message_id: int) -> int:
        """The oldest ancestor of ``message_id`` present in the frame."""
        current, seen = message_id, {message_id}
        while (parent := self.parents.get(current)) is not None:
            if parent not in self.order or parent in seen:
                break
            seen.add(parent)
            current = parent
        return current


@dataclass(frozen=True, slots=True)
class MessageView:
    """What the inspector shows about one message.

    Attributes
    ----------
    id : int
        The message id, exact.
    id_parts : IdParts
        The id decoded (priority, timestamp, machine id, sequence).
    header : tuple of (str, str)
        Header fields as display text; ids are written in full.
    payload : object
        The decoded payload.
    payload_size : int
        Bytes of the payload JSON.
    routing_steps : tuple of dict
        The routing slip's steps (:data:`STEP_FIELDS`).
    hops : tuple of dict
        ``message_history`` entries, oldest first (:data:`HOP_FIELDS`).
    parent_id : int or None
        The message it answers.
    parent_in_frame : bool
        Whether that parent is in the frame (so the inspector can go there).
    child_ids : tuple of int
        Messages in the frame answering it.
    trace_ids : tuple of int
        Messages in the frame linked to it, root first.
    """

    id: int
    id_parts: IdParts
    header: tuple[tuple[str, str], ...]
    payload: Any
    payload_size: int
    routing_steps: tuple[dict[str, Any], ...]
    hops: tuple[dict[str, Any], ...]
    parent_id: int | None
    parent_in_frame: bool
    child_ids: tuple[int, ...]
    trace_ids: tuple[int, ...]


def build_links(msgs: pd.DataFrame) -> Links:
    """Find each message's parent and children in a message frame.

    Parameters
    ----------
    msgs : pandas.DataFrame
        A message frame; only ``id``, ``in_response_to`` and
        ``message_history`` are read.

    Returns
    -------
    Links
    """
    ids = [int(mid) for mid in msgs["id"].tolist()]
    parents: dict[int, int] = {}
    for mid, answered, history in zip(
        ids,
        msgs["in_response_to"].tolist(),
        msgs["message_history"].tolist(),
        strict=True,
    ):
        parent = try_parent(answered, history)
        if parent is not None and parent != mid:
            parents[mid] = parent
    children: dict[int, list[int]] = {}
    for mid in ids:
        if mid in parents:
            children.setdefault(parents[mid], []).append(mid)
    return Links(
        parents,
        {k: tuple(v) for k, v in children.items()},
        {mid: row for row, mid in enumerate(ids)},
    )


def try_parent(in_response_to: Any, history: Any) -> int | None:
    """The id a message answers: ``in_response_to``, else the last hop's origin.

    >>> try_parent(None, [{"origin": 7, "result": 8}]), try_parent(5, [])
    (7, 5)
    """
    if not is_missing(in_response_to):
        return int(in_response_to)
    if isinstance(history, list) and history and isinstance(history[-1], Mapping):
        origin = history[-1].get("origin")
        return int(origin) if isinstance(origin, int) else None
    return None


def message_table(msgs: pd.DataFrame) -> pd.DataFrame:
    """One display row per message: :data:`TABLE_COLUMNS`, all text.

    Ids are written in full as decimal text (never through a float).

    Examples
    --------
    >>> from rdebug_nb.messages import empty_deliveries, to_messages
    >>> table = message_table(to_messages(empty_deliveries()))
    >>> list(table.columns) == list(TABLE_COLUMNS)
    True
    """
    if msgs.empty:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in TABLE_COLUMNS})
    table = pd.DataFrame(
        {
            "time": [format_time(ms) for ms in msgs["timestamp_ms"].tolist()],
            "id": [str(int(mid)) for mid in msgs["id"].tolist()],
            "topics": [", ".join(t) for t in msgs["topics"].tolist()],
            "agent": [_text(a) for a in msgs["sender_id"].tolist()],
            "format": [short_format(f) for f in msgs["format"].tolist()],
            "priority": [_text(p) for p in msgs["priority_name"].tolist()],
            "status": [_status_text(e, s) for e, s in _errors_and_statuses(msgs)],
            "hops": [str(n) for n in msgs["hop_count"].tolist()],
            "size": [format_size(n) for n in msgs["size"].tolist()],
        },
        index=msgs.index,
    )
    return table


def message_view(
    msgs: pd.DataFrame, message_id: int | str, links: Links | None = None
) -> MessageView:
    """Everything the inspector shows about one message of a frame.

    Parameters
    ----------
    msgs : pandas.DataFrame
        A message frame.
    message_id : int or str
        The id (decimal text is read exactly).
    links : Links, optional
        :func:`build_links` of ``msgs``, when already computed.

    Returns
    -------
    MessageView

    Raises
    ------
    MessageNotFound
        If the frame has no message with that id.
    """
    parts = decode_id(message_id)
    rows = msgs.index[msgs["id"] == parts.id]
    if len(rows) == 0:
        raise MessageNotFound(
            f"message {parts.id} is not in this frame of {len(msgs)} messages; "
            "load its guild and time window first"
        )
    row = msgs.loc[rows[0]]
    links = links or build_links(msgs)
    parent = links.parents.get(parts.id)
    return MessageView(
        id=parts.id,
        id_parts=parts,
        header=tuple((name, field_text(row[name])) for name in HEADER_FIELDS),
        payload=row["payload"],
        payload_size=int(row["payload_size"]),
        routing_steps=_steps(row["routing_slip"]),
        hops=tuple(_pick(h, HOP_FIELDS) for h in row["message_history"] or ()),
        parent_id=parent,
        parent_in_frame=parent is not None and parent in links.order,
        child_ids=links.children.get(parts.id, ()),
        trace_ids=links.trace(parts.id),
    )


def choice_options(values: Sequence[Any]) -> list[tuple[str, str]]:
    """(label, value) pairs for a multiple choice: distinct values with counts.

    >>> choice_options(["a", "b", "a", None])
    [('a (2)', 'a'), ('b (1)', 'b')]
    """
    counts = pd.Series([v for v in values if not is_missing(v)], dtype=object)
    tally = counts.value_counts(sort=False)
    return [(f"{value} ({tally[value]})", str(value)) for value in sorted(tally.index)]


def topic_options(topics: pd.DataFrame) -> list[tuple[str, str]]:
    """(label, topic) pairs for a guild's topics table, with entry counts.

    >>> topic_options(pd.DataFrame({"topic": ["a"], "entries": [3]}))
    [('a (3)', 'a')]
    """
    return [
        (f"{topic} ({entries:,})", str(topic))
        for topic, entries in zip(
            topics["topic"].tolist(), topics["entries"].tolist(), strict=True
        )
    ]


def guild_options(guilds: pd.DataFrame) -> list[tuple[str, str]]:
    """(label, namespace) pairs for the guilds table of a Bus.

    >>> guild_options(pd.DataFrame({"namespace": ["g"], "deliveries": [12]}))
    [('g (12 deliveries)', 'g')]
    """
    return [
        (f"{name} ({count:,} deliveries)", str(name))
        for name, count in zip(
            guilds["namespace"].tolist(), guilds["deliveries"].tolist(), strict=True
        )
    ]


def field_text(value: Any) -> str:
    """Display text of one header value; ints stay exact, missing is empty.

    >>> field_text(9742500132942774272), field_text(None), field_text(["a", "b"])
    ('9742500132942774272', '', 'a, b')
    """
    if is_missing(value):
        return ""
    if isinstance(value, pd.Timestamp):
        return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, list | tuple):
        return ", ".join(field_text(item) for item in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {field_text(v)}" for k, v in value.items())
    return str(value)


def format_time(timestamp_ms: int) -> str:
    """UTC time of day with milliseconds, e.g. ``12:30:12.605``.

    >>> format_time(1796301012605)
    '2026-12-03 12:30:12.605'
    """
    stamp = pd.Timestamp(int(timestamp_ms), unit="ms")
    return stamp.strftime("%Y-%m-%d %H:%M:%S.") + f"{int(timestamp_ms) % 1000:03d}"


def format_size(size: int) -> str:
    """Bytes as short text.

    >>> format_size(532), format_size(66288), format_size(5 * 1024 * 1024)
    ('532 B', '64.7 kB', '5.0 MB')
    """
    value = float(size)
    for unit in ("B", "kB", "MB"):
        if value < 1024 or unit == "MB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} MB"  # pragma: no cover - loop always returns


def short_format(name: Any) -> str:
    """The last part of a qualified format name.

    >>> short_format("acme_agents.orders.OrderConfirmed")
    'OrderConfirmed'
    """
    return _text(name).rsplit(".", 1)[-1]


def _steps(slip: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(slip, Mapping):
        return ()
    return tuple(_pick(step, STEP_FIELDS) for step in slip.get("steps") or ())


def _pick(item: Any, names: Sequence[str]) -> dict[str, Any]:
    if not isinstance(item, Mapping):
        return {"value": item}
    return {name: item.get(name) for name in names}


def _errors_and_statuses(msgs: pd.DataFrame) -> zip[tuple[Any, Any]]:
    return zip(msgs["is_error"].tolist(), msgs["process_status"].tolist(), strict=True)


def _status_text(is_error: Any, status: Any) -> str:
    parts = ["error message"] if bool(is_error) else []
    if not is_missing(status):
        parts.append(str(status))
    return ", ".join(parts)


def _text(value: Any) -> str:
    return "" if is_missing(value) else str(value)

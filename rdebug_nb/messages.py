"""Message frames: stored RusticAI message JSON turned into pandas DataFrames.

Two frames describe a guild's traffic:

*deliveries*
    one row per stored copy, i.e. per (message, topic key): a message published to
    three topics is three deliveries with the same id.
*messages*
    one row per distinct message id, with ``topics`` listing every topic it was
    stored under.

Columns of a message frame (:data:`MESSAGE_COLUMNS`), in order:

==================  ===============  =================================================
column              dtype            meaning
==================  ===============  =================================================
id                  UInt64           the GemstoneID, exact (never a float)
guild_id            str              namespace of the topic keys it was read from
topics              list[str]        topics it was stored under (deliveries: ``topic``)
timestamp           datetime64 UTC   JSON ``timestamp`` (= zset score)
timestamp_ms        int64            the same in Unix milliseconds
priority            uint8            0 URGENT ... 7 LOWEST
priority_name       category         RusticAI's name of the priority
machine_id          uint16           generator number decoded from the id
sequence            uint16           per-millisecond counter decoded from the id
sender_id           str              ``sender.id``
sender_name         str              ``sender.name``
format              str              qualified name of the payload model
message_topics      list[str]        the message's own ``topics`` (string or list)
in_response_to      UInt64           id of the message this one answers, or <NA>
thread              list[int]        ``thread`` ids, root first
thread_root         UInt64           first element of ``thread``
conversation_id     object           int or None
recipients          list[str]        ids in ``recipient_list``
is_error            bool             ``is_error_message``
is_dead_letter      bool             stored by the backend in ``dead_letter_queue``
process_status      object           ``running``, ``completed``, ``error`` or None
hop_count           int64            number of ``message_history`` entries
ttl                 Int64            ``ttl`` (copied along, never enforced)
traceparent         object           W3C traceparent text or None
trace_id            object           its 32-hex trace id, or None
span_id             object           its 16-hex span id, or None
trace_flags         object           its 2-hex flags, or None
payload             dict             the payload, decoded
payload_size        int64            bytes of the payload JSON
size                int64            bytes of the whole stored member
routing_slip        object           dict or None, as stored
message_history     list[dict]       hops, oldest first, as stored
forward_header      object           dict or None, as stored
session_state       object           dict or None, as stored
origin_guild_stack  list[dict]       cross-guild saga stack, as stored
enrich_with_history int64            as stored
==================  ===============  =================================================

Entries that cannot be read are skipped and described by :class:`Skip` records in
``frame.attrs["skips"]`` (see :func:`skips`); nothing else in the frame changes.

Examples
--------
>>> member = (
...     b'{"sender":{"id":"probe","name":"Probe"},"topics":"t","recipient_list":[],'
...     b'"payload":{"n":1},"format":"generic_json","in_response_to":null,'
...     b'"thread":[9742500110020915200],"conversation_id":null,"forward_header":null,'
...     b'"routing_slip":null,"message_history":[],"ttl":null,"is_error_message":false,'
...     b'"traceparent":null,"session_state":null,"topic_published_to":"t",'
...     b'"enrich_with_history":0,"process_status":null,"origin_guild_stack":[],'
...     b'"id":9742500110020915200,"priority":4,"timestamp":1796300977681.0}'
... )
>>> deliveries = decode_deliveries("g", [("g:t", "t", [member, b"not json"])])
>>> int(deliveries["id"][0]), len(skips(deliveries))
(9742500110020915200, 1)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import numpy as np
import pandas as pd

from rdebug_nb.ids import PRIORITY_NAMES, priority_names
from rdebug_nb.keys import DEAD_LETTER_TOPIC

MESSAGE_COLUMNS: Final = (
    "id",
    "guild_id",
    "topics",
    "timestamp",
    "timestamp_ms",
    "priority",
    "priority_name",
    "machine_id",
    "sequence",
    "sender_id",
    "sender_name",
    "format",
    "message_topics",
    "in_response_to",
    "thread",
    "thread_root",
    "conversation_id",
    "recipients",
    "is_error",
    "is_dead_letter",
    "process_status",
    "hop_count",
    "ttl",
    "traceparent",
    "trace_id",
    "span_id",
    "trace_flags",
    "payload",
    "payload_size",
    "size",
    "routing_slip",
    "message_history",
    "forward_header",
    "session_state",
    "origin_guild_stack",
    "enrich_with_history",
)
"""Columns of a message frame, in order."""

DELIVERY_COLUMNS: Final = (
    "id",
    "guild_id",
    "topic",
    "key",
    "topic_published_to",
    *MESSAGE_COLUMNS[3:],
)
"""Columns of a delivery frame, in order."""

_DERIVED: Final = frozenset({"timestamp", "priority_name", "machine_id", "sequence"})
_APPENDED: Final = tuple(name for name in DELIVERY_COLUMNS if name not in _DERIVED)
_U64_MAX: Final = (1 << 64) - 1
_EXCERPT: Final = 120


@dataclass(frozen=True, slots=True)
class Skip:
    """One stored entry that could not be read.

    Attributes
    ----------
    key : str
        The Redis key it was stored under.
    reason : str
        Why it was skipped.
    excerpt : str
        The first characters of the entry, for finding it.
    """

    key: str
    reason: str
    excerpt: str = ""


class _Tag(msgspec.Struct):
    id: str | None
    name: str | None


class _Envelope(msgspec.Struct):
    sender: _Tag
    topics: str | list[str]
    recipient_list: list[_Tag]
    payload: msgspec.Raw
    format: str
    in_response_to: int | None
    thread: list[int]
    conversation_id: int | None
    forward_header: dict[str, Any] | None
    routing_slip: dict[str, Any] | None
    message_history: list[dict[str, Any]]
    ttl: int | None
    is_error_message: bool
    traceparent: str | None
    session_state: dict[str, Any] | None
    topic_published_to: str | None
    enrich_with_history: int
    process_status: str | None
    origin_guild_stack: list[dict[str, Any]]
    id: int
    priority: int
    timestamp: float


_DECODER: Final = msgspec.json.Decoder(_Envelope)
_PAYLOAD_DECODER: Final = msgspec.json.Decoder(dict[str, Any])


class _Rows:
    """Column lists filled one decoded delivery at a time."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {name: [] for name in _APPENDED}
        self.skips: list[Skip] = []

    def add(self, namespace: str, key: str, topic: str, member: bytes) -> None:
        try:
            message, payload = _decode(member)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as err:
            self.skips.append(Skip(key, _reason(err), _excerpt(member)))
            return
        self._append(namespace, key, topic, member, message, payload)

    def _append(
        self,
        namespace: str,
        key: str,
        topic: str,
        member: bytes,
        message: _Envelope,
        payload: dict[str, Any],
    ) -> None:
        cols = self.columns
        cols["id"].append(message.id)
        cols["guild_id"].append(namespace)
        cols["topic"].append(topic)
        cols["key"].append(key)
        cols["topic_published_to"].append(message.topic_published_to)
        cols["timestamp_ms"].append(int(message.timestamp))
        cols["priority"].append(message.priority)
        cols["sender_id"].append(message.sender.id)
        cols["sender_name"].append(message.sender.name)
        cols["format"].append(message.format)
        cols["message_topics"].append(_as_list(message.topics))
        cols["in_response_to"].append(message.in_response_to)
        cols["thread"].append(message.thread)
        cols["thread_root"].append(message.thread[0] if message.thread else None)
        cols["conversation_id"].append(message.conversation_id)
        cols["recipients"].append([tag.id for tag in message.recipient_list])
        cols["is_error"].append(message.is_error_message)
        cols["is_dead_letter"].append(_is_dead_letter(message, topic))
        cols["process_status"].append(message.process_status)
        cols["hop_count"].append(len(message.message_history))
        cols["ttl"].append(message.ttl)
        cols["traceparent"].append(message.traceparent)
        trace = parse_traceparent(message.traceparent)
        cols["trace_id"].append(trace[0])
        cols["span_id"].append(trace[1])
        cols["trace_flags"].append(trace[2])
        cols["payload"].append(payload)
        cols["payload_size"].append(len(message.payload))
        cols["size"].append(len(member))
        cols["routing_slip"].append(message.routing_slip)
        cols["message_history"].append(message.message_history)
        cols["forward_header"].append(message.forward_header)
        cols["session_state"].append(message.session_state)
        cols["origin_guild_stack"].append(message.origin_guild_stack)
        cols["enrich_with_history"].append(message.enrich_with_history)


def decode_deliveries(
    namespace: str, entries: Iterable[tuple[str, str, Sequence[bytes]]]
) -> pd.DataFrame:
    """Decode stored members into a delivery frame.

    Parameters
    ----------
    namespace : str
        The guild id (or organisation id) the keys belong to.
    entries : iterable of (key, topic, members)
        For each topic key, its un-namespaced topic and its members as bytes.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`DELIVERY_COLUMNS`, one row per readable member, sorted by
        timestamp then id; unreadable members are in ``attrs["skips"]``.
    """
    rows = _Rows()
    for key, topic, members in entries:
        for member in members:
            rows.add(namespace, key, topic, member)
    return _delivery_frame(rows)


def to_messages(deliveries: pd.DataFrame) -> pd.DataFrame:
    """Collapse a delivery frame to one row per message id.

    The first stored copy of each id is kept; ``topics`` lists every topic it was
    stored under, in the order the message names them.

    Examples
    --------
    >>> frame = to_messages(empty_deliveries())
    >>> list(frame.columns) == list(MESSAGE_COLUMNS), len(frame)
    (True, 0)
    """
    topics = _stored_topics(deliveries)
    first = deliveries.drop_duplicates("id", keep="first").copy()
    first["topics"] = [topics[int(mid)] for mid in first["id"]]
    frame = first.loc[:, list(MESSAGE_COLUMNS)].reset_index(drop=True)
    frame.attrs = dict(deliveries.attrs)
    return frame


def empty_deliveries() -> pd.DataFrame:
    """Return a delivery frame with no rows and the documented dtypes."""
    return _delivery_frame(_Rows())


def skips(frame: pd.DataFrame) -> pd.DataFrame:
    """Return the entries skipped while loading ``frame`` as a DataFrame.

    Columns are ``key``, ``reason`` and ``excerpt``; empty if nothing was skipped.
    """
    records = frame.attrs.get("skips", ())
    return pd.DataFrame(
        [(s.key, s.reason, s.excerpt) for s in records],
        columns=["key", "reason", "excerpt"],
    )


def parse_traceparent(value: str | None) -> tuple[str | None, str | None, str | None]:
    """Split a W3C traceparent into (trace id, span id, flags).

    Values that are not W3C traceparents (``None``, ``"no_tracing"``) give Nones.

    >>> parse_traceparent("00-f9ab4d86775d0e41be45876b797b82f6-b33ddcbc71284310-03")
    ('f9ab4d86775d0e41be45876b797b82f6', 'b33ddcbc71284310', '03')
    >>> parse_traceparent("no_tracing")
    (None, None, None)
    """
    parts = value.split("-") if value else []
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None, None, None
    return parts[1], parts[2], parts[3]


def _decode(member: bytes) -> tuple[_Envelope, dict[str, Any]]:
    message = _DECODER.decode(member)
    _check(message)
    return message, _PAYLOAD_DECODER.decode(message.payload)


def _check(message: _Envelope) -> None:
    if not 0 <= message.id <= _U64_MAX:
        raise ValueError(f"id {message.id} is not an unsigned 64-bit GemstoneID")
    if not 0 <= message.priority < len(PRIORITY_NAMES):
        raise ValueError(f"priority {message.priority} is not 0..7")
    if message.timestamp != message.timestamp or abs(message.timestamp) > 2**53:
        raise ValueError(f"timestamp {message.timestamp} is not a millisecond time")
    for value in (message.in_response_to, *message.thread):
        if value is not None and not 0 <= value <= _U64_MAX:
            raise ValueError(f"referenced id {value} is not an unsigned 64-bit id")


def _reason(err: Exception) -> str:
    if isinstance(err, msgspec.ValidationError):
        return f"not a RusticAI message: {err}"
    if isinstance(err, msgspec.DecodeError):
        return f"not JSON: {err}"
    return f"invalid message: {err}"


def _excerpt(member: bytes) -> str:
    return member[:_EXCERPT].decode("utf-8", errors="replace")


def _as_list(topics: str | list[str]) -> list[str]:
    return [topics] if isinstance(topics, str) else topics


def _is_dead_letter(message: _Envelope, topic: str) -> bool:
    return topic == DEAD_LETTER_TOPIC and message.topic_published_to is None


def _stored_topics(deliveries: pd.DataFrame) -> dict[int, list[str]]:
    stored: dict[int, list[str]] = {}
    for mid, topic in zip(
        deliveries["id"].tolist(), deliveries["topic"].tolist(), strict=True
    ):
        stored.setdefault(mid, []).append(topic)
    declared = dict(
        zip(
            deliveries["id"].tolist(),
            deliveries["message_topics"].tolist(),
            strict=False,
        )
    )
    return {mid: _ordered(topics, declared[mid]) for mid, topics in stored.items()}


def _ordered(stored: list[str], declared: list[str]) -> list[str]:
    unique = list(dict.fromkeys(stored))
    rank = {topic: index for index, topic in enumerate(declared)}
    return sorted(unique, key=lambda topic: (rank.get(topic, len(rank)), topic))


def _delivery_frame(rows: _Rows) -> pd.DataFrame:
    cols = rows.columns
    stamp = np.asarray(cols["timestamp_ms"], dtype=np.int64)
    ids = np.asarray(cols["id"], dtype=np.uint64)
    frame = pd.DataFrame({name: _column(name, values) for name, values in cols.items()})
    frame["id"] = pd.array(ids, dtype="UInt64")
    frame["timestamp"] = pd.to_datetime(stamp, unit="ms", utc=True)
    frame["priority"] = np.asarray(cols["priority"], dtype=np.uint8)
    frame["priority_name"] = priority_names(frame["priority"].to_numpy())
    frame["machine_id"] = ((ids >> np.uint64(12)) & np.uint64(0x3FF)).astype(np.uint16)
    frame["sequence"] = (ids & np.uint64(0xFFF)).astype(np.uint16)
    frame = frame.loc[:, list(DELIVERY_COLUMNS)]
    frame = frame.sort_values(["timestamp_ms", "id", "topic"], kind="stable")
    frame = frame.reset_index(drop=True)
    frame.attrs["skips"] = tuple(rows.skips)
    return frame


_NULLABLE_IDS: Final = frozenset({"in_response_to", "thread_root"})
_INTS: Final = frozenset(
    {"hop_count", "payload_size", "size", "enrich_with_history", "timestamp_ms"}
)
_BOOLS: Final = frozenset({"is_error", "is_dead_letter"})
_STRINGS: Final = frozenset({"guild_id", "topic", "key", "sender_id", "format"})


def _column(name: str, values: list[Any]) -> Any:
    if name in _NULLABLE_IDS:
        return pd.array(values, dtype="UInt64")
    if name == "ttl":
        return pd.array(values, dtype="Int64")
    if name in _INTS:
        return np.asarray(values, dtype=np.int64)
    if name in _BOOLS:
        return np.asarray(values, dtype=bool)
    if name in _STRINGS:
        return pd.array(values, dtype=object)
    return _objects(values)


def _objects(values: list[Any]) -> np.ndarray[Any, Any]:
    return np.fromiter(values, dtype=object, count=len(values))


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message as found in Redis, with every stored copy.

    Attributes
    ----------
    guild_id : str
        The namespace it was found in.
    id : int
        Its GemstoneID.
    copies : tuple of (str, bytes)
        (topic, stored JSON) for each topic key holding it; when the topic keys
        hold no copy, the ``msg:`` key's copy under its ``topic_published_to``.
    has_message_key : bool
        Whether the ``msg:<guild>:<id>`` key still exists (it expires).
    """

    guild_id: str
    id: int
    copies: tuple[tuple[str, bytes], ...]
    has_message_key: bool

    def __repr__(self) -> str:
        expired = "" if self.has_message_key else ", msg: key expired"
        where = f"{self.guild_id!r} on {self.topics}"
        return f"<StoredMessage {self.id} in {where}{expired}>"

    @property
    def topics(self) -> list[str]:
        """Topics holding a copy."""
        return [topic for topic, _ in self.copies]

    @property
    def raw(self) -> bytes:
        """The stored JSON of the first copy, byte for byte."""
        return self.copies[0][1]

    @property
    def data(self) -> dict[str, Any]:
        """The message as a dict; ids stay exact Python ints."""
        decoded: dict[str, Any] = msgspec.json.decode(self.raw)
        return decoded

    def to_frame(self) -> pd.DataFrame:
        """The message as a one-row message frame."""
        entries = [
            (f"{self.guild_id}:{topic}", topic, [raw]) for topic, raw in self.copies
        ]
        return to_messages(decode_deliveries(self.guild_id, entries))


def summarize(msgs: pd.DataFrame) -> pd.Series:
    """The first numbers a reader asks for about a message frame.

    Returns
    -------
    pandas.Series
        ``messages``, ``deliveries`` (stored copies), ``topics``, ``agents``
        (distinct senders), ``errors`` (error messages), ``dead_letters``,
        ``first`` and ``last`` (timestamps).

    Examples
    --------
    >>> summarize(to_messages(empty_deliveries()))["messages"]
    0
    """
    topics = {topic for listed in msgs["topics"] for topic in listed}
    stamps = msgs["timestamp"]
    return pd.Series(
        {
            "messages": len(msgs),
            "deliveries": int(sum(len(listed) for listed in msgs["topics"])),
            "topics": len(topics),
            "agents": int(msgs["sender_id"].nunique()),
            "errors": int(msgs["is_error"].sum()),
            "dead_letters": int(msgs["is_dead_letter"].sum()),
            "first": stamps.min() if len(msgs) else None,
            "last": stamps.max() if len(msgs) else None,
        },
        dtype=object,
    )

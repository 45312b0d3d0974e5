"""Message filters shared by the inspector and the tail (pure data, no display).

A :class:`MessageFilter` selects messages by topic, agent, format, error and
process status, priority, a time window and a query. A query is either free text
(a case-insensitive search in the payload, sender, format, topics and id) or one
or more ``field op value`` conditions joined by ``and``::

    payload.order_id == "ORD-0001"
    sender_id == pricing and payload.total > 100
    format ~ OrderRejected

Queries are parsed here, token by token; no data or user text is ever evaluated
as Python. ``field`` is a column of a message frame (``sender_id``, ``format``,
``priority``, ``id`` ...) or one of the aliases ``agent``, ``sender``, ``topic``,
``error``, ``status``, ``time``, optionally followed by a dotted path into its
value (``payload.items.0.sku``, ``message_history.0.agent.id``). Operators are
``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=`` and ``~`` (contains, ignoring
case). Values are JSON-like literals: quoted strings, integers (exact, so ids
work), decimals, ``true``, ``false``, ``null``; a bare word is a string.

Examples
--------
>>> row = {"sender_id": "pricing", "payload": {"order_id": "ORD-0001", "total": 120.5}}
>>> parse_query('payload.order_id == "ORD-0001"').matches(row)
True
>>> MessageFilter(query="agent == pricing and payload.total > 100").matches(row)
True
>>> MessageFilter(agents=("validator",)).matches(row)
False
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, cast

import msgspec
import numpy as np
import pandas as pd

from rdebug_nb.errors import InvalidQuery
from rdebug_nb.messages import MESSAGE_COLUMNS

ErrorChoice = Literal["all", "errors", "no errors"]

OPERATORS: Final = ("==", "!=", "<=", ">=", "<", ">", "~")
"""Comparison operators a query condition may use."""

FIELD_ALIASES: Final = {
    "agent": "sender_id",
    "sender": "sender_id",
    "sender.id": "sender_id",
    "sender.name": "sender_name",
    "topic": "topics",
    "error": "is_error",
    "is_error_message": "is_error",
    "status": "process_status",
    "recipient_list": "recipients",
    "time": "timestamp",
}
"""Query names that stand for a message-frame column."""

NO_STATUS: Final = "none"
"""The process-status choice that selects messages without a process status."""

_TOKEN: Final = re.compile(
    r"""\s*(?:(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')"""
    r"""|(?P<op>==|!=|<=|>=|<|>|~)|(?P<word>[^\s=!<>~"']+))"""
)
_INTEGER: Final = re.compile(r"[+-]?\d+")
_DECIMAL: Final = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")
_KEYWORDS: Final = {"true": True, "false": False, "null": None, "none": None}
_MISSING: Final = object()
_TEXT_FIELDS: Final = ("sender_id", "sender_name", "format", "topics", "id")


@dataclass(frozen=True, slots=True)
class Condition:
    """One ``field op value`` test.

    Attributes
    ----------
    path : tuple of str
        The column, then keys or list indexes inside its value.
    op : str
        One of :data:`OPERATORS`.
    value : object
        The literal, parsed (str, int, float, bool or None).
    text : str
        The literal as written, without quotes.
    """

    path: tuple[str, ...]
    op: str
    value: Any
    text: str

    def matches(self, row: Mapping[str, Any]) -> bool:
        """Whether ``row`` (a message-frame record) passes this test."""
        found = _resolve(row, self.path)
        if self.path == ("timestamp",):
            found = _time_ms(row)
        if self.op == "!=":
            return not _compare(found, "==", self.value, self.text, self.path)
        return _compare(found, self.op, self.value, self.text, self.path)


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed query: conditions that must all hold, or free text.

    Attributes
    ----------
    conditions : tuple of Condition
        All must hold.
    text : str
        Lower-cased free text to search for, when the query has no operator.
    """

    conditions: tuple[Condition, ...] = ()
    text: str = ""

    @property
    def columns(self) -> set[str]:
        """The message-frame columns the query reads."""
        if self.text:
            return {"payload", *_TEXT_FIELDS}
        roots = {c.path[0] for c in self.conditions}
        return roots | ({"timestamp_ms"} if "timestamp" in roots else set())

    def matches(self, row: Mapping[str, Any]) -> bool:
        """Whether ``row`` passes the query."""
        if self.text:
            return self.text in _search_text(row)
        return all(condition.matches(row) for condition in self.conditions)


@dataclass(frozen=True, slots=True)
class MessageFilter:
    """Which messages to show; an empty filter shows everything.

    Attributes
    ----------
    topics, agents, formats : tuple of str
        Keep messages stored under one of these topics / sent by one of these
        agent ids / of one of these formats (empty: all).
    errors : {"all", "errors", "no errors"}
        Error messages only, or none of them.
    statuses : tuple of str
        Process statuses to keep (``"none"`` for messages without one).
    priorities : tuple of int
        Priorities to keep.
    since, until : int or None
        Time window on the message timestamp, Unix milliseconds, inclusive.
    query : str
        Free text or ``field op value`` conditions (see the module docstring).
    """

    topics: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    formats: tuple[str, ...] = ()
    errors: ErrorChoice = "all"
    statuses: tuple[str, ...] = ()
    priorities: tuple[int, ...] = ()
    since: int | None = None
    until: int | None = None
    query: str = ""

    def __post_init__(self) -> None:
        parse_query(self.query)
        if self.errors not in ("all", "errors", "no errors"):
            raise InvalidQuery(
                f"errors={self.errors!r} is not one of 'all', 'errors', 'no errors'"
            )

    @property
    def is_empty(self) -> bool:
        """Whether the filter lets every message through."""
        return self == MessageFilter()

    def matches(self, row: Mapping[str, Any]) -> bool:
        """Whether one message-frame record passes the filter."""
        return _passes_columns(self, row) and parse_query(self.query).matches(row)


@functools.lru_cache(maxsize=128)
def parse_query(text: str) -> Query:
    """Parse a query into conditions (or free text) without evaluating anything.

    Parameters
    ----------
    text : str
        Free text, or ``field op value`` conditions joined by ``and``.

    Returns
    -------
    Query

    Raises
    ------
    InvalidQuery
        If the text has an operator but is not a list of conditions, or names a
        field no message has.

    Examples
    --------
    >>> parse_query("id == 9742500132942774272").conditions[0].value
    9742500132942774272
    >>> parse_query("Hooli").text
    'hooli'
    >>> try:
    ...     parse_query("payload.total >")
    ... except InvalidQuery as err:
    ...     print(str(err).split(";")[0])
    query 'payload.total >' ends after '>'
    """
    tokens = _tokenize(text)
    if not any(kind == "op" for kind, _ in tokens):
        return Query(text=text.strip().lower())
    conditions: list[Condition] = []
    rest = tokens
    while rest:
        condition, rest = _condition(text, rest)
        conditions.append(condition)
        if rest and not (rest[0][0] == "word" and rest[0][1].lower() == "and"):
            raise InvalidQuery(
                f"query {text!r}: expected 'and' before {rest[0][1]!r}; "
                "conditions are joined with 'and'"
            )
        rest = rest[1:]
        if not rest and tokens[-1][1].lower() == "and":
            raise InvalidQuery(f"query {text!r} ends with 'and'; add a condition")
    return Query(conditions=tuple(conditions))


def filter_messages(frame: pd.DataFrame, flt: MessageFilter) -> pd.DataFrame:
    """Keep the rows of a message frame that pass ``flt``.

    Parameters
    ----------
    frame : pandas.DataFrame
        A message frame (:data:`rdebug_nb.messages.MESSAGE_COLUMNS`).
    flt : MessageFilter

    Returns
    -------
    pandas.DataFrame
        The passing rows, in order, index kept.

    Examples
    --------
    >>> from rdebug_nb.messages import empty_deliveries, to_messages
    >>> len(filter_messages(to_messages(empty_deliveries()), MessageFilter(query="x")))
    0
    """
    if flt.is_empty or frame.empty:
        return frame
    mask = _column_mask(frame, flt)
    query = parse_query(flt.query)
    if query.conditions or query.text:
        columns = [c for c in frame.columns if c in query.columns]
        rows = cast("list[dict[str, Any]]", frame.loc[mask, columns].to_dict("records"))
        hits = [query.matches(row) for row in rows]
        mask[np.flatnonzero(mask)[~np.array(hits, dtype=bool)]] = False
    return frame.loc[mask]


def message_row(data: Mapping[str, Any], topic: str) -> dict[str, Any]:
    """Turn one decoded message JSON into a record with message-frame names.

    The record has the columns a filter reads (``topics`` is the topic it was
    stored under); every other JSON field keeps its name.

    Examples
    --------
    >>> row = message_row({"sender": {"id": "a", "name": "A"}, "topics": "t",
    ...                    "is_error_message": False, "timestamp": 5.0}, "t")
    >>> row["sender_id"], row["topics"], row["message_topics"], row["timestamp_ms"]
    ('a', ['t'], ['t'], 5)
    """
    sender = data.get("sender") or {}
    declared = data.get("topics")
    row = dict(data)
    row.update(
        sender_id=sender.get("id"),
        sender_name=sender.get("name"),
        topics=[topic],
        message_topics=[declared] if isinstance(declared, str) else declared,
        is_error=bool(data.get("is_error_message")),
        recipients=[r.get("id") for r in data.get("recipient_list") or ()],
        timestamp_ms=int(data.get("timestamp") or 0),
    )
    return row


def to_ms(value: datetime | pd.Timestamp | str | int | float | None) -> int | None:
    """Convert a time bound to Unix milliseconds (naive times are UTC).

    Empty text and None give None.

    Raises
    ------
    InvalidQuery
        If a text is not a date and time.

    Examples
    --------
    >>> to_ms("2026-12-03T12:30:00Z")
    1796301000000
    >>> to_ms("") is None, to_ms(5)
    (True, 5)
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as err:
        raise InvalidQuery(
            f"{value!r} is not a time; write e.g. 2026-12-03T12:30 (UTC)"
        ) from err
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp
    return int(stamp.value // 1_000_000)


def is_missing(value: Any) -> bool:
    """Whether a frame value is missing (None, NaN, ``pd.NA``).

    >>> is_missing(float("nan")), is_missing(pd.NA), is_missing(0)
    (True, True, False)
    """
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    stripped = text.rstrip()
    while position < len(stripped):
        match = _TOKEN.match(stripped, position)
        if match is None or match.end() == position:
            raise InvalidQuery(
                f"query {text!r}: cannot read {stripped[position:]!r} "
                "(an unclosed quote or a lone '!' or '=')"
            )
        kind = str(match.lastgroup)
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


def _condition(
    text: str, tokens: list[tuple[str, str]]
) -> tuple[Condition, list[tuple[str, str]]]:
    if len(tokens) < 3:
        last = tokens[-1][1]
        raise InvalidQuery(
            f"query {text!r} ends after {last!r}; write field op value, "
            'e.g. payload.order_id == "ORD-0001"'
        )
    (field_kind, field), (op_kind, op), (value_kind, value) = tokens[:3]
    if field_kind != "word" or op_kind != "op" or value_kind == "op":
        raise InvalidQuery(
            f"query {text!r}: expected field op value near {field!r} {op!r} "
            f"{value!r}, e.g. sender_id == pricing"
        )
    parsed, literal = _literal(value_kind, value)
    return Condition(_path(text, field), op, parsed, literal), tokens[3:]


def _path(text: str, field: str) -> tuple[str, ...]:
    name = FIELD_ALIASES.get(field, field)
    head, *rest = name.split(".")
    head = FIELD_ALIASES.get(head, head)
    if head not in MESSAGE_COLUMNS and head not in _JSON_FIELDS:
        raise InvalidQuery(
            f"query {text!r}: no message has a field {head!r}; use a message-frame "
            f"column ({', '.join(MESSAGE_COLUMNS[:12])} ...) or payload.<key>"
        )
    return (head, *rest)


def _literal(kind: str, token: str) -> tuple[Any, str]:
    if kind == "string":
        body = token[1:-1]
        return re.sub(r"\\(.)", r"\1", body), re.sub(r"\\(.)", r"\1", body)
    lowered = token.lower()
    if lowered in _KEYWORDS:
        return _KEYWORDS[lowered], token
    if _INTEGER.fullmatch(token):
        return int(token), token
    if _DECIMAL.fullmatch(token):
        return float(token), token
    return token, token


def _resolve(row: Mapping[str, Any], path: Sequence[str]) -> Any:
    value: Any = row.get(path[0], _MISSING)
    for step in path[1:]:
        if isinstance(value, Mapping):
            value = value.get(step, _MISSING)
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            return _MISSING
    return None if value is not _MISSING and is_missing(value) else value


def _time_ms(row: Mapping[str, Any]) -> Any:
    if "timestamp_ms" in row:
        return int(row["timestamp_ms"])
    stamp = row.get("timestamp")
    return _MISSING if stamp is None else to_ms(stamp)


def _compare(found: Any, op: str, value: Any, text: str, path: Sequence[str]) -> bool:
    if found is _MISSING:
        return False
    if path == ("timestamp",) and isinstance(value, str):
        value = to_ms(value)
    if isinstance(found, list | tuple) and len(path) == 1:
        return any(_compare_one(item, op, value, text) for item in found)
    return _compare_one(found, op, value, text)


def _compare_one(found: Any, op: str, value: Any, text: str) -> bool:
    if op == "~":
        return text.lower() in _as_text(found).lower()
    if op == "==":
        return _equal(found, value, text)
    pair = _ordered_pair(found, value)
    if pair is None:
        return False
    left, right = pair
    if op == "<":
        return bool(left < right)
    if op == "<=":
        return bool(left <= right)
    if op == ">":
        return bool(left > right)
    return bool(left >= right)


def _equal(found: Any, value: Any, text: str) -> bool:
    if isinstance(found, bool) or isinstance(value, bool):
        return isinstance(found, bool) and isinstance(value, bool) and found == value
    if found is None or value is None:
        return found is None and value is None
    if _is_number(found) and _is_number(value):
        return bool(found == value)
    if isinstance(found, str):
        return found == (value if isinstance(value, str) else text)
    return False


def _ordered_pair(found: Any, value: Any) -> tuple[Any, Any] | None:
    if _is_number(found) and _is_number(value):
        return found, value
    if isinstance(found, str) and isinstance(value, str):
        return found, value
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping | list | tuple):
        return msgspec.json.encode(value, enc_hook=str).decode()
    return str(value)


def _search_text(row: Mapping[str, Any]) -> str:
    parts = [_as_text(row.get(name, "")) for name in _TEXT_FIELDS]
    parts.append(_as_text(row.get("payload", "")))
    return "\n".join(parts).lower()


def _passes_columns(flt: MessageFilter, row: Mapping[str, Any]) -> bool:
    checks = (
        not flt.topics or bool(set(row.get("topics") or ()) & set(flt.topics)),
        not flt.agents or row.get("sender_id") in flt.agents,
        not flt.formats or row.get("format") in flt.formats,
        flt.errors == "all" or bool(row.get("is_error")) == (flt.errors == "errors"),
        not flt.statuses or _status(row.get("process_status")) in flt.statuses,
        not flt.priorities or row.get("priority") in flt.priorities,
        _in_window(flt, _time_ms(row)),
    )
    return all(checks)


def _column_mask(frame: pd.DataFrame, flt: MessageFilter) -> np.ndarray[Any, Any]:
    mask = np.ones(len(frame), dtype=bool)
    if flt.topics:
        wanted = set(flt.topics)
        mask &= np.array([bool(wanted & set(t)) for t in frame["topics"]], dtype=bool)
    if flt.agents:
        mask &= frame["sender_id"].isin(flt.agents).to_numpy()
    if flt.formats:
        mask &= frame["format"].isin(flt.formats).to_numpy()
    if flt.errors != "all":
        mask &= frame["is_error"].to_numpy(dtype=bool) == (flt.errors == "errors")
    if flt.statuses:
        statuses = [_status(s) in flt.statuses for s in frame["process_status"]]
        mask &= np.array(statuses, dtype=bool)
    if flt.priorities:
        mask &= frame["priority"].isin(flt.priorities).to_numpy()
    stamps = frame["timestamp_ms"].to_numpy()
    if flt.since is not None:
        mask &= stamps >= flt.since
    if flt.until is not None:
        mask &= stamps <= flt.until
    return mask


def _in_window(flt: MessageFilter, stamp: Any) -> bool:
    if flt.since is None and flt.until is None:
        return True
    if stamp is _MISSING or stamp is None:
        return False
    low = flt.since if flt.since is not None else stamp
    high = flt.until if flt.until is not None else stamp
    return bool(low <= stamp <= high)


def _status(value: Any) -> str:
    return NO_STATUS if is_missing(value) else str(value)


def statuses_of(values: Iterable[Any]) -> list[str]:
    """The distinct process-status choices of some messages, ``"none"`` last.

    >>> statuses_of(["running", None, "error", "running"])
    ['error', 'running', 'none']
    """
    found = {_status(v) for v in values}
    return sorted(found - {NO_STATUS}) + ([NO_STATUS] if NO_STATUS in found else [])


_JSON_FIELDS: Final = frozenset(
    {"sender", "recipient_list", "is_error_message", "topic_published_to"}
)

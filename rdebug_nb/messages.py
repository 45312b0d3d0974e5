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
payload             json             the payload: a dict, decoded when first read
payload_size        int64            bytes of the payload JSON
size                int64            bytes of the whole stored member
routing_slip        json             dict or None, as stored
message_history     json             hops (list of dicts), oldest first, as stored
forward_header      json             dict or None, as stored
session_state       json             dict or None, as stored
origin_guild_stack  json             cross-guild saga stack (list of dicts), as stored
enrich_with_history int64            as stored
raw                 bytes            the stored JSON, byte for byte (messages: the
                                     first stored copy)
==================  ===============  =================================================

``str`` columns are pandas' string dtype (missing values are NaN); ``object``
columns hold Python values (missing values are None).

The six nested columns have the ``json`` dtype (:class:`JsonDtype`): a load keeps
their stored JSON text and decodes a value the first time it is read, once, so
nested values nobody looks at cost nothing. Reading gives plain Python values,
exactly what ``json.loads`` gives (with exact integers): ``frame["payload"][0]``,
``.at``, a row of ``.iloc``, ``.tolist()``, iteration, ``.map`` / ``.apply``,
``.to_dict()`` and ``.astype(object)`` (which decodes a whole column) all give
``dict`` / ``list`` / ``None`` values; ``.isna()`` is true for JSON ``null``.
Comparing, copying, pickling, ``pd.concat`` and ``.explode()`` work as on an
object column. A value read is cached, so the same dict comes back each time and
edits to it stay.

The ``raw`` column holds the stored member each row was decoded from, so an
export can write it back byte for byte. It costs a pointer per row: the nested
columns' pending JSON texts are views into the same bytes.

Entries that cannot be read are skipped and described by :class:`Skip` records in
``frame.attrs["skips"]`` (see :func:`skips`); nothing else in the frame changes.
Nested values are not type-checked at load time (a payload that is not a JSON
object loads, and reads as what it is).

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
>>> str(deliveries["payload"].dtype), deliveries["payload"][0]
('json', {'n': 1})
"""

from __future__ import annotations

import builtins
import gc
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain, repeat
from operator import attrgetter
from typing import Annotated, Any, Final

import msgspec
import numpy as np
import pandas as pd
from msgspec.structs import astuple
from pandas.api.extensions import ExtensionArray, ExtensionDtype, take
from pandas.api.indexers import check_array_indexer

from rdebug_nb.errors import InvalidQuery, MalformedMessage
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
    "raw",
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

_U64_MAX: Final = (1 << 64) - 1
_EXCERPT: Final = 120
_EXAMPLE: Final = (
    b'{"sender":{"id":"probe","name":"Probe"},"topics":"t","recipient_list":[],'
    b'"payload":{"n":1},"format":"generic_json","in_response_to":null,'
    b'"thread":[9742500110020915200],"conversation_id":null,"forward_header":null,'
    b'"routing_slip":null,"message_history":[],"ttl":null,"is_error_message":false,'
    b'"traceparent":null,"session_state":null,"topic_published_to":"t",'
    b'"enrich_with_history":0,"process_status":null,"origin_guild_stack":[],'
    b'"id":9742500110020915200,"priority":4,"timestamp":1796300977681.0}'
)


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


class JsonDtype(ExtensionDtype):
    """The dtype of the nested JSON columns (payload, routing slip, history ...).

    Values are kept as the stored JSON bytes until first read, then decoded once
    with exact integers and cached; see :class:`JsonArray`.
    """

    name = "json"
    type = object

    def __repr__(self) -> str:
        return "JsonDtype()"

    @property
    def na_value(self) -> None:
        """Missing values (JSON ``null``) are None."""
        return None

    @classmethod
    def construct_array_type(cls) -> builtins.type[JsonArray]:
        """The array type of this dtype."""
        return JsonArray


class JsonArray(ExtensionArray):
    """Nested JSON values decoded from their stored bytes on first access.

    Reading an element (``frame["payload"][0]``, ``.tolist()``, iteration,
    ``.map``, a row of ``frame.iloc``) gives plain Python values (``dict``,
    ``list``, ``None`` ...), decoded once and cached; JSON ``null`` is missing.
    Assigning stores a Python value as it is (a tuple as a list); ``bytes``
    are taken as JSON text.

    Examples
    --------
    >>> values = JsonArray.from_json([b'{"n": 1}', b"null", b"[2]"])
    >>> values[0], values.isna().tolist(), values.tolist()
    ({'n': 1}, [False, True, False], [{'n': 1}, None, [2]])
    """

    def __init__(
        self, values: np.ndarray[Any, Any], *, nulls_known: bool = True
    ) -> None:
        self._values = values
        # Whether every JSON null is already None; texts are searched for
        # nulls on the first isna(), not at load time.
        self._nulls_known = nulls_known

    @classmethod
    def from_json(cls, raws: Sequence[Any] | np.ndarray[Any, Any]) -> JsonArray:
        """An array from JSON texts (bytes or ``msgspec.Raw``), decoded lazily."""
        return cls(_objects(raws), nulls_known=False)

    @classmethod
    def _from_sequence(
        cls, scalars: Any, *, dtype: Any = None, copy: bool = False
    ) -> JsonArray:
        if isinstance(scalars, JsonArray):
            return scalars.copy() if copy else scalars
        return cls(_objects(list(scalars)))

    @classmethod
    def _from_factorized(cls, values: Any, original: Any) -> JsonArray:
        return cls(_objects(list(values)))

    @classmethod
    def _concat_same_type(cls, to_concat: Sequence[JsonArray]) -> JsonArray:
        parts = [array._values for array in to_concat]
        known = all(array._nulls_known for array in to_concat)
        return cls(np.concatenate(parts) if parts else _objects([]), nulls_known=known)

    @property
    def dtype(self) -> JsonDtype:
        return _JSON_DTYPE

    @property
    def nbytes(self) -> int:
        return int(self._values.nbytes)

    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, int | np.integer):
            return self._value(int(item))
        return self._like(self._values[check_array_indexer(self, item)])

    def __setitem__(self, key: Any, value: Any) -> None:
        self._nulls_known = False
        if isinstance(key, int | np.integer):
            self._values[key] = _stored(value)
            return
        positions = np.arange(len(self))[check_array_indexer(self, key)]
        values = _assigned(value, len(positions))
        for position, item in zip(positions.tolist(), values, strict=True):
            self._values[position] = _stored(item)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._decoded().tolist())

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> Any:
        decoded = self._decoded().copy()
        return decoded if dtype is None else decoded.astype(dtype)

    def __eq__(self, other: object) -> Any:
        if isinstance(other, pd.Series | pd.Index | pd.DataFrame):
            return NotImplemented
        mine = self._decoded().tolist()
        if isinstance(other, JsonArray | np.ndarray | list):
            theirs = list(other)
            if len(theirs) != len(mine):
                raise ValueError("cannot compare JSON arrays of different lengths")
            pairs = zip(mine, theirs, strict=True)
            return np.fromiter((a == b for a, b in pairs), bool, len(mine))
        return np.fromiter((a == other for a in mine), bool, len(mine))

    def isna(self) -> Any:
        self._find_nulls()
        return pd.isna(self._values)

    def take(
        self, indices: Any, *, allow_fill: bool = False, fill_value: Any = None
    ) -> JsonArray:
        taken = take(self._values, indices, allow_fill=allow_fill, fill_value=None)
        return self._like(np.asarray(taken, dtype=object))

    def copy(self) -> JsonArray:
        return self._like(self._values.copy())

    def astype(self, dtype: Any, copy: bool = True) -> Any:
        if isinstance(dtype, JsonDtype):
            return self.copy() if copy else self
        return super().astype(dtype, copy=copy)

    def _explode(self) -> tuple[JsonArray, np.ndarray[Any, Any]]:
        # As pandas explodes object columns: lists (and dicts) give one row per
        # item, empty ones a NaN row, anything else one row.
        values: list[Any] = []
        counts: list[int] = []
        for value in self._decoded().tolist():
            items = list(value) if isinstance(value, list | dict) else [value]
            values.extend(items or [np.nan])
            counts.append(len(items) or 1)
        return JsonArray(_objects(values)), np.asarray(counts, dtype=np.uint64)

    def _value(self, index: int) -> Any:
        value = self._values[index]
        if type(value) in _PENDING:
            value = self._values[index] = _decode_json(value)
        return value

    def _decoded(self) -> np.ndarray[Any, Any]:
        values = self._values
        with _gc_paused():
            items = values.tolist()
            for index, value in enumerate(items):
                if type(value) in _PENDING:
                    values[index] = _decode_json(value)
        self._nulls_known = True
        return values

    def _find_nulls(self) -> None:
        """Replace JSON ``null`` texts by None (4-byte texts only are compared)."""
        if self._nulls_known:
            return
        values = self._values
        for index, value in enumerate(values.tolist()):
            if type(value) in _TEXTS and len(value) == 4 and _is_null(value):
                values[index] = None
        self._nulls_known = True

    def items(self) -> list[Any]:
        """Each value, with lists not yet read kept as a tuple of item texts.

        For code that reads the items of a list column (the history) one by one
        with its own decoder: a tuple holds the stored JSON text of each item,
        undecoded, and stays undecoded in the array; any other value is read as
        usual (decoded once and cached).

        Examples
        --------
        >>> JsonArray.from_json([b'{"a": 1}']).items()
        [{'a': 1}]
        """
        return [
            value if type(value) is tuple else self._value(index)
            for index, value in enumerate(self._values.tolist())
        ]

    def gather(self, positions: np.ndarray[Any, Any]) -> JsonArray:
        """The values at ``positions`` (integers, no missing): a numpy gather."""
        return self._like(self._values[positions])

    def _like(self, values: np.ndarray[Any, Any]) -> JsonArray:
        return JsonArray(values, nulls_known=self._nulls_known)


_JSON_DTYPE: Final = JsonDtype()
_NULL: Final = msgspec.Raw(b"null")
_TEXTS: Final = frozenset({msgspec.Raw, bytes})
_PENDING: Final = _TEXTS | {tuple}
_decode_any: Final = msgspec.json.Decoder().decode


def _decode_json(value: Any) -> Any:
    """Decode a pending value: JSON text, or a tuple of texts (a list of items)."""
    if type(value) is tuple:
        return [_decode_any(item) for item in value]
    return _decode_any(value)


def _is_null(text: Any) -> bool:
    return bool(text == _NULL or text == b"null")


def _stored(value: Any) -> Any:
    """A value to store: tuples mean undecoded hops inside, so keep a list."""
    return list(value) if type(value) is tuple else value


def _assigned(value: Any, count: int) -> list[Any]:
    if isinstance(value, JsonArray | np.ndarray | list | tuple) and len(value) == count:
        return list(value)
    return [value] * count


class _Tag(msgspec.Struct, frozen=True, gc=False):
    id: str | None
    name: str | None


_Id = Annotated[int, msgspec.Meta(ge=0)]
_Stamp = Annotated[float, msgspec.Meta(ge=-(2**53), le=2**53)]


class _Envelope(msgspec.Struct, gc=False):
    """A stored message with its nested fields left as JSON text (decoded lazily).

    Lower bounds, the priority and the timestamp are checked by msgspec; the
    upper bound of 64-bit ids once per load (msgspec's bounds stop at int64).
    """

    sender: _Tag
    topics: str | list[str]
    recipient_list: list[_Tag]
    payload: msgspec.Raw
    format: str
    in_response_to: _Id | None
    thread: list[_Id]
    conversation_id: int | None
    forward_header: msgspec.Raw
    routing_slip: msgspec.Raw
    message_history: tuple[msgspec.Raw, ...]
    ttl: int | None
    is_error_message: bool
    traceparent: str | None
    session_state: msgspec.Raw
    topic_published_to: str | None
    enrich_with_history: int
    process_status: str | None
    origin_guild_stack: msgspec.Raw
    id: _Id
    priority: Annotated[int, msgspec.Meta(ge=0, le=len(PRIORITY_NAMES) - 1)]
    timestamp: _Stamp


_DECODER: Final = msgspec.json.Decoder(_Envelope)
_ENVELOPE_FIELDS: Final = _Envelope.__struct_fields__
_GET_ID: Final = attrgetter("id")
_JSON_FIELDS: Final = (
    "payload",
    "routing_slip",
    "forward_header",
    "session_state",
    "origin_guild_stack",
)


class _Rows:
    """Decoded members, page by page, in arrival order, and the skips.

    Each page is kept as columns: one tuple per envelope field (in
    :data:`_ENVELOPE_FIELDS` order), made by ``msgspec.structs.astuple`` and one
    transposition while the page's objects are fresh in the CPU caches: two
    C-level passes, several times cheaper than reading attributes one by one.
    """

    def __init__(self, namespace: str = "") -> None:
        self.namespace = namespace
        self.parts: list[list[np.ndarray[Any, Any]]] = []
        self.raws: list[bytes] = []
        self.pages: list[tuple[str, str, int]] = []
        self.members: list[Sequence[bytes]] = []
        self.skips: list[Skip] = []
        self.checked = False

    def add(self, key: str, topic: str, members: Sequence[bytes]) -> None:
        """Decode one page of members of one topic key."""
        decode = _decode_each if self.checked else _decode_page
        envelopes, kept = decode(key, members, self.skips)
        if envelopes:
            fields = zip(*map(astuple, envelopes), strict=True)
            self.parts.append([_objects(values) for values in fields])
        self.raws += kept
        self.pages.append((key, topic, len(envelopes)))
        self.members.append(members)

    def column(self, name: str) -> np.ndarray[Any, Any]:
        """One envelope field of every readable member, in arrival order."""
        index = _ENVELOPE_FIELDS.index(name)
        if not self.parts:
            return _objects([])
        return np.concatenate([part[index] for part in self.parts])

    def checked_again(self) -> _Rows:
        """The same pages decoded member by member with every check.

        For the rare load holding an id above 64 bits, which msgspec's bounds
        cannot catch: those members become skips.
        """
        rows = _Rows(self.namespace)
        rows.checked = True
        rows.skips = list(self.skips)
        for (key, topic, _), members in zip(self.pages, self.members, strict=True):
            rows.add(key, topic, members)
        return rows


_UNREADABLE: Final = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)
"""What decoding a member can raise; values nested too deeply give RecursionError."""


def _decode_page(
    key: str, members: Sequence[bytes], skips: list[Skip]
) -> tuple[list[_Envelope], Sequence[bytes]]:
    """Decode a page of members; return the envelopes and the members kept."""
    try:
        envelopes = list(map(_DECODER.decode, members))
    except _UNREADABLE:
        return _decode_each(key, members, skips)
    if not all(map(bytes.isascii, members)) and not _are_text(members):
        return _decode_each(key, members, skips)
    return envelopes, members


def _decode_each(
    key: str, members: Sequence[bytes], skips: list[Skip]
) -> tuple[list[_Envelope], Sequence[bytes]]:
    """The slow path of a page with bad members: one at a time, skipping them."""
    envelopes: list[_Envelope] = []
    kept: list[bytes] = []
    for member in members:
        try:
            message = _DECODER.decode(member)
            _check(message)
            _check_text(member)
        except (*_UNREADABLE, ValueError) as err:
            skips.append(Skip(key, _reason(err), _excerpt(member)))
            continue
        envelopes.append(message)
        kept.append(member)
    return envelopes, kept


def _ids_fit(values: Mapping[str, np.ndarray[Any, Any]]) -> bool:
    """Whether every id fits 64 bits (the decoder checked ``>= 0``)."""
    replies = filter(None, values["in_response_to"])
    threads = chain.from_iterable(values["thread"])
    top = max(
        max(values["id"], default=0),
        max(replies, default=0),
        max(threads, default=0),
    )
    return top <= _U64_MAX


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
    rows = _Rows(namespace)
    with _gc_paused():
        for key, topic, members in entries:
            rows.add(key, topic, members)
        return _delivery_frame(rows)


def decode_messages(
    namespace: str, entries: Iterable[tuple[str, str, Sequence[bytes]]]
) -> pd.DataFrame:
    """Decode stored members straight into a message frame.

    The same as ``to_messages(decode_deliveries(namespace, entries))``, without
    building the delivery frame first.

    Examples
    --------
    >>> frame = decode_messages("g", [("g:t", "t", [_EXAMPLE])])
    >>> frame["topics"].tolist(), frame["payload"][0]
    ([['t']], {'n': 1})
    """
    rows = _Rows(namespace)
    with _gc_paused():
        for key, topic, members in entries:
            rows.add(key, topic, members)
        return _message_frame(rows)


def merge_frames(frame: pd.DataFrame, fresh: pd.DataFrame) -> pd.DataFrame:
    """Merge a later, overlapping load of the same guild into a loaded frame.

    Both must be message frames, or both delivery frames. Rows of ``fresh`` whose
    message is already in ``frame`` (the same id; for deliveries the same id and
    topic) are not added again; a message that ``fresh`` found under more topics
    gets them added to ``topics``. The result is sorted like a load (timestamp,
    id, topic) and keeps the skips of both.

    Examples
    --------
    >>> old = to_messages(decode_deliveries("g", [("g:t", "t", [_EXAMPLE])]))
    >>> len(merge_frames(old, old)), len(merge_frames(old.iloc[:0], old))
    (1, 1)
    """
    is_delivery = "topic" in frame.columns
    with _gc_paused():
        recent = _recent(frame, fresh)
        if is_delivery:
            known = _known_deliveries(recent, fresh)
        else:
            known = _known_messages(recent, fresh)
            frame = _with_more_topics(frame, fresh, known)
        merged = _in_load_order(
            pd.concat([frame, fresh.iloc[np.flatnonzero(~known)]], ignore_index=True),
            is_delivery,
        )
    old_skips = frame.attrs.get("skips", ())
    skips = tuple(dict.fromkeys((*old_skips, *fresh.attrs.get("skips", ()))))
    merged.attrs = {**frame.attrs, "skips": skips}
    return merged


def _recent(frame: pd.DataFrame, fresh: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``frame`` as new as ``fresh``: only they can hold its messages."""
    if not len(fresh):
        return frame.iloc[:0]
    newest_first = int(fresh["timestamp_ms"].min())
    return frame[frame["timestamp_ms"].to_numpy() >= newest_first]


def _known_messages(recent: pd.DataFrame, fresh: pd.DataFrame) -> np.ndarray[Any, Any]:
    ids = recent["id"].to_numpy(dtype=np.uint64, na_value=0)
    return np.isin(fresh["id"].to_numpy(dtype=np.uint64, na_value=0), ids)


def _known_deliveries(
    recent: pd.DataFrame, fresh: pd.DataFrame
) -> np.ndarray[Any, Any]:
    seen = set(zip(recent["id"].tolist(), recent["topic"].tolist(), strict=True))
    pairs = zip(fresh["id"].tolist(), fresh["topic"].tolist(), strict=True)
    return np.fromiter((pair in seen for pair in pairs), bool, len(fresh))


def _with_more_topics(
    frame: pd.DataFrame, fresh: pd.DataFrame, known: np.ndarray[Any, Any]
) -> pd.DataFrame:
    """``frame`` with the topics ``fresh`` found for messages it already has."""
    again = fresh.iloc[np.flatnonzero(known)]
    ids = frame["id"].to_numpy(dtype=np.uint64, na_value=0)
    rows = pd.Index(ids).get_indexer(again["id"].to_numpy(dtype=np.uint64))
    topics = frame["topics"].to_numpy(dtype=object, copy=True)
    changed = False
    for row, found, declared in zip(
        rows.tolist(),
        again["topics"].tolist(),
        again["message_topics"].tolist(),
        strict=True,
    ):
        if row >= 0 and not set(found) <= set(topics[row]):
            topics[row] = _ordered([*topics[row], *found], declared)
            changed = True
    if not changed:
        return frame
    return frame.assign(topics=pd.Series(topics, frame.index, object, copy=False))


def _in_load_order(frame: pd.DataFrame, is_delivery: bool) -> pd.DataFrame:
    stamps = frame["timestamp_ms"].to_numpy(dtype=np.int64)
    keys = [frame["id"].to_numpy(dtype=np.uint64, na_value=0), stamps]
    if is_delivery:
        keys.insert(0, pd.factorize(frame["topic"], sort=True)[0])
    order = np.lexsort(keys)
    if np.all(order[1:] > order[:-1]):
        return frame
    return frame.take(order).reset_index(drop=True)


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
    with _gc_paused():
        ids = deliveries["id"].to_numpy(dtype=np.uint64, na_value=0)
        first, repeated = _first_copies(ids)
        topics = _stored_topics(
            deliveries["topic"].to_numpy(dtype=object),
            deliveries["message_topics"].to_numpy(dtype=object),
            ids,
            first,
            repeated,
        )
        frame = deliveries.take(first).reset_index(drop=True)
        frame["topics"] = pd.Series(topics, dtype=object, copy=False)
        frame = frame.loc[:, list(MESSAGE_COLUMNS)]
    frame.attrs = dict(deliveries.attrs)
    return frame


def require_messages(
    frame: pd.DataFrame, columns: Sequence[str], caller: str
) -> pd.DataFrame:
    """``frame`` as a message frame holding ``columns``, checked for ``caller``.

    A delivery frame (``bus.deliveries()``: one row per stored copy) is collapsed
    to one row per message with :func:`rdebug_nb.messages.to_messages`; any
    other frame is returned as it is.

    Raises
    ------
    InvalidQuery
        If ``frame`` is not a DataFrame or lacks some of ``columns``; the message
        names them and says where a message frame comes from.

    Examples
    --------
    >>> frame = pd.DataFrame({"id": [1]})
    >>> require_messages(frame, ["id", "topics"], "latency")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    rdebug_nb.errors.InvalidQuery: latency() needs a message frame, but this ...
    """
    if not isinstance(frame, pd.DataFrame):
        raise InvalidQuery(
            f"{caller}() needs a message frame (a pandas DataFrame), not "
            f"{type(frame).__name__}; pass a frame from bus.messages(guild_id)"
        )
    if "topics" not in frame.columns and set(DELIVERY_COLUMNS) <= set(frame.columns):
        frame = to_messages(frame)
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        raise InvalidQuery(
            f"{caller}() needs a message frame, but this frame lacks the "
            f"column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}; "
            "pass a frame from bus.messages(guild_id) (a delivery frame from "
            "bus.deliveries() is collapsed to one row per message)"
        )
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


def _check(message: _Envelope) -> None:
    if message.id > _U64_MAX:
        raise ValueError(f"id {message.id} is not an unsigned 64-bit GemstoneID")
    for value in (message.in_response_to, *message.thread):
        if value is not None and value > _U64_MAX:
            raise ValueError(f"referenced id {value} is not an unsigned 64-bit id")


def _are_text(members: Sequence[bytes]) -> bool:
    try:
        for member in members:
            _check_text(member)
    except UnicodeDecodeError:
        return False
    return True


def _check_text(member: bytes) -> None:
    """Raise UnicodeDecodeError unless the member is UTF-8 text.

    The decoder checks the text it decodes, not the nested values it keeps as
    raw JSON, which would otherwise fail only when first read.
    """
    if not member.isascii():
        member.decode("utf-8")


def _reason(err: Exception) -> str:
    if isinstance(err, RecursionError):
        return f"nested too deeply to decode: {err}"
    if isinstance(err, UnicodeDecodeError):
        return f"not UTF-8 text: {err}"
    if isinstance(err, msgspec.ValidationError):
        return f"not a RusticAI message: {err}"
    if isinstance(err, msgspec.DecodeError):
        return f"not JSON: {err}"
    return f"invalid message: {err}"


def _excerpt(member: bytes) -> str:
    return member[:_EXCERPT].decode("utf-8", errors="replace")


def _first_copies(
    ids: np.ndarray[Any, np.dtype[np.uint64]],
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Rows of the first copy of each id, and rows of ids stored more than once.

    One stable sort by id replaces a Python dict over every row; only the ids
    stored under several topics are looked at one by one.
    """
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.ones(len(ids), dtype=bool)
    starts[1:] = sorted_ids[1:] != sorted_ids[:-1]
    repeated = np.zeros(len(ids), dtype=bool)
    repeated[:-1] = ~starts[1:]
    repeated[1:] |= ~starts[1:]
    return np.sort(order[starts]), np.sort(order[repeated])


def _stored_topics(
    topic: np.ndarray[Any, Any],
    declared: np.ndarray[Any, Any],
    ids: np.ndarray[Any, Any],
    first: np.ndarray[Any, Any],
    repeated: np.ndarray[Any, Any],
) -> np.ndarray[Any, Any]:
    """The ``topics`` list of each first copy (one per ``first`` row).

    ``topic`` and ``declared`` (``message_topics``) are per delivery row; an id
    stored once keeps its one topic, an id stored more than once gets all its
    topics in the order the message names them.
    """
    stored = _objects([[value] for value in topic[first].tolist()])
    if not len(repeated):
        return stored
    found: dict[int, list[int]] = {}
    for row, mid in zip(repeated.tolist(), ids[repeated].tolist(), strict=True):
        found.setdefault(mid, []).append(row)
    slots = np.searchsorted(first, [rows[0] for rows in found.values()])
    known: dict[tuple[tuple[str, ...], tuple[str, ...]], list[str]] = {}
    for slot, rows in zip(slots.tolist(), found.values(), strict=True):
        # Few distinct (stored, declared) pairs: each is ordered once.
        pair = (tuple(topic[rows].tolist()), tuple(declared[rows[0]]))
        if pair not in known:
            known[pair] = _ordered(list(pair[0]), list(pair[1]))
        stored[slot] = list(known[pair])
    return stored


def _ordered(stored: list[str], declared: list[str]) -> list[str]:
    unique = list(dict.fromkeys(stored))
    rank = {topic: index for index, topic in enumerate(declared)}
    return sorted(unique, key=lambda topic: (rank.get(topic, len(rank)), topic))


def _delivery_frame(rows: _Rows) -> pd.DataFrame:
    return _frame(rows, DELIVERY_COLUMNS)


def _message_frame(rows: _Rows) -> pd.DataFrame:
    """``to_messages(_delivery_frame(rows))``, without the delivery frame."""
    return _frame(rows, MESSAGE_COLUMNS)


def _frame(rows: _Rows, names: tuple[str, ...]) -> pd.DataFrame:
    with _gc_paused():
        values = {name: rows.column(name) for name in _ENVELOPE_FIELDS}
        if not _ids_fit(values):
            rows = rows.checked_again()
            values = {name: rows.column(name) for name in _ENVELOPE_FIELDS}
        fields = _Fields(rows, values, collapse=names == MESSAGE_COLUMNS)
        columns = _columns(fields)
        frame = pd.DataFrame({name: columns[name] for name in names}, copy=False)
    frame.attrs["skips"] = tuple(rows.skips)
    return frame


class _Fields:
    """The envelope fields of every record as columns, and the rows to keep.

    Values are transposed once and every per-value step runs in arrival order,
    where the objects lie in memory in the order they were made; only finished
    columns are put in load order (a numpy gather or an array ``take``). With
    ``collapse``, only the first copy of each id is kept and ``topics`` lists
    every topic it was stored under.
    """

    def __init__(
        self, rows: _Rows, values: dict[str, np.ndarray[Any, Any]], *, collapse: bool
    ) -> None:
        count = len(rows.raws)
        self.rows, self.count, self.values = rows, count, values
        self.page = np.repeat(np.arange(len(rows.pages)), [n for *_, n in rows.pages])
        stamps = np.fromiter(self.values["timestamp"], float, count).astype(np.int64)
        ids = np.fromiter(self.values["id"], np.uint64, count)
        names = pd.Index([topic for _, topic, _ in rows.pages])
        ranks = pd.Index(sorted(set(names))).get_indexer(names)
        self.order = np.lexsort((ranks[self.page], ids, stamps))
        self.declared = self.mapped(_as_list, "topics")
        self.topics: np.ndarray[Any, Any] | None = None
        if collapse:
            self._collapse(ids[self.order], names.to_numpy(dtype=object))
        self.ids, self.stamps = ids[self.order], stamps[self.order]
        self.kept = len(self.order)

    def _collapse(self, ids: np.ndarray[Any, Any], names: np.ndarray[Any, Any]) -> None:
        first, repeated = _first_copies(ids)
        topic = names[self.page[self.order]]
        declared = self.declared[self.order]
        self.topics = _stored_topics(topic, declared, ids, first, repeated)
        self.order = self.order[first]

    def arrived(self, name: str) -> np.ndarray[Any, Any]:
        """A field as an object array, in arrival order."""
        return _objects(self.values[name])

    def mapped(self, function: Any, name: str) -> np.ndarray[Any, Any]:
        """``function`` of each value of a field, in arrival order."""
        return _objects(list(map(function, self.values[name].tolist())))

    def numbers(self, name: str, dtype: Any) -> np.ndarray[Any, Any]:
        """A numeric field, in load order."""
        values = np.fromiter(self.values[name], dtype, self.count)
        return values[self.order]

    def ordered(self, values: Any) -> Any:
        """An arrival-order array (numpy or pandas) with the kept rows in order."""
        if isinstance(values, np.ndarray):
            return values[self.order]
        if isinstance(values, JsonArray):
            return values.gather(self.order)
        return values.take(self.order)


def _columns(fields: _Fields) -> dict[str, Any]:
    ids, stamps, count, load = fields.ids, fields.stamps, fields.count, fields.ordered
    priority = fields.numbers("priority", np.uint8)
    published = fields.arrived("topic_published_to")
    threads = fields.arrived("thread")
    traceparents = fields.arrived("traceparent")
    hops = fields.arrived("message_history")
    return {
        "id": pd.arrays.IntegerArray(ids, np.zeros(fields.kept, dtype=bool)),
        **_origin_columns(fields, published),
        "timestamp": pd.to_datetime(stamps, unit="ms", utc=True),
        "timestamp_ms": stamps,
        "priority": priority,
        "priority_name": priority_names(priority),
        "machine_id": ((ids >> np.uint64(12)) & np.uint64(0x3FF)).astype(np.uint16),
        "sequence": (ids & np.uint64(0xFFF)).astype(np.uint16),
        **dict(zip(_SENDER_COLUMNS, map(load, _senders(fields)), strict=True)),
        "format": load(_texts(fields.arrived("format"))),
        "message_topics": _kept(load(fields.declared)),
        "in_response_to": load(_nullable(fields.arrived("in_response_to"), np.uint64)),
        "thread": _kept(load(threads)),
        "thread_root": load(_roots(threads)),
        "conversation_id": _kept(load(fields.arrived("conversation_id"))),
        "recipients": _kept(load(fields.mapped(_recipient_ids, "recipient_list"))),
        "is_error": fields.numbers("is_error_message", bool),
        "process_status": _kept(load(fields.arrived("process_status"))),
        "hop_count": load(np.fromiter(map(len, hops), np.int64, count)),
        "ttl": load(_nullable(fields.arrived("ttl"), np.int64)),
        "traceparent": _kept(load(traceparents)),
        **dict(
            zip(
                _TRACE_COLUMNS,
                map(_kept, map(load, _traces(traceparents))),
                strict=True,
            )
        ),
        "payload_size": load(fields.mapped(len, "payload").astype(np.int64)),
        "size": load(np.fromiter(map(len, fields.rows.raws), np.int64, count)),
        "message_history": JsonArray(load(hops)),
        **{
            name: load(JsonArray.from_json(fields.arrived(name)))
            for name in _JSON_FIELDS
        },
        "enrich_with_history": fields.numbers("enrich_with_history", np.int64),
        "raw": _kept(load(_objects(fields.rows.raws))),
    }


_TRACE_COLUMNS: Final = ("trace_id", "span_id", "trace_flags")
_SENDER_COLUMNS: Final = ("sender_id", "sender_name")


def _senders(fields: _Fields) -> list[Any]:
    """``sender.id`` and ``sender.name`` as ``str`` arrays.

    A guild has few agents: the distinct tags are converted, then spread to
    the rows by their codes.
    """
    codes, tags = pd.factorize(fields.arrived("sender"))
    ids = _texts([tag.id for tag in tags]).take(codes)
    names = _texts([tag.name for tag in tags]).take(codes)
    return [ids, names]


def _origin_columns(fields: _Fields, published: np.ndarray[Any, Any]) -> dict[str, Any]:
    """Columns that come from the key a row was read from, not from its JSON."""
    pages = fields.rows.pages
    keys = [key for key, _, _ in pages]
    topics = [topic for _, topic, _ in pages]
    dead_key = np.asarray([t == DEAD_LETTER_TOPIC for t in topics], dtype=bool)
    page = fields.ordered(fields.page)
    columns = {
        "guild_id": _spread([fields.rows.namespace], np.zeros(len(page), np.intp)),
        "is_dead_letter": dead_key[page] & fields.ordered(pd.isna(published)),
    }
    if fields.topics is not None:
        return {**columns, "topics": _kept(fields.topics)}
    return {
        **columns,
        "topic": _spread(topics, page),
        "key": _spread(keys, page),
        "topic_published_to": fields.ordered(_texts(published)),
    }


def _spread(values: list[str], index: np.ndarray[Any, Any]) -> Any:
    """A few distinct texts spread to rows: one ``take``, not one per row."""
    return _texts(values).take(index)


def _texts(values: Sequence[str | None] | np.ndarray[Any, Any]) -> Any:
    """Texts as a ``str`` array (missing values become NaN)."""
    return pd.array(values, dtype="str")


def _kept(values: Sequence[Any] | np.ndarray[Any, Any]) -> pd.Series:
    """An object column, kept as it is: no pandas inference pass over it."""
    return pd.Series(_objects(values), dtype=object, copy=False)


def _roots(threads: np.ndarray[Any, Any]) -> Any:
    """The first id of each thread (missing for an empty one), all C-level."""
    count = len(threads)
    empty = np.fromiter(map(len, threads), np.int64, count) == 0
    roots = np.fromiter(map(next, map(iter, threads), repeat(0)), np.uint64, count)
    return pd.arrays.IntegerArray(roots, empty)


def _traces(values: np.ndarray[Any, Any]) -> list[np.ndarray[Any, Any]]:
    """Trace id, span id and flags; each distinct traceparent is parsed once.

    Messages of one flow share their traceparent, so there are far fewer
    distinct values than rows.
    """
    texts = values.tolist()
    parsed = {value: _trace_parts(value) for value in dict.fromkeys(texts)}
    parts = list(zip(*map(parsed.__getitem__, texts), strict=True)) or [(), (), ()]
    return [_objects(part) for part in parts]


def _trace_parts(value: str | None) -> tuple[str | None, str | None, str | None]:
    """:func:`parse_traceparent`, with a fast path for the usual 55 characters."""
    if (
        value is not None
        and len(value) == 55
        and value[2] == value[35] == value[52] == "-"
        and value.count("-") == 3
    ):
        return value[3:35], value[36:52], value[53:]
    return parse_traceparent(value)


def _nullable(
    values: Sequence[Any] | np.ndarray[Any, Any], dtype: type[np.integer[Any]]
) -> Any:
    """A nullable integer array built without pandas' per-element inference."""
    objects = _objects(values)
    missing = pd.isna(objects)
    objects[missing] = 0
    return pd.arrays.IntegerArray(objects.astype(dtype), missing)


def _as_list(topics: str | list[str]) -> list[str]:
    return [topics] if isinstance(topics, str) else topics


def _recipient_ids(tags: list[_Tag]) -> list[str | None]:
    return list(map(_GET_ID, tags)) if tags else []


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a load builds its objects.

    A load creates millions of containers that live on in the frame; without the
    pause, the collector scans them again and again (about 40 % of a load).
    Nothing a load creates forms a reference cycle.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _objects(values: Iterable[Any]) -> np.ndarray[Any, Any]:
    if isinstance(values, np.ndarray) and values.dtype == object:
        return values
    items = values if isinstance(values, list | tuple) else list(values)
    return np.fromiter(items, dtype=object, count=len(items))


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
        """The message as a dict; ids stay exact Python ints.

        Raises :class:`~rdebug_nb.errors.MalformedMessage` when the stored JSON
        is not a readable message.
        """
        return read_member(self.raw, f"message {self.id} of {self.guild_id!r}")

    def to_frame(self) -> pd.DataFrame:
        """The message as a one-row message frame."""
        entries = [
            (f"{self.guild_id}:{topic}", topic, [raw]) for topic, raw in self.copies
        ]
        return to_messages(decode_deliveries(self.guild_id, entries))


def read_member(member: bytes, where: str) -> dict[str, Any]:
    """Decode one stored member into a dict, with exact integer ids.

    Parameters
    ----------
    member : bytes
        The stored JSON.
    where : str
        What the member is, for the error message.

    Raises
    ------
    MalformedMessage
        If it is not UTF-8 JSON text of an object, or nests too deeply.

    Examples
    --------
    >>> read_member(b'{"id": 18446744073709551615}', "probe")["id"]
    18446744073709551615
    >>> read_member(b"[1]", "probe")
    Traceback (most recent call last):
    ...
    rdebug_nb.errors.MalformedMessage: probe is not a RusticAI message: ...
    """
    try:
        decoded = _decode_any(member)
    except _UNREADABLE as err:
        raise MalformedMessage(
            f"{where} cannot be read: {_reason(err)}; its stored bytes begin "
            f"{_excerpt(member)!r}"
        ) from err
    if not isinstance(decoded, dict):
        raise MalformedMessage(
            f"{where} is not a RusticAI message: its JSON is a "
            f"{type(decoded).__name__}, not an object"
        )
    return decoded


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

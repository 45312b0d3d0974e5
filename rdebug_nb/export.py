"""Exports: message and delivery frames saved to files and read back.

Three formats, each with the metadata of where and when the data was taken
(:class:`ExportMetadata`, read back with :func:`read_metadata`):

JSONL (:func:`to_jsonl` / :func:`read_jsonl`)
    one RusticAI message JSON per line, as RusticAI writes it, so every line is
    accepted by RusticAI's own ``Message.from_json``. A message frame gives one
    line per message (its first stored copy), a delivery frame one line per
    delivery. The metadata is in the sidecar ``<file>.meta.json``.
Parquet (:func:`to_parquet` / :func:`read_parquet`)
    every column of the frame: ids as unsigned 64-bit integers, timestamps
    time-zone aware, lists of topics and ids as Arrow lists, nested fields
    (payload, routing slip, history, ...) as JSON text columns named in the
    schema metadata. Written in row groups, so memory stays bounded.
CSV (:func:`to_csv`)
    the flat columns for spreadsheets, ids as exact decimal text, with a
    ``<file>.meta.json`` sidecar.

:func:`to_message_json` gives the message JSON of each row and
:func:`to_snapshot_records` the topic keys a frame came from, as snapshot records.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> from rdebug_nb.messages import decode_deliveries, to_messages
>>> member = (
...     b'{"sender":{"id":"probe","name":"Probe"},"topics":["t"],"recipient_list":[],'
...     b'"payload":{"n":1},"format":"generic_json","in_response_to":null,'
...     b'"thread":[9742500110020915200],"conversation_id":null,"forward_header":null,'
...     b'"routing_slip":null,"message_history":[],"ttl":null,"is_error_message":false,'
...     b'"traceparent":null,"session_state":null,"topic_published_to":"t",'
...     b'"enrich_with_history":0,"process_status":null,"origin_guild_stack":[],'
...     b'"id":9742500110020915200,"priority":4,"timestamp":1796300977681.0}'
... )
>>> msgs = to_messages(decode_deliveries("g", [("g:t", "t", [member])]))
>>> folder = tempfile.TemporaryDirectory()
>>> path = Path(folder.name) / "msgs.jsonl"
>>> meta = to_jsonl(msgs, path, now=pd.Timestamp("2026-12-04", tz="UTC"))
>>> path.read_bytes() == member + b"\\n"
True
>>> read_jsonl(path).equals(msgs), read_metadata(path).guild_ids
(True, ('g',))
>>> folder.cleanup()
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Final, Literal

import msgspec
import numpy as np
import pandas as pd

from rdebug_nb._warn import warn_skips
from rdebug_nb.errors import RdebugWarning, SnapshotError
from rdebug_nb.ids import PRIORITY_NAMES
from rdebug_nb.keys import DEAD_LETTER_TOPIC
from rdebug_nb.messages import (
    DELIVERY_COLUMNS,
    MESSAGE_COLUMNS,
    JsonArray,
    JsonDtype,
    decode_deliveries,
    empty_deliveries,
    to_messages,
)
from rdebug_nb.snapshot import KeyRecord

logger = logging.getLogger(__name__)

Format = Literal["jsonl", "parquet", "csv"]
Kind = Literal["messages", "deliveries"]
Frames = pd.DataFrame | Iterable[pd.DataFrame]

SIDECAR_SUFFIX: Final = ".meta.json"
"""Appended to a JSONL or CSV file name to name its metadata sidecar."""

CHUNK_ROWS: Final = 10_000
"""Rows converted at a time; also the Parquet row-group size."""

RAW_COLUMN: Final = "raw"
"""The column with the stored member bytes (every loaded frame has it); exports
write it byte for byte when present."""

TEXT_COLUMNS: Final = (
    "guild_id",
    "topic",
    "key",
    "topic_published_to",
    "sender_id",
    "sender_name",
    "format",
    "process_status",
    "traceparent",
    "trace_id",
    "span_id",
    "trace_flags",
)
"""Text columns (str or None); Parquet string columns, whatever their dtype."""

JSON_COLUMNS: Final = (
    "payload",
    "routing_slip",
    "message_history",
    "forward_header",
    "session_state",
    "origin_guild_stack",
    "conversation_id",
)
"""Columns stored as JSON text in Parquet (named in its schema metadata)."""

LIST_COLUMNS: Final = {
    "topics": "string",
    "message_topics": "string",
    "recipients": "string",
    "thread": "uint64",
}
"""Columns stored as Arrow lists in Parquet, with their element type."""

FLAT_COLUMNS: Final = tuple(
    name
    for name in DELIVERY_COLUMNS
    if name not in JSON_COLUMNS and name not in LIST_COLUMNS and name != RAW_COLUMN
)
"""Columns :func:`to_csv` writes (those present in the frame), in order."""

_ROW_FIELDS: Final = (*DELIVERY_COLUMNS, "topics")
_META_KEY: Final = b"rdebug_nb.export"
_JSON_KEY: Final = b"rdebug_nb.json_columns"
_LIST_KEY: Final = b"rdebug_nb.list_columns"
_LAZY_KEY: Final = b"rdebug_nb.json_dtype_columns"
_MARKER: Final = "rdebug_nb export"
_OBJECT_KEY: Final = b"rdebug_nb.object_columns"
_LAYOUT_KEYS: Final = (_JSON_KEY, _LAZY_KEY, _LIST_KEY, _OBJECT_KEY)
_ENCODER: Final = msgspec.json.Encoder()
_decode: Final = msgspec.json.Decoder().decode


class _Where(msgspec.Struct):
    id: int
    timestamp: float
    topic_published_to: str | None = None


_WHERE: Final = msgspec.json.Decoder(_Where)


@dataclass(frozen=True)
class ExportMetadata:
    """Where and when an exported file was taken, and what it holds.

    Attributes
    ----------
    format : {"jsonl", "parquet", "csv"}
        The file format.
    kind : {"messages", "deliveries"}
        A message frame (one row per id) or a delivery frame (one per copy).
    source : str or None
        The server URL the frame was read from, password hidden.
    guild_ids : tuple of str
        The namespaces of the rows, in order of first appearance.
    first_time, last_time : pandas.Timestamp or None
        The time span of the rows (message timestamps, UTC).
    rows : int
        Lines or rows written.
    messages : int
        Distinct message ids among them.
    exported_at : pandas.Timestamp
        When the file was written (the injected ``now``).
    version : str
        The rdebug_nb version that wrote it.
    columns : tuple of str
        The frame's columns, in order.
    layout : dict
        What :func:`read_jsonl` needs to rebuild the frame exactly: the guild of
        each run of lines, and topics that cannot be read from the lines.
    """

    format: Format
    kind: Kind
    source: str | None
    guild_ids: tuple[str, ...]
    first_time: pd.Timestamp | None
    last_time: pd.Timestamp | None
    rows: int
    messages: int
    exported_at: pd.Timestamp
    version: str
    columns: tuple[str, ...]
    layout: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_json(self) -> str:
        """The metadata as one JSON object (the sidecar's content)."""
        body = {
            "written_by": _MARKER,
            "format": self.format,
            "kind": self.kind,
            "source": self.source,
            "guild_ids": list(self.guild_ids),
            "first_time": _iso(self.first_time),
            "last_time": _iso(self.last_time),
            "rows": self.rows,
            "messages": self.messages,
            "exported_at": _iso(self.exported_at),
            "version": self.version,
            "columns": list(self.columns),
            "layout": self.layout,
        }
        return json.dumps(body, ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str | bytes) -> ExportMetadata:
        """Parse what :meth:`to_json` wrote.

        Raises
        ------
        SnapshotError
            If the text is not rdebug_nb export metadata.
        """
        try:
            body = json.loads(text)
            return cls._from_body(body)
        except (ValueError, KeyError, TypeError) as err:
            raise SnapshotError(f"not rdebug_nb export metadata: {err}") from err

    @classmethod
    def _from_body(cls, body: dict[str, Any]) -> ExportMetadata:
        if body.get("written_by") != _MARKER:
            raise ValueError("the 'written_by' marker is missing")
        return cls(
            format=body["format"],
            kind=body["kind"],
            source=body["source"],
            guild_ids=tuple(body["guild_ids"]),
            first_time=_stamp(body["first_time"]),
            last_time=_stamp(body["last_time"]),
            rows=int(body["rows"]),
            messages=int(body["messages"]),
            exported_at=pd.Timestamp(body["exported_at"]),
            version=str(body["version"]),
            columns=tuple(body["columns"]),
            layout=dict(body.get("layout") or {}),
        )


def sidecar_path(path: str | Path) -> Path:
    """The metadata sidecar of an exported JSONL or CSV file.

    >>> sidecar_path("out/errors.jsonl").name
    'errors.jsonl.meta.json'
    """
    return Path(str(path) + SIDECAR_SUFFIX)


def to_jsonl(
    msgs: Frames,
    path: str | Path,
    *,
    source: str | None = None,
    now: datetime | pd.Timestamp | None = None,
) -> ExportMetadata:
    """Write messages as RusticAI message JSON, one per line.

    Parameters
    ----------
    msgs : DataFrame or iterable of DataFrames
        A message frame (one line per message, its first stored copy) or a
        delivery frame (one line per delivery); an iterable of frames of one kind
        is written chunk by chunk.
    path : str or Path
        The file to write; the metadata goes to ``<path>.meta.json``.
    source : str, optional
        The server the frame came from (default ``msgs.attrs["source"]``);
        written with the password hidden.
    now : datetime, optional
        The export time recorded in the metadata (default: the clock).

    Returns
    -------
    ExportMetadata

    Warns
    -----
    RdebugWarning
        When some lines may not equal the stored members byte for byte: the
        frame has no ``raw`` column, and the re-serialised JSON of those rows
        differs in length from ``size`` or names recipients (see Notes).

    Notes
    -----
    A frame with a ``raw`` column (the stored member bytes, as every frame from
    a load has) is written byte for byte. Without it, each line is re-serialised
    from the columns, in RusticAI's field order and number format. The columns
    do not keep two details, so such lines differ from the stored member when
    the message's ``topics`` was a single string (written as a one-element list)
    or its ``recipient_list`` carried names (written as ``null``); both forms are
    valid RusticAI messages. For the same reason, values edited in a frame
    that has ``raw`` are not written: drop ``raw`` to export edited values.
    Columns added to the frame by hand are not stored (use Parquet for those).
    """
    frames, first = _frames(msgs, jsonl=True)
    tally = _Tally(_kind(first), _source(first, source))
    with Path(path).open("wb") as handle:
        for frame in frames:
            handle.writelines(line + b"\n" for line in tally.add(frame))
    meta = tally.metadata("jsonl", _columns(first), now)
    sidecar_path(path).write_text(meta.to_json() + "\n", encoding="utf-8")
    logger.debug("wrote %s lines to %s", meta.rows, path)
    _warn_inexact(tally.inexact, meta.rows, path)
    return meta


def read_jsonl(
    path: str | Path, *, guild_id: str | None = None, raw: bool = False
) -> pd.DataFrame:
    """Read a JSONL export (or any file of RusticAI message JSON lines).

    Parameters
    ----------
    path : str or Path
        The file. Its ``.meta.json`` sidecar, when present, gives the guild of
        each line, the frame kind and the columns.
    guild_id : str, optional
        The namespace of every line; required when there is no sidecar.
    raw : bool, default False
        Add a ``raw`` column holding each line's bytes (the exported frame's
        ``raw`` column comes back either way).

    Returns
    -------
    pandas.DataFrame
        The frame that was exported: same columns, dtypes and row order (with a
        fresh RangeIndex). Unreadable lines are skipped, counted in one
        :class:`~rdebug_nb.errors.SkippedEntriesWarning` and listed in
        ``attrs["skips"]``.

    Raises
    ------
    SnapshotError
        If the file cannot be read, or has no sidecar and no ``guild_id``.

    Examples
    --------
    >>> import tempfile
    >>> from rdebug_nb.messages import empty_deliveries
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     meta = to_jsonl(empty_deliveries(), f"{folder}/d.jsonl")
    ...     back = read_jsonl(f"{folder}/d.jsonl")
    >>> back.empty, list(back.columns) == list(empty_deliveries().columns)
    (True, True)
    """
    meta = _try_metadata(path)
    if meta is not None and meta.format != "jsonl":
        raise SnapshotError(
            f"{str(path)!r} is a {meta.format} export, not JSONL: "
            + _READ_BACK.get(meta.format, "export to JSONL or Parquet to read it back")
        )
    lines = _read_lines(path)
    guilds = _line_guilds(meta, guild_id, len(lines), path)
    kind: Kind = meta.kind if meta else "messages"
    layout = meta.layout if meta else {}
    parts = [
        _decode_run(kind, guild, lines, start, stop, layout)
        for guild, start, stop in _runs(guilds)
    ]
    frame = _select(_concat(parts, kind), meta, lines, raw)
    warn_skips(frame, repr(str(path)), stacklevel=2)
    return frame


def to_parquet(
    msgs: Frames,
    path: str | Path,
    *,
    source: str | None = None,
    now: datetime | pd.Timestamp | None = None,
    row_group_size: int = CHUNK_ROWS,
) -> ExportMetadata:
    """Write a message or delivery frame to Parquet, in row groups.

    Parameters
    ----------
    msgs : DataFrame or iterable of DataFrames
        The rows; an iterable of frames with the same columns is written one
        frame at a time, so only one chunk is converted at once.
    path : str or Path
        The file to write.
    source : str, optional
        The server the frame came from (default ``msgs.attrs["source"]``).
    now : datetime, optional
        The export time recorded in the metadata (default: the clock).
    row_group_size : int, default 10_000
        Rows per row group.

    Returns
    -------
    ExportMetadata
        Also stored in the file's key-value metadata (``rdebug_nb.export``).

    Notes
    -----
    Ids are ``uint64`` (``thread`` a list of ``uint64``), timestamps
    ``timestamp[us, tz=UTC]``, ``topics``, ``message_topics`` and ``recipients``
    lists of strings, text columns strings, ``raw`` binary. The nested columns in
    :data:`JSON_COLUMNS` and any other column of Python objects are JSON text
    (ids exact), named in the schema metadata key ``rdebug_nb.json_columns``.
    Other Parquet readers (pyarrow, DuckDB, Spark) see plain columns;
    :func:`read_parquet` decodes the JSON back and restores each column's dtype.
    Which kind a column of Python objects is, is decided from the first frame.

    Examples
    --------
    >>> import tempfile
    >>> from rdebug_nb.messages import empty_deliveries
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     meta = to_parquet(empty_deliveries(), f"{folder}/d.parquet")
    ...     back = read_parquet(f"{folder}/d.parquet")
    >>> list(back.columns) == list(empty_deliveries().columns), meta.rows
    (True, 0)
    """
    pa, pq = _arrow()
    frames, first = _frames(msgs)
    tally = _Tally(_kind(first), _source(first, source))
    layout = _Layout.of(first)
    schema = _arrow_schema(pa, first, layout)
    with pq.ParquetWriter(str(path), schema) as writer:
        for frame in frames:
            tally.count(frame)
            for start in range(0, len(frame), row_group_size):
                chunk = _encode_chunk(
                    frame.iloc[start : start + row_group_size], layout
                )
                table = pa.Table.from_pandas(chunk, schema=schema, preserve_index=False)
                writer.write_table(table, row_group_size=row_group_size)
        meta = tally.metadata("parquet", _columns(first), now)
        writer.add_key_value_metadata({_META_KEY: meta.to_json().encode()})
    logger.debug("wrote %s rows to %s", meta.rows, path)
    return meta


def read_parquet(
    path: str | Path, *, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """Read a Parquet export back into the frame that was written.

    Parameters
    ----------
    path : str or Path
        A file written by :func:`to_parquet`.
    columns : sequence of str, optional
        Read only these columns.

    Returns
    -------
    pandas.DataFrame
        The exported frame: same columns, dtypes (ids ``UInt64``) and values,
        with a fresh RangeIndex.

    Examples
    --------
    See :func:`to_parquet`.
    """
    table = _read_table(path, columns)
    layout = _Layout.read(table.schema.metadata or {})
    special = [name for name in table.column_names if name in layout.special]
    plain = _with_priority_names(table.drop_columns(special).to_pandas())
    data = {
        name: _read_column(table, name, layout) if name in special else plain[name]
        for name in table.column_names
    }
    return pd.DataFrame(data)


def _read_table(path: str | Path, columns: Sequence[str] | None) -> Any:
    pa, pq = _arrow()
    wanted = list(columns) if columns else None
    try:
        return pq.read_table(str(path), columns=wanted)
    except OSError as err:
        raise SnapshotError(f"cannot read {str(path)!r}: {err}") from err
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise SnapshotError(
            f"{str(path)!r} is not a Parquet file written by rd.to_parquet: {err}"
        ) from err


def to_csv(
    msgs: Frames,
    path: str | Path,
    *,
    source: str | None = None,
    now: datetime | pd.Timestamp | None = None,
    columns: Sequence[str] | None = None,
) -> ExportMetadata:
    """Write the flat columns of a frame as CSV, with a metadata sidecar.

    Parameters
    ----------
    msgs : DataFrame or iterable of DataFrames
        A message or delivery frame.
    path : str or Path
        The file to write; the metadata goes to ``<path>.meta.json``.
    source : str, optional
        The server the frame came from (default ``msgs.attrs["source"]``).
    now : datetime, optional
        The export time recorded in the metadata (default: the clock).
    columns : sequence of str, optional
        The columns to write (default: those of :data:`FLAT_COLUMNS` present).

    Returns
    -------
    ExportMetadata

    Notes
    -----
    Ids are written as exact decimal text (a spreadsheet that reads them as
    numbers rounds them; import the id columns as text). Timestamps are ISO 8601
    with the UTC offset. Nested columns are left out; use JSONL or Parquet.

    Examples
    --------
    >>> import tempfile
    >>> from rdebug_nb.messages import empty_deliveries
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     meta = to_csv(empty_deliveries(), f"{folder}/d.csv")
    ...     header = Path(f"{folder}/d.csv").read_text().split(",")
    >>> header[:3], meta.kind
    (['id', 'guild_id', 'topic'], 'deliveries')
    """
    frames, first = _frames(msgs)
    chosen = list(columns or [c for c in FLAT_COLUMNS if c in first.columns])
    tally = _Tally(_kind(first), _source(first, source))
    with Path(path).open("w", encoding="utf-8", newline="") as handle:
        for number, frame in enumerate(frames):
            tally.count(frame)
            frame.to_csv(handle, columns=chosen, index=False, header=number == 0)
    meta = tally.metadata("csv", tuple(chosen), now)
    sidecar_path(path).write_text(meta.to_json() + "\n", encoding="utf-8")
    return meta


def read_metadata(path: str | Path) -> ExportMetadata:
    """Read where and when an exported file was taken.

    Parameters
    ----------
    path : str or Path
        A JSONL, CSV or Parquet export (for JSONL and CSV, the file or its
        sidecar).

    Raises
    ------
    SnapshotError
        If the file carries no rdebug_nb export metadata.

    Examples
    --------
    >>> import tempfile
    >>> from rdebug_nb.messages import empty_deliveries
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     written = to_csv(empty_deliveries(), f"{folder}/d.csv", source="redis://:pw@h")
    ...     meta = read_metadata(f"{folder}/d.csv")
    >>> meta == written, meta.source, meta.rows
    (True, 'redis://:***@h', 0)
    """
    meta = _try_metadata(path)
    if meta is None:
        raise SnapshotError(
            f"{str(path)!r} has no rdebug_nb export metadata (no "
            f"{sidecar_path(path).name} sidecar and no Parquet key 'rdebug_nb.export')"
        )
    return meta


def to_message_json(frame: pd.DataFrame) -> list[bytes]:
    """The RusticAI message JSON of each row.

    Rows of a delivery frame give their own copy; rows of a message frame their
    first stored copy. The ``raw`` column is used when present; otherwise the
    JSON is re-serialised from the columns (see :func:`to_jsonl`, Notes).

    Examples
    --------
    >>> to_message_json(to_messages(empty_deliveries()))
    []
    """
    if RAW_COLUMN in frame.columns:
        return [bytes(raw) for raw in frame[RAW_COLUMN].tolist()]
    return [_ENCODER.encode(message) for message in to_message_dicts(frame)]


def to_message_dicts(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Each row as a RusticAI message dict (ids exact, fields in RusticAI's order).

    Examples
    --------
    >>> to_message_dicts(empty_deliveries())
    []
    """
    if RAW_COLUMN in frame.columns:
        return [msgspec.json.decode(bytes(raw)) for raw in frame[RAW_COLUMN].tolist()]
    rows = _records(frame)
    published = _published_topics(frame, rows)
    return [_message(row, topic) for row, topic in zip(rows, published, strict=True)]


def to_snapshot_records(
    frame: pd.DataFrame, *, guild_id: str | None = None
) -> list[KeyRecord]:
    """The topic keys holding a frame's messages, as snapshot records.

    A message frame gives one member per topic in ``topics`` (with that topic
    as ``topic_published_to``), a delivery frame one member per row; the score
    is the message timestamp. No ``msg:`` keys, positions or state are made.

    Parameters
    ----------
    frame : DataFrame
        A message or delivery frame.
    guild_id : str, optional
        Put every member under this namespace instead of the rows' ``guild_id``.

    Returns
    -------
    list of KeyRecord
        Sorted-set records, sorted by key; write them with
        :func:`rdebug_nb.snapshot.write_snapshot`.

    Examples
    --------
    >>> to_snapshot_records(empty_deliveries())
    []
    """
    members: dict[str, dict[bytes, float]] = {}
    for namespace, topic, member, score in _copies(frame, guild_id):
        members.setdefault(f"{namespace}:{topic}", {})[member] = score
    return [
        KeyRecord(key, "zset", sorted(pairs.items(), key=lambda p: (p[1], p[0])))
        for key, pairs in sorted(members.items())
    ]


class _Tally:
    """What the metadata says about the rows written so far."""

    def __init__(self, kind: Kind, source: str | None) -> None:
        self.kind, self.source = kind, source
        self.rows, self.inexact = 0, 0
        self.ids: set[int] = set()
        self.runs: list[list[Any]] = []
        self.low: int | None = None
        self.high: int | None = None
        self.topics: dict[str, str] = {}
        self.stored: dict[str, list[str]] = {}

    def add(self, frame: pd.DataFrame) -> Iterator[bytes]:
        """Count a frame and yield its JSONL lines."""
        for start in range(0, len(frame), CHUNK_ROWS):
            chunk = frame.iloc[start : start + CHUNK_ROWS]
            lines = to_message_json(chunk)
            self._check(chunk, lines)
            self.count(chunk)
            yield from lines

    def count(self, frame: pd.DataFrame) -> None:
        """Count a frame's rows, ids, guilds and time span."""
        self.ids.update(int(value) for value in frame["id"].tolist())
        for guild in frame["guild_id"].tolist():
            if self.runs and self.runs[-1][0] == guild:
                self.runs[-1][1] += 1
            else:
                self.runs.append([guild, 1])
        if len(frame):
            low, high = (
                int(frame["timestamp_ms"].min()),
                int(frame["timestamp_ms"].max()),
            )
            self.low = low if self.low is None else min(self.low, low)
            self.high = high if self.high is None else max(self.high, high)
        self.rows += len(frame)

    def _check(self, frame: pd.DataFrame, lines: list[bytes]) -> None:
        if RAW_COLUMN not in frame.columns:
            self.inexact += _count_inexact(frame, lines)
        where = [_WHERE.decode(line) for line in lines]
        if self.kind == "deliveries":
            self._check_topics(frame, where)
        else:
            self._check_stored(frame)

    def _check_topics(self, frame: pd.DataFrame, where: list[_Where]) -> None:
        for offset, (topic, found) in enumerate(
            zip(frame["topic"].tolist(), where, strict=True)
        ):
            if topic != _line_topic(found):
                self.topics[str(self.rows + offset)] = topic

    def _check_stored(self, frame: pd.DataFrame) -> None:
        pairs = zip(
            frame["topics"].tolist(), frame["message_topics"].tolist(), strict=True
        )
        for offset, (stored, declared) in enumerate(pairs):
            if list(stored) != _default_topics(declared):
                self.stored[str(self.rows + offset)] = list(stored)

    def metadata(
        self, fmt: Format, columns: tuple[str, ...], now: Any
    ) -> ExportMetadata:
        return ExportMetadata(
            format=fmt,
            kind=self.kind,
            source=self.source,
            guild_ids=tuple(dict.fromkeys(guild for guild, _ in self.runs)),
            first_time=_ms_stamp(self.low),
            last_time=_ms_stamp(self.high),
            rows=self.rows,
            messages=len(self.ids),
            exported_at=_now(now),
            version=_version(),
            columns=columns,
            layout=self._layout(),
        )

    def _layout(self) -> dict[str, Any]:
        layout: dict[str, Any] = {"guild_runs": self.runs}
        if self.topics:
            layout["topics"] = self.topics
        if self.stored:
            layout["stored_topics"] = self.stored
        return layout


def _frames(
    msgs: Frames, *, jsonl: bool = False
) -> tuple[Iterator[pd.DataFrame], pd.DataFrame]:
    """The frames to write, each checked, and the first one (kind and columns)."""
    if isinstance(msgs, pd.DataFrame):
        return iter([_checked(msgs, jsonl)]), msgs
    iterator = iter(msgs)
    head = next(iterator, None)
    if head is None:
        raise SnapshotError("nothing to export: the iterable of frames is empty")
    first = _checked(head, jsonl)

    def chained() -> Iterator[pd.DataFrame]:
        yield first
        for frame in iterator:
            yield _checked(frame, jsonl)

    return chained(), first


def _jsonl_columns(frame: pd.DataFrame) -> tuple[str, ...]:
    """Columns a JSONL export needs: all of them, unless the stored bytes are kept."""
    if RAW_COLUMN in frame.columns:
        return ("message_topics",)
    names = DELIVERY_COLUMNS if _kind(frame) == "deliveries" else MESSAGE_COLUMNS
    return tuple(name for name in names if name != RAW_COLUMN)


_COUNTED: Final = ("id", "guild_id", "timestamp_ms")
"""Columns every export needs, for its metadata."""


def _checked(frame: Any, jsonl: bool) -> pd.DataFrame:
    """The frame, if it is a message or delivery frame with the columns needed."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(
            f"expected a message or delivery frame (from bus.messages() or "
            f"bus.deliveries()), not {type(frame).__name__}"
        )
    needed = _jsonl_columns(frame) if jsonl else ()
    wanted = [*_COUNTED, "topic" if _kind(frame) == "deliveries" else "topics"]
    missing = [name for name in (*wanted, *needed) if name not in frame.columns]
    if missing:
        raise SnapshotError(
            f"the frame lacks the columns {missing}: export a frame from "
            "bus.messages() or bus.deliveries(), with any subset of rows, and keep "
            "at least these columns"
        )
    return frame


def _kind(frame: pd.DataFrame) -> Kind:
    return "deliveries" if "topic" in frame.columns else "messages"


def _columns(frame: pd.DataFrame) -> tuple[str, ...]:
    return tuple(str(name) for name in frame.columns)


def _source(frame: pd.DataFrame, source: str | None) -> str | None:
    chosen = source or frame.attrs.get("source")
    if not chosen:
        return None
    from rdebug_nb.bus import redact_url

    return redact_url(str(chosen))


def _count_inexact(frame: pd.DataFrame, lines: list[bytes]) -> int:
    """Re-serialised lines that may differ from the stored member.

    Those whose length differs from ``size`` (a one-topic string written as a
    list), and those with recipients (their names are not in the frame).
    """
    sizes = frame["size"].tolist()
    recipients = frame["recipients"].tolist()
    return sum(
        len(line) != size or len(tags) > 0
        for line, size, tags in zip(lines, sizes, recipients, strict=True)
    )


def _warn_inexact(count: int, rows: int, path: str | Path) -> None:
    if count:
        warnings.warn(
            f"{count} of {rows} lines of {str(path)!r} may differ from the stored "
            "members byte for byte: the frame has no 'raw' column, so they were "
            "re-serialised, and a one-topic string or recipient names are not in "
            "the frame. They are still valid RusticAI messages",
            RdebugWarning,
            stacklevel=3,
        )


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    names = [name for name in _ROW_FIELDS if name in frame.columns]
    columns = [frame[name].tolist() for name in names]
    return [
        dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)
    ]


def _published_topics(frame: pd.DataFrame, rows: list[dict[str, Any]]) -> list[Any]:
    """``topic_published_to`` of each row's copy (a message row: its first copy)."""
    if "topic_published_to" in frame.columns:
        return [_text(row["topic_published_to"]) for row in rows]
    return [None if row["is_dead_letter"] else _first_copy(row) for row in rows]


def _first_copy(row: dict[str, Any]) -> str:
    """The topic of the copy a message row keeps: the first in sorted order."""
    stored: list[str] = list(row["topics"]) or list(row["message_topics"])
    return min(stored)


def _message(row: dict[str, Any], topic: str | None) -> dict[str, Any]:
    """A RusticAI message dict from one frame row, fields in RusticAI's order."""
    return {
        "sender": {"id": _text(row["sender_id"]), "name": _text(row["sender_name"])},
        "topics": list(row["message_topics"]),
        "recipient_list": [{"id": tag, "name": None} for tag in row["recipients"]],
        "payload": row["payload"],
        "format": row["format"],
        "in_response_to": _int(row["in_response_to"]),
        "thread": [int(value) for value in row["thread"]],
        "conversation_id": _int(row["conversation_id"]),
        "forward_header": row["forward_header"],
        "routing_slip": row["routing_slip"],
        "message_history": row["message_history"],
        "ttl": _int(row["ttl"]),
        "is_error_message": bool(row["is_error"]),
        "traceparent": _text(row["traceparent"]),
        "session_state": row["session_state"],
        "topic_published_to": topic,
        "enrich_with_history": int(row["enrich_with_history"]),
        "process_status": _text(row["process_status"]),
        "origin_guild_stack": row["origin_guild_stack"],
        "id": int(row["id"]),
        "priority": int(row["priority"]),
        "timestamp": float(row["timestamp_ms"]),
    }


def _copies(
    frame: pd.DataFrame, guild_id: str | None
) -> Iterator[tuple[str, str, bytes, float]]:
    """(namespace, topic, member, score) of every stored copy a frame stands for."""
    lines = to_message_json(frame)
    guilds = frame["guild_id"].tolist()
    stamps = frame["timestamp_ms"].tolist()
    is_delivery = "topic" in frame.columns
    topics = frame["topic" if is_delivery else "topics"].tolist()
    for line, guild, stamp, topic in zip(lines, guilds, stamps, topics, strict=True):
        namespace = guild_id or guild
        for name in [topic] if is_delivery else topic:
            yield namespace, name, _copy_for(line, name), float(stamp)


def _copy_for(line: bytes, topic: str) -> bytes:
    """The member as stored under ``topic`` (its ``topic_published_to`` set)."""
    found = _WHERE.decode(line)
    if _line_topic(found) == topic:
        return line
    message = msgspec.json.decode(line)
    message["topic_published_to"] = topic
    return _ENCODER.encode(message)


def _line_topic(where: _Where) -> str:
    return where.topic_published_to or DEAD_LETTER_TOPIC


def _default_topics(declared: Iterable[str]) -> list[str]:
    """The stored topics a message line is read back with, unless recorded."""
    return list(dict.fromkeys(declared))


def _try_metadata(path: str | Path) -> ExportMetadata | None:
    target = Path(path)
    if target.name.endswith(SIDECAR_SUFFIX):
        return ExportMetadata.from_json(_read_bytes(target))
    if _is_parquet(target):
        return _parquet_metadata(target)
    side = sidecar_path(target)
    return ExportMetadata.from_json(_read_bytes(side)) if side.exists() else None


def _is_parquet(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(4) == b"PAR1"
    except OSError:
        return False


def _parquet_metadata(path: Path) -> ExportMetadata | None:
    _, pq = _arrow()
    kv = pq.read_metadata(str(path)).metadata or {}
    text = kv.get(_META_KEY)
    return ExportMetadata.from_json(text) if text else None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise SnapshotError(f"cannot read {str(path)!r}: {err.strerror}") from err


def _read_lines(path: str | Path) -> list[bytes]:
    raw = _read_bytes(Path(path))
    return [line.rstrip(b"\r") for line in raw.split(b"\n") if line.strip()]


_READ_BACK: Final = {
    "parquet": "read it with rd.read_parquet",
    "csv": "CSV keeps only the flat columns and cannot be read back into "
    "messages; export to JSONL or Parquet for that",
}


def _line_guilds(
    meta: ExportMetadata | None, guild_id: str | None, count: int, path: str | Path
) -> list[str]:
    if guild_id is not None:
        return [guild_id] * count
    if meta is None:
        raise SnapshotError(
            f"{str(path)!r} has no {sidecar_path(path).name} sidecar naming its "
            "guild; pass guild_id= to say which namespace the messages belong to"
        )
    guilds = [guild for guild, n in meta.layout.get("guild_runs", []) for _ in range(n)]
    if len(guilds) != count:
        raise SnapshotError(
            f"{str(path)!r} has {count} lines but its sidecar describes "
            f"{len(guilds)}; the file was changed after export. Pass guild_id= to "
            "read it anyway"
        )
    return guilds


def _runs(guilds: list[str]) -> Iterator[tuple[str, int, int]]:
    start = 0
    for index in range(1, len(guilds) + 1):
        if index == len(guilds) or guilds[index] != guilds[start]:
            yield guilds[start], start, index
            start = index


def _decode_run(
    kind: Kind,
    guild: str,
    lines: list[bytes],
    start: int,
    stop: int,
    layout: dict[str, Any],
) -> pd.DataFrame:
    """Decode lines[start:stop] (one guild) into frame rows in line order."""
    where = [_try_where(line) for line in lines[start:stop]]
    recorded = layout.get("topics", {})
    topics = [
        recorded.get(str(start + i), _line_topic(w) if w else DEAD_LETTER_TOPIC)
        for i, w in enumerate(where)
    ]
    entries = [
        (f"{guild}:{topic}", topic, [line])
        for topic, line in zip(topics, lines[start:stop], strict=True)
    ]
    deliveries = decode_deliveries(guild, entries)
    deliveries = _in_line_order(deliveries, where, topics)
    if kind == "deliveries":
        return deliveries
    return _message_rows(deliveries, where, start, layout.get("stored_topics", {}))


def _try_where(line: bytes) -> _Where | None:
    try:
        return _WHERE.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def _in_line_order(
    frame: pd.DataFrame, where: list[_Where | None], topics: list[str]
) -> pd.DataFrame:
    """Undo the time sort of :func:`decode_deliveries` (it is stable)."""
    if frame.attrs.get("skips") or len(frame) != len(where):
        return frame
    keys = [
        (int(w.timestamp), w.id, topic)
        for w, topic in zip(where, topics, strict=True)
        if w is not None
    ]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    restored = frame.iloc[np.argsort(order, kind="stable")].reset_index(drop=True)
    restored.attrs = dict(frame.attrs)
    return restored


def _message_rows(
    deliveries: pd.DataFrame,
    where: list[_Where | None],
    start: int,
    stored: dict[str, list[str]],
) -> pd.DataFrame:
    frame = to_messages(deliveries)
    if len(frame) != len(where) or None in where:
        return frame
    declared = frame["message_topics"].tolist()
    frame["topics"] = _objects(
        stored.get(str(start + i), _default_topics(topics))
        for i, topics in enumerate(declared)
    )
    return frame


def _concat(parts: list[pd.DataFrame], kind: Kind) -> pd.DataFrame:
    if not parts:
        empty = empty_deliveries()
        return empty if kind == "deliveries" else to_messages(empty)
    skips = tuple(skip for part in parts for skip in part.attrs.get("skips", ()))
    frame = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
    frame.attrs = {"skips": skips}
    return frame


def _select(
    frame: pd.DataFrame, meta: ExportMetadata | None, lines: list[bytes], raw: bool
) -> pd.DataFrame:
    """Give the frame the exported columns (adding ``raw`` from the lines)."""
    exported = meta.columns if meta else tuple(frame.columns)
    wants_raw = raw or RAW_COLUMN in exported
    if wants_raw and RAW_COLUMN not in frame.columns and len(frame) == len(lines):
        frame[RAW_COLUMN] = _objects(lines)
    if meta is None:
        return frame
    present = [name for name in exported if name in frame.columns]
    if raw and RAW_COLUMN in frame.columns and RAW_COLUMN not in present:
        present.append(RAW_COLUMN)
    selected = frame.loc[:, present]
    selected.attrs = dict(frame.attrs)
    return selected


def _objects(values: Iterable[Any]) -> np.ndarray[Any, Any]:
    items = list(values)
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


@dataclass(frozen=True)
class _Layout:
    """How each special column of a frame is stored in Parquet.

    ``json``: JSON text (``lazy`` ones come back as :class:`JsonArray`);
    ``lists``: Arrow lists; ``objects``: text or bytes that come back with dtype
    ``object``. Other columns go through pyarrow's own pandas conversion.
    """

    json: tuple[str, ...]
    lazy: tuple[str, ...]
    lists: tuple[str, ...]
    objects: tuple[str, ...]

    @classmethod
    def of(cls, frame: pd.DataFrame) -> _Layout:
        kinds = {name: _storage(frame, name) for name in frame.columns}
        return cls(
            json=tuple(n for n, k in kinds.items() if k in ("json", "lazy")),
            lazy=tuple(n for n, k in kinds.items() if k == "lazy"),
            lists=tuple(n for n, k in kinds.items() if k == "list"),
            objects=tuple(n for n, k in kinds.items() if k == "object"),
        )

    @classmethod
    def read(cls, kv: dict[bytes, bytes]) -> _Layout:
        found = [tuple(json.loads(kv.get(key, b"[]"))) for key in _LAYOUT_KEYS]
        return cls(*found)

    def metadata(self) -> dict[bytes, str]:
        values = (self.json, self.lazy, self.lists, self.objects)
        return {
            key: json.dumps(list(v))
            for key, v in zip(_LAYOUT_KEYS, values, strict=True)
        }

    @property
    def special(self) -> set[str]:
        return {*self.json, *self.lists, *self.objects}


def _storage(frame: pd.DataFrame, name: str) -> str:
    """``"json"``, ``"lazy"``, ``"list"``, ``"object"`` or ``"plain"``."""
    column = frame[name]
    if isinstance(column.dtype, JsonDtype):
        return "lazy"
    if name in LIST_COLUMNS:
        return "list"
    if name in JSON_COLUMNS:
        return "json"
    if column.dtype != object:
        return "plain"
    is_text = name in TEXT_COLUMNS or name == RAW_COLUMN or _all_text(column)
    return "object" if is_text else "json"


def _all_text(column: pd.Series) -> bool:
    values = column.dropna().tolist()
    return bool(values) and all(isinstance(v, str | bytes) for v in values)


def _encode_chunk(frame: pd.DataFrame, layout: _Layout) -> pd.DataFrame:
    """A copy of ``frame`` whose nested columns are JSON text."""
    encoded = {
        name: _json_text(frame[name]) if name in layout.json else frame[name]
        for name in frame.columns
    }
    return pd.DataFrame(encoded, index=frame.index)


def _json_text(column: pd.Series) -> pd.Series:
    try:
        texts = [
            None if value is None else _ENCODER.encode(value).decode()
            for value in column.tolist()
        ]
    except (msgspec.EncodeError, TypeError) as err:
        raise SnapshotError(
            f"column {column.name!r} holds values JSON cannot hold ({err}); "
            "convert or drop it before the export"
        ) from err
    return pd.Series(_objects(texts), index=column.index, dtype=object)


def _arrow_schema(pa: Any, frame: pd.DataFrame, layout: _Layout) -> Any:
    """The Parquet schema of a frame, with exact types for ids and lists."""
    empty = _encode_chunk(frame.iloc[:0], layout)
    schema = pa.Schema.from_pandas(empty, preserve_index=False)
    types = {name: pa.string() for name in (*layout.json, *layout.objects)}
    types.update(
        {name: pa.list_(getattr(pa, LIST_COLUMNS[name])()) for name in layout.lists}
    )
    types.update(
        {name: pa.binary() for name in layout.objects if _is_bytes(frame, name)}
    )
    for name, kind in types.items():
        schema = schema.set(schema.get_field_index(name), pa.field(name, kind))
    return schema.with_metadata({**(schema.metadata or {}), **layout.metadata()})


def _is_bytes(frame: pd.DataFrame, name: str) -> bool:
    first = frame[name].dropna().head(1).tolist()
    return name == RAW_COLUMN or bool(first and isinstance(first[0], bytes))


def _read_column(table: Any, name: str, layout: _Layout) -> Any:
    """A special column of a Parquet table as the frame had it."""
    if name not in layout.json:
        return pd.Series(_objects(table.column(name).to_pylist()), dtype=object)
    texts = table.column(name).cast("binary").to_pylist()
    if name in layout.lazy:
        return JsonArray.from_json([b"null" if t is None else t for t in texts])
    decoded = (None if text is None else _decode(text) for text in texts)
    return pd.Series(_objects(decoded), dtype=object)


def _with_priority_names(frame: pd.DataFrame) -> pd.DataFrame:
    """Give ``priority_name`` all eight categories (Parquet keeps those used)."""
    if "priority_name" in frame.columns:
        names = list(PRIORITY_NAMES)
        frame["priority_name"] = pd.Categorical(
            frame["priority_name"], categories=names
        )
    return frame


def _arrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(
            "Parquet export needs pyarrow: pip install 'pyarrow>=17'"
        ) from err
    return pa, pq


def _text(value: Any) -> str | None:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def _int(value: Any) -> int | None:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return int(value)


def _now(now: datetime | pd.Timestamp | None) -> pd.Timestamp:
    stamp = pd.Timestamp(now if now is not None else datetime.now(UTC))
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _ms_stamp(value: int | None) -> pd.Timestamp | None:
    return None if value is None else pd.Timestamp(int(value), unit="ms", tz="UTC")


def _iso(stamp: pd.Timestamp | None) -> str | None:
    return None if stamp is None else stamp.isoformat()


def _stamp(text: str | None) -> pd.Timestamp | None:
    return None if text is None else pd.Timestamp(text)


def _version() -> str:
    try:
        return importlib_metadata.version("rdebug_nb")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"

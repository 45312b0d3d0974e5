"""Snapshots: the keyspace JSONL format, one Redis key per line.

Each line is a JSON object with the fields ``key``, ``type`` (``"string"``,
``"zset"`` or ``"hash"``), ``ttl_ms`` (remaining time to live when the snapshot was
taken, ``-1`` for none), ``expire_at_ms`` (absolute Unix milliseconds or ``null``) and
``value``: the text of a string, ``[[member, score], ...]`` in ascending score order
for a sorted set, or a ``{field: value}`` object for a hash. Lines are written with
``json.dumps(..., ensure_ascii=False)`` and sorted by key, so a snapshot written,
loaded into Redis and written again is identical byte for byte.

Values that are not valid UTF-8 cannot be JSON text; such a key is written with an
extra field ``"encoding": "base64"`` and every text in its ``value`` (members,
fields, values) base64-encoded. Readers that do not know the field still see a
well-formed line.

This module reads and writes files only; :meth:`rdebug_nb.Bus.load_snapshot` and
:meth:`rdebug_nb.Bus.save_snapshot` move records in and out of Redis.

Examples
--------
>>> record = KeyRecord("g:t", "zset", [(b"m", 5.0)])
>>> to_line(record)  # doctest: +ELLIPSIS
'{"key": "g:t", "type": "zset", "ttl_ms": -1, ..., "value": [["m", 5.0]]}'
>>> from_line(to_line(record)) == record
True
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rdebug_nb.errors import SnapshotError

KeyType = Literal["string", "zset", "hash"]
ZsetValue = list[tuple[bytes, float]]
HashValue = dict[bytes, bytes]
Value = bytes | ZsetValue | HashValue

KEY_TYPES: tuple[KeyType, ...] = ("string", "zset", "hash")


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One Redis key as held in a snapshot.

    Attributes
    ----------
    key : str
        The key name.
    type : {"string", "zset", "hash"}
        The Redis type.
    value : bytes, list of (bytes, float) or dict of bytes to bytes
        The stored value; a sorted set is a list of (member, score) pairs.
    ttl_ms : int
        Time to live in milliseconds when the snapshot was taken; -1 for none.
    expire_at_ms : int or None
        Absolute expiry in Unix milliseconds, None for none.
    """

    key: str
    type: KeyType
    value: Value = field(repr=False)
    ttl_ms: int = -1
    expire_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class SnapshotSkip:
    """A snapshot line that was not loaded, and why."""

    line: int
    key: str | None
    reason: str


def read_snapshot(path: str | Path) -> Iterator[KeyRecord | SnapshotSkip]:
    """Read a keyspace JSONL file, yielding records and skips for bad lines.

    Parameters
    ----------
    path : str or Path
        The snapshot file.

    Yields
    ------
    KeyRecord or SnapshotSkip
        One item per non-empty line, in file order.

    Raises
    ------
    SnapshotError
        If the file cannot be opened.
    """
    try:
        handle = Path(path).open("rb")  # noqa: SIM115 - closed by the with below
    except OSError as err:
        raise SnapshotError(
            f"cannot open snapshot {str(path)!r}: {err.strerror}"
        ) from err
    with handle:
        for number, raw in enumerate(handle, start=1):
            if raw.strip():
                yield _parse_line(number, raw)


def write_snapshot(records: Iterable[KeyRecord], path: str | Path) -> int:
    """Write records to a keyspace JSONL file, sorted by key.

    Returns
    -------
    int
        The number of lines written.
    """
    ordered = sorted(records, key=lambda record: record.key)
    with Path(path).open("w", encoding="utf-8", newline="\n") as handle:
        for record in ordered:
            handle.write(to_line(record) + "\n")
    return len(ordered)


def to_line(record: KeyRecord) -> str:
    """Serialise one record as a snapshot line (without the newline)."""
    encoded = _needs_base64(record)
    text = _b64 if encoded else _utf8
    body: dict[str, Any] = {
        "key": record.key,
        "type": record.type,
        "ttl_ms": record.ttl_ms,
        "expire_at_ms": record.expire_at_ms,
        "value": _value_to_json(record, text),
    }
    if encoded:
        body["encoding"] = "base64"
    return json.dumps(body, ensure_ascii=False)


def from_line(line: str | bytes) -> KeyRecord:
    """Parse one snapshot line.

    Raises
    ------
    SnapshotError
        If the line is not a snapshot record; the message says what is wrong.
    """
    try:
        body = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SnapshotError(f"not JSON: {err}") from err
    if not isinstance(body, dict):
        raise SnapshotError("not a JSON object")
    return _record_from_json(body)


def _parse_line(number: int, raw: bytes) -> KeyRecord | SnapshotSkip:
    try:
        return from_line(raw)
    except SnapshotError as err:
        return SnapshotSkip(number, _key_of(raw), str(err))


def _key_of(raw: bytes) -> str | None:
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    key = body.get("key") if isinstance(body, dict) else None
    return key if isinstance(key, str) else None


def _record_from_json(body: dict[str, Any]) -> KeyRecord:
    key, kind = body.get("key"), body.get("type")
    if not isinstance(key, str):
        raise SnapshotError("field 'key' is missing or not a string")
    if kind not in KEY_TYPES:
        raise SnapshotError(f"key {key!r}: type {kind!r} is not one of {KEY_TYPES}")
    decode = _unb64 if body.get("encoding") == "base64" else _to_bytes
    try:
        value = _value_from_json(kind, body.get("value"), decode)
        ttl = int(body.get("ttl_ms", -1))
        expire = body.get("expire_at_ms")
        return KeyRecord(key, kind, value, ttl, None if expire is None else int(expire))
    except (TypeError, ValueError, binascii.Error) as err:
        raise SnapshotError(
            f"key {key!r}: value does not fit type {kind!r}: {err}"
        ) from err


def _value_from_json(kind: str, value: Any, decode: Any) -> Value:
    if kind == "string":
        return bytes(decode(value))
    if kind == "zset":
        return [(decode(member), _score(score)) for member, score in value]
    if not isinstance(value, dict):
        raise TypeError("a hash value must be a JSON object")
    return {decode(name): decode(text) for name, text in value.items()}


def _score(score: Any) -> float:
    if isinstance(score, bool) or not isinstance(score, int | float):
        raise TypeError(f"score {score!r} is not a number")
    return float(score)


def _value_to_json(record: KeyRecord, text: Any) -> Any:
    value = record.value
    if isinstance(value, bytes):
        return text(value)
    if isinstance(value, list):
        return [[text(member), score] for member, score in value]
    return {text(name): text(value[name]) for name in sorted(value)}


def _needs_base64(record: KeyRecord) -> bool:
    try:
        _value_to_json(record, _utf8)
    except UnicodeDecodeError:
        return True
    return False


def _to_bytes(value: Any) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value.encode("utf-8")


def _utf8(value: bytes) -> str:
    return value.decode("utf-8")


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _unb64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"expected base64 text, got {type(value).__name__}")
    return base64.b64decode(value, validate=True)

"""Move snapshot records in and out of a Redis server (used by the Bus)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import redis

from rdebug_nb.snapshot import KeyRecord, SnapshotSkip

logger = logging.getLogger(__name__)

Expiry = Literal["keep", "restart", "persist"]

_BATCH: Final = 200
_ZADD_CHUNK: Final = 1000


@dataclass
class LoadReport:
    """What :meth:`rdebug_nb.Bus.load_snapshot` wrote and what it did not.

    Attributes
    ----------
    loaded : int
        Keys written.
    expired : list of str
        Keys whose recorded expiry had already passed (not written, as Redis
        would have dropped them).
    existing : list of str
        Keys that already existed and were left alone (``replace=False``).
    skips : list of SnapshotSkip
        Lines that are not snapshot records.
    """

    loaded: int = 0
    expired: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    skips: list[SnapshotSkip] = field(default_factory=list)

    def __repr__(self) -> str:
        return (
            f"LoadReport(loaded={self.loaded}, expired={len(self.expired)}, "
            f"existing={len(self.existing)}, skipped={len(self.skips)})"
        )


def server_time_ms(client: redis.Redis) -> int:
    """The server's clock in Unix milliseconds."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def write_records(
    client: redis.Redis,
    items: Iterable[KeyRecord | SnapshotSkip],
    *,
    expiry: Expiry = "keep",
    replace: bool = False,
) -> LoadReport:
    """Write records in pipelined batches; see :class:`LoadReport`."""
    report = LoadReport()
    now = server_time_ms(client)
    batch: list[KeyRecord] = []
    for item in items:
        if isinstance(item, SnapshotSkip):
            report.skips.append(item)
        elif (
            expiry == "keep"
            and item.expire_at_ms is not None
            and item.expire_at_ms <= now
        ):
            report.expired.append(item.key)
        else:
            batch.append(item)
        if len(batch) >= _BATCH:
            _write_batch(client, batch, expiry, replace, report)
            batch = []
    _write_batch(client, batch, expiry, replace, report)
    return report


def read_records(
    client: redis.Redis, keys: Sequence[str], *, now_ms: int
) -> tuple[list[KeyRecord], list[str]]:
    """Read keys as records; returns the records and the keys of other types.

    ``ttl_ms`` of each record counts from ``now_ms``; ``expire_at_ms`` is the
    server's absolute expiry (``PEXPIRETIME``).
    """
    records: list[KeyRecord] = []
    unsupported: list[str] = []
    for start in range(0, len(keys), _BATCH):
        batch = keys[start : start + _BATCH]
        for key, (kind, expire_at, value) in zip(
            batch, _read_batch(client, batch), strict=True
        ):
            record = _to_record(key, kind, expire_at, value, now_ms)
            (records.append(record) if record else unsupported.append(key))
    return records, unsupported


def _write_batch(
    client: redis.Redis,
    batch: list[KeyRecord],
    expiry: Expiry,
    replace: bool,
    report: LoadReport,
) -> None:
    if not batch:
        return
    present = _existing(client, batch) if not replace else set()
    pipe = client.pipeline(transaction=False)
    for record in batch:
        if record.key in present:
            report.existing.append(record.key)
            continue
        _queue_record(pipe, record, expiry, replace)
        report.loaded += 1
    pipe.execute()
    logger.info("wrote %s keys", len(batch) - len(present))


def _existing(client: redis.Redis, batch: list[KeyRecord]) -> set[str]:
    pipe = client.pipeline(transaction=False)
    for record in batch:
        pipe.exists(record.key)
    return {
        record.key for record, found in zip(batch, pipe.execute(), strict=True) if found
    }


def _queue_record(pipe: Any, record: KeyRecord, expiry: Expiry, replace: bool) -> None:
    if replace:
        pipe.delete(record.key)
    value = record.value
    if isinstance(value, bytes):
        pipe.set(record.key, value)
    elif isinstance(value, list):
        for start in range(0, len(value), _ZADD_CHUNK):
            pipe.zadd(record.key, dict(value[start : start + _ZADD_CHUNK]))
    else:
        pipe.hset(record.key, mapping={name: value[name] for name in sorted(value)})
    if expiry == "keep" and record.expire_at_ms is not None:
        pipe.pexpireat(record.key, record.expire_at_ms)
    elif expiry == "restart" and record.ttl_ms > 0:
        pipe.pexpire(record.key, record.ttl_ms)


def _read_batch(client: redis.Redis, keys: Sequence[str]) -> list[tuple[str, int, Any]]:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.type(key)
        pipe.pexpiretime(key)
    answers = pipe.execute()
    kinds = [_text(answers[i]) for i in range(0, len(answers), 2)]
    expiries = [int(answers[i + 1]) for i in range(0, len(answers), 2)]
    pipe = client.pipeline(transaction=False)
    for key, kind in zip(keys, kinds, strict=True):
        _queue_read(pipe, key, kind)
    values = pipe.execute()
    return list(zip(kinds, expiries, values, strict=True))


def _queue_read(pipe: Any, key: str, kind: str) -> None:
    if kind == "string":
        pipe.get(key)
    elif kind == "zset":
        pipe.zrange(key, 0, -1, withscores=True)
    elif kind == "hash":
        pipe.hgetall(key)
    else:
        pipe.type(key)  # a keyed placeholder: cluster pipelines refuse keyless ECHO


def _to_record(
    key: str, kind: str, expire_at: int, value: Any, now_ms: int
) -> KeyRecord | None:
    """Build a record; ``expire_at`` is PEXPIRETIME (-1: none), ``now_ms`` the
    snapshot time that ``ttl_ms`` is counted from."""
    if kind not in ("string", "zset", "hash") or value is None:
        return None
    ttl = expire_at - now_ms if expire_at >= 0 else -1
    if kind == "zset":
        value = [(member, float(score)) for member, score in value]
    return KeyRecord(key, kind, value, ttl, expire_at if expire_at >= 0 else None)  # type: ignore[arg-type]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

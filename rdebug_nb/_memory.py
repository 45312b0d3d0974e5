"""A read-only, in-memory stand-in for a redis-py client over snapshot records.

:class:`MemoryClient` answers the read commands the Bus and discovery use
(``SCAN``, ``TYPE``, sorted-set ranges, ``GET``, ``HGETALL``, expiry queries,
``TIME``) exactly as redis-py does with ``decode_responses=False``, from a list of
:class:`~rdebug_nb.snapshot.KeyRecord`. Every write raises
:class:`~rdebug_nb.errors.WriteRefused`.

Its clock stands still at the snapshot's own time, so keys that a live server
would have expired since are still there, with the time to live they had when
the snapshot was taken.

Examples
--------
>>> from rdebug_nb.snapshot import KeyRecord
>>> client = MemoryClient([KeyRecord("g:t", "zset", [(b"a", 1.0), (b"b", 2.0)])])
>>> client.zrangebyscore("g:t", "(1", "+inf", withscores=True)
[(b'b', 2.0)]
>>> list(client.scan_iter(match="g:*", _type="zset"))
[b'g:t']
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from typing import Any, Final

import redis

from rdebug_nb.errors import WriteRefused
from rdebug_nb.snapshot import KeyRecord

Score = float | int | str | bytes

_WRITES: Final = frozenset(
    {
        "append", "copy", "decr", "decrby", "delete", "expire", "expireat",
        "flushall", "flushdb", "getdel", "getex", "getset", "hdel", "hincrby",
        "hincrbyfloat", "hmset", "hset", "hsetnx", "incr", "incrby",
        "incrbyfloat", "lpush", "mset", "msetnx", "persist", "pexpire",
        "pexpireat", "psetex", "publish", "rename", "renamenx", "restore",
        "rpush", "sadd", "set", "setex", "setnx", "setrange", "unlink", "xadd",
        "zadd", "zincrby", "zpopmax", "zpopmin", "zrem", "zremrangebyrank",
        "zremrangebyscore",
    }
)  # fmt: skip
_WRONGTYPE: Final = "WRONGTYPE Operation against a key holding the wrong kind of value"


class _Zset:
    """A sorted set: members in Redis order (score, then member bytes)."""

    def __init__(self, pairs: Iterable[tuple[bytes, float]]) -> None:
        ordered = sorted(pairs, key=lambda pair: (pair[1], pair[0]))
        self.members = [member for member, _ in ordered]
        self.scores = [float(score) for _, score in ordered]

    def by_rank(self, start: int, end: int) -> range:
        size = len(self.members)
        first = max(start + size if start < 0 else start, 0)
        last = min(end + size if end < 0 else end, size - 1)
        return range(first, last + 1)

    def by_score(self, low: Score, high: Score) -> range:
        low_value, low_open = _bound(low)
        high_value, high_open = _bound(high)
        find_low = bisect.bisect_right if low_open else bisect.bisect_left
        find_high = bisect.bisect_left if high_open else bisect.bisect_right
        return range(
            find_low(self.scores, low_value), find_high(self.scores, high_value)
        )


class MemoryClient:
    """Snapshot records served through the subset of redis-py the Bus reads with.

    Parameters
    ----------
    records : iterable of KeyRecord
        The keyspace.
    now_ms : int, optional
        The client's clock in Unix milliseconds (``TIME``). Default: the
        snapshot's own time, read from its records (see :func:`snapshot_time_ms`).
    """

    def __init__(self, records: Iterable[KeyRecord], *, now_ms: int | None = None):
        self.records = {_key(record.key): record for record in records}
        self._zsets: dict[bytes, _Zset] = {}
        self.now_ms = (
            now_ms if now_ms is not None else snapshot_time_ms(self.records.values())
        )

    def __repr__(self) -> str:
        return f"<MemoryClient {len(self.records)} keys>"

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name in _WRITES:
            return _refuse(name)
        raise AttributeError(
            f"MemoryClient has no {name!r}: a snapshot answers only the read "
            "commands rdebug_nb uses"
        )

    def ping(self) -> bool:
        """Always answers, like a live server."""
        return True

    def close(self) -> None:
        """Nothing to close."""

    def time(self) -> tuple[int, int]:
        """The snapshot's clock as (seconds, microseconds)."""
        return self.now_ms // 1000, (self.now_ms % 1000) * 1000

    def echo(self, value: Any) -> bytes:
        """Give the value back, as Redis does."""
        return _key(value)

    def pipeline(self, transaction: bool = True) -> MemoryPipeline:
        """A batch of calls answered together by :meth:`MemoryPipeline.execute`."""
        return MemoryPipeline(self)

    def scan_iter(
        self,
        match: str | bytes | None = None,
        count: int | None = None,
        _type: str | None = None,
    ) -> Iterator[bytes]:
        """Key names, optionally filtered by a Redis glob pattern and type."""
        pattern = _glob(_key(match)) if match is not None else None
        for name, record in self.records.items():
            if pattern is not None and not pattern.fullmatch(name):
                continue
            if _type is None or record.type == _type.lower():
                yield name

    def type(self, name: Any) -> bytes:
        """``b"zset"``, ``b"string"``, ``b"hash"`` or ``b"none"``."""
        record = self.records.get(_key(name))
        return record.type.encode() if record else b"none"

    def exists(self, *names: Any) -> int:
        """How many of the names exist."""
        return sum(_key(name) in self.records for name in names)

    def get(self, name: Any) -> bytes | None:
        """The value of a string key."""
        value = self._value(name, "string")
        return value if isinstance(value, bytes) else None

    def hgetall(self, name: Any) -> dict[bytes, bytes]:
        """Every field of a hash key."""
        value = self._value(name, "hash")
        return dict(value) if isinstance(value, dict) else {}

    def pexpiretime(self, name: Any) -> int:
        """Absolute expiry in Unix ms; -1 without expiry, -2 for no key."""
        record = self.records.get(_key(name))
        if record is None:
            return -2
        return -1 if record.expire_at_ms is None else record.expire_at_ms

    def pttl(self, name: Any) -> int:
        """Time to live in ms on the snapshot's clock; -1 without expiry."""
        expire_at = self.pexpiretime(name)
        return expire_at if expire_at < 0 else expire_at - self.now_ms

    def zcard(self, name: Any) -> int:
        """Members of a sorted set."""
        zset = self._zset(name)
        return len(zset.members) if zset else 0

    def zcount(self, name: Any, min: Score, max: Score) -> int:
        """Members with a score in [min, max] (``(`` makes a bound exclusive)."""
        zset = self._zset(name)
        return len(zset.by_score(min, max)) if zset else 0

    def zrange(
        self, name: Any, start: int, end: int, withscores: bool = False
    ) -> list[Any]:
        """Members by rank, ascending."""
        zset = self._zset(name)
        return _pick(zset, zset.by_rank(start, end), withscores) if zset else []

    def zrangebyscore(
        self,
        name: Any,
        min: Score,
        max: Score,
        start: int | None = None,
        num: int | None = None,
        withscores: bool = False,
    ) -> list[Any]:
        """Members with a score in [min, max], ascending, with LIMIT start num."""
        zset = self._zset(name)
        if zset is None:
            return []
        return _pick(zset, _limit(zset.by_score(min, max), start, num), withscores)

    def zrevrangebyscore(
        self,
        name: Any,
        max: Score,
        min: Score,
        start: int | None = None,
        num: int | None = None,
        withscores: bool = False,
    ) -> list[Any]:
        """Members with a score in [min, max], descending, with LIMIT start num."""
        zset = self._zset(name)
        if zset is None:
            return []
        ranks = zset.by_score(min, max)[::-1]
        return _pick(zset, _limit(ranks, start, num), withscores)

    def _value(self, name: Any, kind: str) -> Any:
        record = self.records.get(_key(name))
        if record is None:
            return None
        if record.type != kind:
            raise redis.exceptions.ResponseError(_WRONGTYPE)
        return record.value

    def _zset(self, name: Any) -> _Zset | None:
        key = _key(name)
        if key not in self._zsets:
            value = self._value(key, "zset")
            if value is None:
                return None
            self._zsets[key] = _Zset(value)
        return self._zsets[key]


class MemoryPipeline:
    """Calls queued on a :class:`MemoryClient`, answered in order by :meth:`execute`."""

    def __init__(self, client: MemoryClient) -> None:
        self._client = client
        self._calls: list[Callable[[], Any]] = []

    def __getattr__(self, name: str) -> Callable[..., MemoryPipeline]:
        if name in _WRITES:
            return _refuse(name)
        command: Callable[..., Any] = getattr(self._client, name)

        def queue(*args: Any, **kwargs: Any) -> MemoryPipeline:
            self._calls.append(lambda: command(*args, **kwargs))
            return self

        return queue

    def __enter__(self) -> MemoryPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reset()

    def __len__(self) -> int:
        return len(self._calls)

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Answer every queued call, in order, and empty the queue."""
        calls, self._calls = self._calls, []
        return [call() for call in calls]

    def reset(self) -> None:
        """Forget the queued calls."""
        self._calls = []


def snapshot_time_ms(records: Iterable[KeyRecord]) -> int:
    """When a snapshot was taken, as far as its records tell, in Unix ms.

    The latest ``expire_at_ms - ttl_ms`` of the keys that expire; without such
    keys, the highest sorted-set score (the newest message); else 0.

    Examples
    --------
    >>> snapshot_time_ms([KeyRecord("msg:g:1", "string", b"{}", 500, 2_000)])
    1500
    """
    taken = [
        r.expire_at_ms - r.ttl_ms
        for r in records
        if r.expire_at_ms is not None and r.ttl_ms >= 0
    ]
    if taken:
        return max(taken)
    scores = [
        pair[1] for r in records if isinstance(r.value, list) for pair in r.value[-1:]
    ]
    return int(max(scores)) if scores else 0


def _refuse(name: str) -> Callable[..., Any]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise WriteRefused(
            f"{name.upper()} refused: this bus reads a snapshot file, which is "
            "read-only. Load the snapshot into a server (Bus.load_snapshot on a "
            "writable connection) to change it"
        )

    return refuse


def _key(name: Any) -> bytes:
    if isinstance(name, bytes):
        return name
    return str(name).encode("utf-8", "surrogateescape")


def _bound(value: Score) -> tuple[float, bool]:
    text = value.decode() if isinstance(value, bytes) else str(value)
    is_open = text.startswith("(")
    number = text[1:] if is_open else text
    lowered = number.lower()
    if lowered in ("-inf", "+inf", "inf"):
        return (-math.inf if lowered == "-inf" else math.inf), is_open
    return float(number), is_open


def _limit(ranks: range, start: int | None, num: int | None) -> range:
    if start is None or num is None:
        return ranks
    if start < 0:
        return range(0)
    stop = len(ranks) if num < 0 else start + num
    return ranks[start:stop]


def _pick(zset: _Zset, ranks: range, withscores: bool) -> list[Any]:
    if withscores:
        return [(zset.members[i], zset.scores[i]) for i in ranks]
    return [zset.members[i] for i in ranks]


@lru_cache(maxsize=256)
def _glob(pattern: bytes) -> re.Pattern[bytes]:
    """Translate a Redis glob (``*``, ``?``, ``[...]``, ``\\x``) to a regex."""
    out, index = [], 0
    while index < len(pattern):
        char = pattern[index : index + 1]
        index += 1
        if char == b"\\" and index < len(pattern):
            out.append(re.escape(pattern[index : index + 1]))
            index += 1
        elif char in (b"*", b"?"):
            out.append(b".*" if char == b"*" else b".")
        elif char == b"[":
            part, index = _glob_class(pattern, index)
            out.append(part)
        else:
            out.append(re.escape(char))
    return re.compile(b"".join(out), re.DOTALL)


def _glob_class(pattern: bytes, index: int) -> tuple[bytes, int]:
    """The regex of a ``[...]`` class starting after ``[``, and where it ends."""
    body, negate = [], pattern[index : index + 1] == b"^"
    index += negate
    while index < len(pattern) and pattern[index : index + 1] != b"]":
        char = pattern[index : index + 1]
        if char == b"\\" and index + 1 < len(pattern):
            index += 1
            body.append(re.escape(pattern[index : index + 1]))
        else:
            body.append(b"-" if char == b"-" else re.escape(char))
        index += 1
    return b"[" + (b"^" if negate else b"") + b"".join(body) + b"]", index + 1

"""The tail: a live subscription to a guild's topics that loses nothing.

A :class:`Tail` opens its own connections, ``PSUBSCRIBE``\\ s to the guild's topic
keys (channel ``<guild_id>:<topic>``, exactly as RusticAI publishes) and reads
them on a daemon thread. Pub/sub drops whatever is published while a subscriber
is disconnected, so after every reconnect the tail reads the topic keys
(``ZRANGEBYSCORE`` from the newest time it saw, minus ``overlap_ms``), keeps what
it had not seen (deduplicated by topic and id) and records the :class:`Gap` it
filled. :meth:`Tail.reconcile` checks the result against the topic keys.

Counts count deliveries: a message published to two topics arrives twice, once
per topic, and is held twice (the frame of :meth:`Tail.to_frame` collapses them).

Examples
--------
>>> from rdebug_nb.server import EmbeddedServer
>>> import redis
>>> with EmbeddedServer() as server:
...     client = redis.Redis.from_url(server.url)
...     member = (
...         b'{"sender":{"id":"probe","name":"Probe"},"topics":"t","recipient_list":[],'
...         b'"payload":{"n":1},"format":"generic_json","in_response_to":null,'
...         b'"thread":[1],"conversation_id":null,"forward_header":null,'
...         b'"routing_slip":null,"message_history":[],"ttl":null,'
...         b'"is_error_message":false,"traceparent":null,"session_state":null,'
...         b'"topic_published_to":"t","enrich_with_history":0,"process_status":null,'
...         b'"origin_guild_stack":[],"id":9742500132942774272,"priority":4,'
...         b'"timestamp":1796300983041.0}'
...     )
...     with Tail(client, "g") as tail:
...         _ = client.zadd("g:t", {member: 1796300983041})
...         _ = client.publish("g:t", member)
...         first = next(iter(tail))
...     client.close()
>>> first.id, first.topic, first.data["payload"]
(9742500132942774272, 't', {'n': 1})

Notes
-----
Beyond what one connection can read, Redis itself protects the server: a
subscriber whose output buffer exceeds ``client-output-buffer-limit pubsub``
(by default 32 MB, or 8 MB for 60 s) is disconnected. The tail then reconnects
and backfills from the topic keys, so a burst it cannot follow shows up as a
gap, not as lost messages. A backfill takes at most ``backfill_limit`` new
deliveries; what is left beyond that is counted in :attr:`Gap.not_fetched` and
shows as missing in :meth:`Tail.reconcile`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, cast

import msgspec
import pandas as pd
import redis

from rdebug_nb import discovery
from rdebug_nb._query import MessageFilter, message_row
from rdebug_nb._subscription import RECOVERABLE, Connections, as_package_error
from rdebug_nb._warn import warn_skips
from rdebug_nb.errors import ConnectionFailed
from rdebug_nb.keys import glob_escape, split_topic_key, topic_key
from rdebug_nb.messages import (
    decode_deliveries,
    empty_deliveries,
    read_member,
    to_messages,
)

if TYPE_CHECKING:
    from rdebug_nb.bus import Bus

logger = logging.getLogger(__name__)

State = Literal[
    "idle", "connecting", "live", "paused", "reconnecting", "stopped", "failed"
]
Source = Literal["live", "backfill"]


_READ_TIMEOUT: Final = 0.05
_BATCH_SECONDS: Final = 0.05
_DRAIN: Final = 2000
_PAGE: Final = 5000
_SEEN_LIMIT: Final = 200_000
_CONFIRM_TIMEOUT: Final = 5.0


class _Head(msgspec.Struct):
    id: int
    timestamp: float
    topic_published_to: str | None = None


_HEAD: Final = msgspec.json.Decoder(_Head)


@dataclass(frozen=True, slots=True)
class TailMessage:
    """One delivery the tail received.

    Attributes
    ----------
    guild_id : str
        The guild it was published in.
    topic : str
        The topic it was published to (the channel without the guild id).
    id : int
        The message id, exact.
    timestamp_ms : int
        The message timestamp, Unix milliseconds.
    raw : bytes
        The published JSON, byte for byte as stored in the topic key.
    source : {"live", "backfill"}
        Whether it came over pub/sub or was read back from the topic key.
    """

    guild_id: str
    topic: str
    id: int
    timestamp_ms: int
    raw: bytes = field(repr=False)
    source: Source = "live"
    _cache: dict[str, Any] = field(
        default_factory=dict, repr=False, compare=False, hash=False
    )

    @property
    def data(self) -> dict[str, Any]:
        """The message decoded (ids stay exact Python ints)."""
        if "data" not in self._cache:
            where = f"message {self.id} on {self.topic!r} of {self.guild_id!r}"
            self._cache["data"] = read_member(self.raw, where)
        data: dict[str, Any] = self._cache["data"]
        return data

    @property
    def row(self) -> dict[str, Any]:
        """The message as a record with message-frame names (for filters)."""
        if "row" not in self._cache:
            self._cache["row"] = message_row(self.data, self.topic)
        row: dict[str, Any] = self._cache["row"]
        return row


@dataclass(frozen=True, slots=True)
class Gap:
    """A disconnection and what the backfill after it found.

    Attributes
    ----------
    count : int
        Deliveries found in the topic keys that had not arrived (0 if none
        were missed).
    first_ms, last_ms : int or None
        Time span of those deliveries (message timestamps, Unix ms).
    since_ms : int
        Where the backfill started reading (newest time seen minus the overlap).
    lost_at, restored_at : float
        Wall-clock Unix seconds when the connection was lost and restored.
    reason : str
        The error that ended the connection.
    not_fetched : int
        Entries beyond ``backfill_limit`` that were not read.
    """

    count: int
    first_ms: int | None
    last_ms: int | None
    since_ms: int
    lost_at: float
    restored_at: float
    reason: str
    not_fetched: int = 0


@dataclass(frozen=True, slots=True)
class TailCounts:
    """Counters of a tail (deliveries, not distinct messages).

    Attributes
    ----------
    received : int
        Deliveries received once each (live and backfilled).
    shown : int
        Received and passing the filter.
    filtered_out : int
        Received and not passing the filter.
    backfilled : int
        Received by reading the topic keys after a (re)connect.
    duplicates : int
        Copies of deliveries already received, dropped.
    evicted : int
        Shown deliveries pushed out of the bounded buffer.
    dropped : int
        Deliveries not handed to a lagging iterator or while paused, because
        ``max_pending`` was reached.
    other_guilds : int
        Messages on a matching channel that belong to another guild (a guild id
        that extends this one).
    unreadable : int
        Payloads that are not RusticAI messages.
    callback_errors : int
        Exceptions raised by callbacks and listeners (each logged).
    """

    received: int = 0
    shown: int = 0
    filtered_out: int = 0
    backfilled: int = 0
    duplicates: int = 0
    evicted: int = 0
    dropped: int = 0
    other_guilds: int = 0
    unreadable: int = 0
    callback_errors: int = 0


@dataclass(frozen=True, repr=False)
class Reconciliation:
    """What the tail holds compared with what the topic keys hold.

    Attributes
    ----------
    since_ms, until_ms : int
        The window compared (message timestamps, inclusive).
    stored : int
        Deliveries in the topic keys in the window.
    received : int
        Deliveries the tail received in the window.
    live : int
        Of those, received over pub/sub (the rest were backfilled).
    missing : pandas.DataFrame
        ``topic``, ``id``, ``timestamp_ms`` of stored deliveries never received.
    extra : pandas.DataFrame
        The same for received deliveries not in the topic keys.
    """

    since_ms: int
    until_ms: int
    stored: int
    received: int
    live: int
    missing: pd.DataFrame
    extra: pd.DataFrame

    def __repr__(self) -> str:
        return (
            f"<Reconciliation {'ok' if self.ok else 'MISMATCH'} "
            f"{self.since_ms}..{self.until_ms} ms: stored {self.stored}, "
            f"received {self.received} ({self.live} live), "
            f"missing {len(self.missing)}, extra {len(self.extra)}>"
        )

    @property
    def ok(self) -> bool:
        """Whether nothing is missing and nothing is extra."""
        return self.missing.empty and self.extra.empty


class _Queue:
    """A bounded hand-off from the tail thread to one iterator."""

    def __init__(self, limit: int) -> None:
        self.items: deque[TailMessage] = deque()
        self.limit = limit
        self.ready = threading.Condition()
        self.closed = False

    def put(self, messages: Sequence[TailMessage]) -> int:
        with self.ready:
            self.items.extend(messages)
            overflow = max(0, len(self.items) - self.limit)
            for _ in range(overflow):
                self.items.popleft()
            self.ready.notify_all()
        return overflow

    def close(self) -> None:
        with self.ready:
            self.closed = True
            self.ready.notify_all()

    def get(self) -> TailMessage | None:
        with self.ready:
            while not self.items and not self.closed:
                self.ready.wait(0.5)
            return self.items.popleft() if self.items else None


@dataclass
class _Counters:
    values: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(TailCounts.__dataclass_fields__, 0)
    )

    def add(self, name: str, amount: int = 1) -> None:
        self.values[name] += amount

    def freeze(self) -> TailCounts:
        return TailCounts(**self.values)


@dataclass
class _Fill:
    """What one backfill found: new deliveries, their time span, what was left."""

    count: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    not_fetched: int = 0

    def add(self, fresh: Sequence[TailMessage]) -> None:
        if not fresh:
            return
        stamps = [m.timestamp_ms for m in fresh]
        self.count += len(fresh)
        low, high = min(stamps), max(stamps)
        self.first_ms = low if self.first_ms is None else min(self.first_ms, low)
        self.last_ms = high if self.last_ms is None else max(self.last_ms, high)


class Tail:
    """A live view of a guild's messages as they are published.

    Parameters
    ----------
    source : Bus, redis.Redis, redis.RedisCluster or callable returning one
        Where the guild lives. The tail opens connections of its own, with the
        same address and credentials, that never retry behind its back
        (:meth:`stop` ends the subscription, :meth:`close` the connections). On
        a cluster it subscribes on one node (``PUBLISH`` reaches them all) and
        reads topic keys through the given cluster client.
    guild_id : str
        The guild (or organisation) namespace.
    topics : sequence of str, optional
        Only these topics; default every topic of the guild, including topics
        that appear later.
    buffer : int, default 1000
        How many shown deliveries are held (the newest).
    where : MessageFilter, optional
        Which deliveries are shown; the others are counted as filtered out.
    callback : callable, optional
        Called on the tail thread with each shown :class:`TailMessage`.
    overlap_ms : int, default 2000
        How far before the newest time seen a backfill starts reading (messages
        can be published a little after their timestamp).
    refresh : float, default 0.1
        Minimum seconds between two calls of each listener (UI updates).
    reconnect_delay, max_reconnect_delay : float
        First and largest wait between reconnection attempts (doubling).
    backfill_limit : int, default 500000
        Most new deliveries one backfill takes (pages of 5,000 are read and
        deduplicated one at a time, so memory stays small); what is left is
        counted in :attr:`Gap.not_fetched`.
    max_pending : int, default 100000
        Most deliveries waiting for one iterator, or held while paused.
    clock : callable, default time.time
        Wall clock for the times recorded in :class:`Gap`.

    Notes
    -----
    The tail starts where the server's clock stands at :meth:`start`; earlier
    messages are not read. States: ``idle``, ``connecting``, ``live``,
    ``paused``, ``reconnecting``, ``stopped``, ``failed``. Only errors that a
    reconnect cannot fix (wrong password, missing permission, a bug) end the
    thread; they are in :attr:`error`, :attr:`status` and the log, and an
    iterator re-raises them.
    """

    def __init__(
        self,
        source: Bus | redis.Redis | redis.RedisCluster | Callable[[], redis.Redis],
        guild_id: str,
        topics: Sequence[str] | str | None = None,
        *,
        buffer: int = 1000,
        where: MessageFilter | None = None,
        callback: Callable[[TailMessage], None] | None = None,
        overlap_ms: int = 2000,
        refresh: float = 0.1,
        reconnect_delay: float = 0.1,
        max_reconnect_delay: float = 2.0,
        backfill_limit: int = 500_000,
        max_pending: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.guild_id = guild_id
        self.topics = (topics,) if isinstance(topics, str) else _opt_tuple(topics)
        self.where = where or MessageFilter()
        self.callback = callback
        self.overlap_ms, self.refresh_interval = overlap_ms, refresh
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.backfill_limit, self.max_pending = backfill_limit, max_pending
        self._clock = clock
        self._connections = Connections(source, guild_id)
        self._client = self._connections.commands
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._resumed = threading.Event()
        self._resumed.set()
        self._thread: threading.Thread | None = None
        self._pubsub: Any = None
        self._buffer: deque[TailMessage] = deque(maxlen=buffer)
        self._held: deque[TailMessage] = deque()
        self._seen: dict[tuple[str, int], tuple[int, bool]] = {}
        self._queues: list[_Queue] = []
        self._listeners: list[Callable[[Tail], None]] = []
        self._counts = _Counters()
        self._gaps: list[Gap] = []
        self._state: State = "idle"
        self._error: BaseException | None = None
        self._problem = ""
        self._start_ms = 0
        self._watermark_ms = 0
        self._horizon_ms = 0
        self._changed = False
        self._last_notify = 0.0
        self._lost: tuple[float, str] | None = None

    def __repr__(self) -> str:
        counts = self._counts.values
        return (
            f"<Tail guild={self.guild_id!r} {self._state} "
            f"received={counts['received']} shown={counts['shown']}>"
        )

    def __enter__(self) -> Tail:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[TailMessage]:
        """Yield shown deliveries as they arrive, until the tail stops.

        Starts the tail if it is idle.

        Raises
        ------
        RdebugError
            If the tail thread failed (the error it failed with).
        """
        if self._state == "idle":
            self.start()
        queue = _Queue(self.max_pending)
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                self._queues.append(queue)
            else:
                queue.close()
        try:
            while (item := queue.get()) is not None:
                yield item
        finally:
            with self._lock:
                if queue in self._queues:
                    self._queues.remove(queue)
        if self._state == "failed" and self._error is not None:
            raise self._error

    @property
    def state(self) -> State:
        """``idle``, ``connecting``, ``live``, ``paused``, ``reconnecting``,
        ``stopped`` or ``failed``."""
        return self._state

    @property
    def error(self) -> BaseException | None:
        """The error that ended the thread, if it failed."""
        return self._error

    @property
    def problem(self) -> str:
        """The last problem met (a lost connection, a callback error), or ''."""
        return self._problem

    @property
    def counts(self) -> TailCounts:
        """A snapshot of the counters."""
        with self._lock:
            return self._counts.freeze()

    @property
    def gaps(self) -> tuple[Gap, ...]:
        """Every reconnection and what its backfill found, oldest first."""
        with self._lock:
            return tuple(self._gaps)

    @property
    def messages(self) -> tuple[TailMessage, ...]:
        """The shown deliveries held, oldest first."""
        with self._lock:
            return tuple(self._buffer)

    @property
    def thread(self) -> threading.Thread | None:
        """The tail's thread (None before :meth:`start`)."""
        return self._thread

    @property
    def status(self) -> str:
        """One line: state, counters, gaps and the last problem."""
        counts = self.counts
        parts = [
            self._state,
            f"received {counts.received:,}",
            f"shown {counts.shown:,}",
            f"filtered out {counts.filtered_out:,}",
        ]
        gaps = self.gaps
        if gaps:
            filled = sum(gap.count for gap in gaps)
            parts.append(f"{len(gaps)} reconnects, {filled:,} missed messages filled")
        if counts.dropped:
            parts.append(f"{counts.dropped:,} dropped (max_pending)")
        if self._problem:
            parts.append(f"last problem: {self._problem}")
        return " · ".join(parts)

    def start(self) -> Tail:
        """Subscribe and start the thread (idempotent).

        Raises
        ------
        ConnectionFailed
            If the server cannot be reached now.
        """
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return self
            self._start_ms = self._server_time_ms()
            self._watermark_ms = max(self._watermark_ms, self._start_ms)
            self._stop.clear()
            self._set_state("connecting")
            self._thread = threading.Thread(
                target=self._run, name=f"rdebug-tail:{self.guild_id}", daemon=True
            )
            self._thread.start()
        logger.info("tail of %r started at %s ms", self.guild_id, self._start_ms)
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Unsubscribe, close the connections and end the thread (idempotent).

        Waits up to ``timeout`` seconds for the thread to end.
        """
        self._stop.set()
        self._resumed.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("tail thread of %r did not end in time", self.guild_id)
        self._close_queues()
        if self._state not in ("failed", "idle"):
            self._set_state("stopped")

    def close(self) -> None:
        """Stop the tail and close the connections it opened (idempotent).

        A closed tail can be started again; it reconnects.
        """
        self.stop()
        self._connections.close()

    def pause(self) -> None:
        """Hold new deliveries back from the buffer, iterators and callbacks.

        Receiving, deduplicating and counting go on; :meth:`resume` applies what
        was held (idempotent).
        """
        with self._lock:
            self._resumed.clear()
            if self._state == "live":
                self._set_state("paused")

    def resume(self) -> None:
        """Apply what was held while paused and go on (idempotent)."""
        with self._lock:
            self._resumed.set()
            if self._state == "paused":
                self._set_state("live")
            held, self._held = list(self._held), deque()
            shown = self._apply(held)
        self._deliver(shown)
        self._notify(force=True)

    def set_filter(self, where: MessageFilter) -> None:
        """Change which deliveries are shown; the buffer keeps only matches."""
        with self._lock:
            self.where = where
            kept = [m for m in self._buffer if _passes(where, m)]
            self._buffer.clear()
            self._buffer.extend(kept)
            self._changed = True
        self._notify(force=True)

    def add_listener(self, listener: Callable[[Tail], None]) -> None:
        """Call ``listener(tail)`` after changes, at most every ``refresh`` s.

        Listeners run on the tail thread; exceptions are logged and counted.
        """
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[Tail], None]) -> None:
        """Stop calling ``listener``."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def refresh(self) -> None:
        """Call the listeners now, on this thread."""
        self._notify(force=True)

    def to_deliveries(self) -> pd.DataFrame:
        """The held deliveries as a delivery frame (see rdebug_nb.messages)."""
        grouped: dict[str, list[bytes]] = {}
        for message in self.messages:
            grouped.setdefault(message.topic, []).append(message.raw)
        if not grouped:
            return empty_deliveries()
        entries = [
            (topic_key(self.guild_id, topic), topic, raws)
            for topic, raws in grouped.items()
        ]
        frame = decode_deliveries(self.guild_id, entries)
        warn_skips(frame, f"the tail of {self.guild_id!r}", stacklevel=2)
        return frame

    def to_frame(self) -> pd.DataFrame:
        """The held deliveries as a message frame, one row per message id."""
        return to_messages(self.to_deliveries())

    def reconcile(
        self, until: int | None = None, *, settle_ms: int = 1000
    ) -> Reconciliation:
        """Compare what the tail received with what the topic keys hold.

        Parameters
        ----------
        until : int, optional
            End of the window (Unix ms); default the server's time minus
            ``settle_ms``.
        settle_ms : int, default 1000
            How long a message may take from its timestamp to its arrival;
            newer messages are left out of the default window because they may
            still be on their way.

        Returns
        -------
        Reconciliation
            Over the window from the tail's start (or the oldest delivery it
            still remembers) to ``until``.

        Notes
        -----
        A delivery counts as received whether it came live or from a backfill;
        ``Reconciliation.live`` says how many came live.
        """
        with self._lock:
            since = max(self._start_ms, self._horizon_ms + 1)
        high = self._server_time_ms() - settle_ms if until is None else until
        stored = self._read_window(since, high)
        with self._lock:
            seen = dict(self._seen)
        arrived = {k: v for k, v in seen.items() if since <= v[0] <= high}
        missing = [(k, ts) for k, ts in stored.items() if k not in arrived]
        extra = [(k, v[0]) for k, v in arrived.items() if k not in stored]
        return Reconciliation(
            since_ms=since,
            until_ms=high,
            stored=len(stored),
            received=len(arrived),
            live=sum(1 for v in arrived.values() if v[1]),
            missing=_pairs_frame(missing),
            extra=_pairs_frame(extra),
        )

    # -- the thread ---------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        try:
            while not self._stop.is_set():
                try:
                    self._session()
                except redis.exceptions.AuthenticationError:
                    raise
                except RECOVERABLE as err:
                    attempt += 1
                    self._connection_lost(err, attempt)
                    self._stop.wait(self._delay(attempt))
                else:
                    attempt = 0
        except Exception as err:
            self._fail(err)
        finally:
            self._close_pubsub()
            self._close_queues()
            if self._state != "failed":
                self._set_state("stopped")
            self._notify(force=True)

    def _session(self) -> None:
        pubsub = self._connections.pubsub()
        self._pubsub = pubsub
        try:
            patterns = self._patterns()
            pubsub.psubscribe(*patterns)
            self._await_confirmations(pubsub, len(patterns))
            self._set_state("live" if self._resumed.is_set() else "paused")
            self._backfill()
            self._listen(pubsub)
        finally:
            self._close_pubsub()

    def _patterns(self) -> list[str]:
        if self.topics is None:
            return [glob_escape(self.guild_id) + ":*"]
        return [glob_escape(topic_key(self.guild_id, t)) for t in self.topics]

    def _await_confirmations(self, pubsub: Any, expected: int) -> None:
        confirmed, deadline = 0, time.monotonic() + _CONFIRM_TIMEOUT
        while confirmed < expected and not self._stop.is_set():
            if time.monotonic() > deadline:
                raise redis.exceptions.TimeoutError(
                    f"PSUBSCRIBE not confirmed within {_CONFIRM_TIMEOUT} s"
                )
            message = pubsub.get_message(timeout=_READ_TIMEOUT)
            if message is None:
                continue
            if message["type"] == "psubscribe":
                confirmed += 1
            elif message["type"] == "pmessage":
                self._ingest([(message["channel"], message["data"])], "live")

    def _listen(self, pubsub: Any) -> None:
        while not self._stop.is_set():
            batch = self._read_batch(pubsub)
            if batch:
                self._ingest(batch, "live")
            self._notify()

    def _read_batch(self, pubsub: Any) -> list[tuple[bytes, bytes]]:
        """Read what arrives within about ``_BATCH_SECONDS`` (at most ``_DRAIN``).

        Reads never use a zero timeout: redis-py fails on a message that is
        still arriving when it may not wait for the rest.
        """
        batch: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + _BATCH_SECONDS
        message = pubsub.get_message(timeout=_READ_TIMEOUT)
        while message is not None:
            if message["type"] == "pmessage":
                batch.append((message["channel"], message["data"]))
            if len(batch) >= _DRAIN or time.monotonic() >= deadline:
                break
            message = pubsub.get_message(timeout=_READ_TIMEOUT)
        return batch

    def _backfill(self) -> None:
        """Read the topic keys from where the tail may have missed messages.

        Pages are deduplicated as they come, so memory stays bounded by one
        page; at most ``backfill_limit`` new deliveries are taken.
        """
        with self._lock:
            reconnect = self._lost is not None
            since = self._start_ms
            if reconnect:
                since = self._watermark_ms - self.overlap_ms
        fill = _Fill()
        for key, _topic in self._topic_keys():
            if fill.count >= self.backfill_limit or self._stop.is_set():
                fill.not_fetched += int(self._client.zcount(key, since, "+inf"))
                continue
            self._backfill_key(key, since, fill)
        if reconnect:
            self._record_gap(fill, since)

    def _backfill_key(self, key: str, since: int, fill: _Fill) -> None:
        offset, channel = 0, key.encode()
        while not self._stop.is_set():
            page = self._page(key, since, "+inf", offset, _PAGE)
            offset += len(page)
            fill.add(self._ingest([(channel, member) for member in page], "backfill"))
            if len(page) < _PAGE:
                return
            if fill.count >= self.backfill_limit:
                left = int(self._client.zcount(key, since, "+inf")) - offset
                fill.not_fetched += max(0, left)
                return

    def _topic_keys(self) -> list[tuple[str, str]]:
        if self.topics is not None:
            return [(topic_key(self.guild_id, t), t) for t in self.topics]
        pattern = glob_escape(self.guild_id) + ":*"
        keys = list(discovery.scan_keys(self._client, match=pattern, type_="zset"))
        found, _ = discovery.resolve_topic_keys(self._client, keys, {self.guild_id})
        return sorted((t.key, t.topic) for t in found if t.namespace == self.guild_id)

    def _read_window(self, since: int, until: int) -> dict[tuple[str, int], int]:
        stored: dict[tuple[str, int], int] = {}
        for key, topic in self._topic_keys():
            offset = 0
            while True:
                page = self._page(key, since, until, offset, _PAGE)
                for member in page:
                    head = _try_head(member)
                    if head is not None:
                        stored[(topic, head.id)] = int(head.timestamp)
                offset += len(page)
                if len(page) < _PAGE:
                    break
        return stored

    def _page(
        self, key: str, low: int, high: int | str, offset: int, size: int
    ) -> list[bytes]:
        page = self._client.zrangebyscore(key, low, high, start=offset, num=size)
        return cast("list[bytes]", page)

    def _ingest(
        self, items: Sequence[tuple[bytes, bytes]], source: Source
    ) -> list[TailMessage]:
        """Dedupe, count and show a batch; return the deliveries that were new."""
        with self._lock:
            fresh = [m for m in (self._accept(c, d, source) for c, d in items) if m]
            if self._resumed.is_set():
                shown = self._apply(fresh)
            else:
                shown = []
                self._hold(fresh)
            self._changed = self._changed or bool(items)
            self._prune()
        self._deliver(shown)
        return fresh

    def _accept(
        self, channel: bytes, data: bytes, source: Source
    ) -> TailMessage | None:
        head = _try_head(data)
        if head is None:
            self._counts.add("unreadable")
            return None
        name = channel.decode("utf-8", errors="surrogateescape")
        split = split_topic_key(name, head.topic_published_to)
        if split is None or split[0] != self.guild_id:
            self._counts.add("other_guilds")
            return None
        stamp = int(head.timestamp)
        seen_key = (split[1], head.id)
        if seen_key in self._seen:
            self._counts.add("duplicates")
            return None
        self._seen[seen_key] = (stamp, source == "live")
        self._watermark_ms = max(self._watermark_ms, stamp)
        self._counts.add("received")
        self._counts.add("backfilled", source == "backfill")
        return TailMessage(self.guild_id, split[1], head.id, stamp, data, source)

    def _apply(self, fresh: Sequence[TailMessage]) -> list[TailMessage]:
        shown = [m for m in fresh if _passes(self.where, m)]
        self._counts.add("shown", len(shown))
        self._counts.add("filtered_out", len(fresh) - len(shown))
        room = (self._buffer.maxlen or 0) - len(self._buffer)
        self._counts.add("evicted", max(0, len(shown) - room))
        self._buffer.extend(shown)
        return shown

    def _hold(self, fresh: Sequence[TailMessage]) -> None:
        self._held.extend(fresh)
        overflow = len(self._held) - self.max_pending
        for _ in range(max(0, overflow)):
            self._held.popleft()
        self._counts.add("dropped", max(0, overflow))

    def _prune(self) -> None:
        if len(self._seen) <= _SEEN_LIMIT:
            return
        horizon = self._watermark_ms - 2 * self.overlap_ms
        self._seen = {k: v for k, v in self._seen.items() if v[0] >= horizon}
        self._horizon_ms = max(self._horizon_ms, horizon - 1)

    def _deliver(self, shown: Sequence[TailMessage]) -> None:
        if not shown:
            return
        with self._lock:
            queues = list(self._queues)
        dropped = sum(queue.put(shown) for queue in queues)
        if dropped:
            with self._lock:
                self._counts.add("dropped", dropped)
        if self.callback is not None:
            for message in shown:
                self._call(self.callback, message)

    def _notify(self, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            due = force or (
                self._changed and now - self._last_notify >= self.refresh_interval
            )
            if not due:
                return
            self._changed, self._last_notify = False, now
            listeners = list(self._listeners)
        for listener in listeners:
            self._call(listener, self)

    def _call(self, function: Callable[[Any], None], argument: Any) -> None:
        try:
            function(argument)
        except Exception as err:
            logger.exception("tail of %r: %r raised", self.guild_id, function)
            with self._lock:
                self._counts.add("callback_errors")
                self._problem = f"{getattr(function, '__name__', function)}: {err!r}"

    def _connection_lost(self, err: Exception, attempt: int) -> None:
        with self._lock:
            if self._lost is None or attempt == 1:
                self._lost = (self._clock(), str(err))
            self._problem = f"connection lost ({err}); reconnecting, attempt {attempt}"
            self._changed = True
        if attempt == 1:
            logger.warning("tail of %r lost its connection: %s", self.guild_id, err)
        self._set_state("reconnecting")
        self._notify(force=True)

    def _record_gap(self, fill: _Fill, since: int) -> None:
        with self._lock:
            lost_at, reason = self._lost or (self._clock(), "")
            gap = Gap(
                count=fill.count,
                first_ms=fill.first_ms,
                last_ms=fill.last_ms,
                since_ms=since,
                lost_at=lost_at,
                restored_at=self._clock(),
                reason=reason,
                not_fetched=fill.not_fetched,
            )
            self._gaps.append(gap)
            self._lost = None
            self._problem = ""
            self._changed = True
        logger.info(
            "tail of %r reconnected; backfill found %s missed deliveries",
            self.guild_id,
            fill.count,
        )

    def _fail(self, err: Exception) -> None:
        logger.exception("tail of %r failed", self.guild_id)
        with self._lock:
            self._error = as_package_error(err, self.guild_id)
            self._problem = f"failed: {err!r}"
        self._set_state("failed")

    def _set_state(self, state: State) -> None:
        with self._lock:
            self._state = state
            self._changed = True

    def _delay(self, attempt: int) -> float:
        return float(
            min(self.max_reconnect_delay, self.reconnect_delay * 2 ** (attempt - 1))
        )

    def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is None:
            return
        try:
            if pubsub.subscribed:
                pubsub.punsubscribe()
                deadline = time.monotonic() + 0.5
                while pubsub.subscribed and time.monotonic() < deadline:
                    pubsub.get_message(timeout=_READ_TIMEOUT)
        except RECOVERABLE as err:
            logger.debug("tail of %r: connection already gone: %s", self.guild_id, err)
        finally:
            pubsub.close()

    def _close_queues(self) -> None:
        with self._lock:
            queues, self._queues = list(self._queues), []
        for queue in queues:
            queue.close()

    def _server_time_ms(self) -> int:
        try:
            seconds, micros = self._client.time()
        except RECOVERABLE as err:
            raise ConnectionFailed(
                f"cannot start the tail of {self.guild_id!r}: {err}; check that the "
                "server runs and the URL is right"
            ) from err
        return int(seconds) * 1000 + int(micros) // 1000


def _passes(where: MessageFilter, message: TailMessage) -> bool:
    return where.is_empty or where.matches(message.row)


def _try_head(data: bytes) -> _Head | None:
    try:
        if not data.isascii():
            data.decode("utf-8")  # the head decoder skips nested text unchecked
        return _HEAD.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, ValueError):
        return None


def _pairs_frame(pairs: list[tuple[tuple[str, int], int]]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "topic": pd.array([k[0] for k, _ in pairs], dtype=object),
            "id": pd.array([k[1] for k, _ in pairs], dtype="UInt64"),
            "timestamp_ms": pd.array([ts for _, ts in pairs], dtype="int64"),
        }
    )
    return frame.sort_values(["timestamp_ms", "id"]).reset_index(drop=True)


def _opt_tuple(values: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)

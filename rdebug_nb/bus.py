"""The Bus: a read-only view of the RusticAI guilds on one Redis server.

:func:`connect` opens one; every method that returns data only reads. The only
writes are :meth:`Bus.load_snapshot` and tools that say so in their name.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final, cast, get_args
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pandas as pd
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from tqdm.auto import tqdm

from rdebug_nb import _keyspace_io, discovery
from rdebug_nb._keyspace_io import Expiry, LoadReport
from rdebug_nb._warn import (
    warn_skips,
    warn_snapshot_skips,
    warn_truncated,
    warn_unsupported,
)
from rdebug_nb.errors import (
    CommandTimeout,
    ConnectionFailed,
    GuildNotFound,
    LoadIncomplete,
    MessageNotFound,
    PermissionDenied,
    RdebugError,
    SnapshotError,
    WriteRefused,
)
from rdebug_nb.guilds import Keyspace, TopicKey, guild_table, topic_table
from rdebug_nb.ids import decode_id
from rdebug_nb.keys import (
    glob_escape,
    message_key,
    parse_position_key,
    try_parse_message_key,
    try_state_owner,
)
from rdebug_nb.messages import (
    StoredMessage,
    decode_deliveries,
    decode_messages,
    merge_frames,
)
from rdebug_nb.server import EmbeddedServer
from rdebug_nb.snapshot import read_snapshot, write_snapshot
from rdebug_nb.tail import Tail

logger = logging.getLogger(__name__)

URL_VARIABLE: Final = "RDEBUG_REDIS_URL"
"""Environment variable read by :func:`connect` when no URL is given."""

PAGE_SIZE: Final = 5000
"""Members fetched per ``ZRANGE`` / ``ZRANGEBYSCORE ... LIMIT`` page."""

PROGRESS_THRESHOLD: Final = 20_000
"""Loads of at least this many entries show a progress bar."""

_PAGES_PER_ROUND_TRIP: Final = 8

REFRESH_OVERLAP_MS: Final = 2_000
"""How far before a frame's newest timestamp :meth:`Bus.refresh` reads again."""

TimeBound = datetime | pd.Timestamp | timedelta | str | int | float | None

_DURATION = re.compile(r"-?\d+(\.\d+)?\s*(ms|s|m|min|h|d)")


def connect(
    url: str | None = None,
    *,
    demo: bool = False,
    timeout: float = 10.0,
    retries: int = 3,
    progress: bool = True,
    env: Mapping[str, str] | None = None,
    cluster: bool | None = None,
    writable: bool = False,
) -> Bus:
    """Open a read-only view of the guilds on a Redis server.

    Parameters
    ----------
    url : str, optional
        ``redis://[user:password@]host:port/db``, ``rediss://...`` (TLS) or
        ``unix:///path/to/socket``. Defaults to the ``RDEBUG_REDIS_URL``
        environment variable; with neither, an embedded Valkey server is started
        for this Bus (and stopped by :meth:`Bus.close`). TLS settings go in the
        query string: ``ssl_ca_certs`` (the CA that signed the server's
        certificate), ``ssl_certfile`` and ``ssl_keyfile`` (a client
        certificate, for servers started with ``tls-auth-clients yes``),
        ``ssl_cert_reqs`` and ``ssl_check_hostname``.
    demo : bool, default False
        When an embedded server is started, fill it with the simulated demo guild.
    timeout : float, default 10.0
        Seconds to wait for the connection and for each command's answer. A
        command that gets no answer is retried, so
        :class:`~rdebug_nb.errors.CommandTimeout` comes after about
        ``(retries + 1) * timeout`` seconds.
    retries : int, default 3
        Retries with exponential backoff (0.2 s, 0.4 s, ... at most 2 s apart)
        after a dropped connection or time-out; reads are repeated, never
        skipped.
    progress : bool, default True
        Show a progress bar on long loads.
    env : mapping, optional
        Environment to read ``RDEBUG_REDIS_URL`` from (default ``os.environ``).
    cluster : bool, optional
        Whether ``url`` points at a node of a Redis Cluster. Default: ask the
        server (``HELLO``, or whether it redirects keys). A cluster is read
        through all its primaries: the URL names any one node. ``False`` reads
        only the keys of the node the URL names.
    writable : bool, default False
        Mark the server as a sandbox that tools which write
        (:func:`rdebug_nb.replay`) may write to. Leave it False on production;
        an embedded server started here is always writable.

    Returns
    -------
    Bus

    Raises
    ------
    ConnectionFailed
        If the server cannot be reached; the message names the URL (password
        hidden) and what to check.

    Notes
    -----
    Reading needs only read permissions. A least-privilege ACL user that can do
    everything but :meth:`Bus.load_snapshot` and :meth:`Bus.load_demo`::

        ACL SETUSER reader on >password ~* &* -@all +@read +@connection
            +time +psubscribe +punsubscribe -@dangerous

    ``+psubscribe +punsubscribe`` are for the tail only; on a cluster the user
    also needs ``+cluster|slots``. Writing a snapshot needs ``+@write`` too.
    Passwords are never shown: the URL is kept with its password (and the
    ``password`` and ``ssl_password`` query options) replaced by ``***``.

    Examples
    --------
    >>> bus = connect(env={})
    >>> bus.guilds().empty
    True
    >>> bus.close()
    """
    chosen = url or (os.environ if env is None else env).get(URL_VARIABLE)
    server = None if chosen else EmbeddedServer().start()
    target = chosen or (server.url if server else "")
    client = _client(target, timeout, retries)
    bus = Bus(
        client,
        url=target,
        server=server,
        progress=progress,
        writable=writable or server is not None,
    )
    try:
        bus.ping()
        if cluster or (cluster is None and bus._is_cluster()):
            bus._use_cluster(target, timeout, retries)
        if server and demo:
            bus.load_demo()
    except BaseException:
        bus.close()
        raise
    return bus


def open_bus(
    redis_url: str = "",
    snapshot_path: str = "",
    *,
    demo: bool = True,
    env: Mapping[str, str] | None = None,
) -> Bus:
    """Open what a notebook's parameters point at.

    Parameters
    ----------
    redis_url : str
        A Redis URL; empty means ``RDEBUG_REDIS_URL``, and without that too, an
        embedded server (filled with the demo guild when ``demo`` is true).
    snapshot_path : str
        A keyspace JSONL snapshot or exported message file to read offline,
        without any Redis; wins over ``redis_url``.
    demo : bool, default True
        Fill an embedded server with the simulated demo guild.
    env : mapping, optional
        Environment to read ``RDEBUG_REDIS_URL`` from.

    Returns
    -------
    Bus
    """
    if snapshot_path:
        from rdebug_nb.offline import open_snapshot

        return open_snapshot(snapshot_path)
    return connect(redis_url or None, demo=demo, env=env)


def redact_url(url: str) -> str:
    """Hide the password of a Redis URL.

    >>> redact_url("redis://alice:s3cret@db:6379/0")
    'redis://alice:***@db:6379/0'
    >>> redact_url("redis://:s3cret@db")
    'redis://:***@db'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


class Bus:
    """The guilds on one Redis server, read as pandas frames.

    Parameters
    ----------
    client : redis.Redis
        A client created with ``decode_responses=False``.
    url : str, optional
        The URL it was opened with (shown with the password hidden).
    server : EmbeddedServer, optional
        An embedded server this Bus owns and stops on :meth:`close`.
    progress : bool, default True
        Show a progress bar on long loads.
    writable : bool, default False
        Whether tools that write (replay) may write to this server.

    Attributes
    ----------
    cluster : bool
        Whether the client reads a Redis Cluster.
    timeout : float or None
        The client's socket timeout in seconds.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        url: str = "",
        server: EmbeddedServer | None = None,
        progress: bool = True,
        writable: bool = False,
    ) -> None:
        self.client = client
        self.writable = writable
        self.url = _shown_url(url)
        self.server = server
        self.progress = progress
        self.cluster = isinstance(client, redis.RedisCluster)
        self.timeout = _socket_timeout(client)

    def __repr__(self) -> str:
        where = "embedded " if self.server else ""
        mark = " writable" if self.writable else ""
        return f"<Bus {where}{self.url or 'client'}{mark}>"

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection, and stop the embedded server if this Bus owns one."""
        self.client.close()
        if self.server:
            self.server.stop()

    def ping(self) -> None:
        """Check that the server (every node of a cluster) answers.

        Raises
        ------
        ConnectionFailed
        PermissionDenied
        """
        with self._guard("PING"):
            try:
                self.client.ping()
            except redis.exceptions.NoPermissionError:
                raise
            except redis.exceptions.ResponseError as err:  # SELECT when connecting
                raise ConnectionFailed(
                    f"{self.url} refused to open a connection: {err}; check the "
                    "database number in the URL (a Redis Cluster has only 0)"
                ) from err
        logger.debug("%s answered PING", self.url)

    def _is_cluster(self) -> bool:
        """Whether the server is a node of a cluster.

        ``HELLO`` says; a server that refuses it (too old, or an ACL) is asked
        about keys in many slots, which a node of a larger cluster redirects.
        """
        with self._guard("HELLO"):
            try:
                reply = self.client.execute_command("HELLO")  # type: ignore[no-untyped-call]
            except redis.exceptions.ResponseError as err:
                logger.debug("%s refused HELLO (%s)", self.url, err)
                return self._redirects()
        return _reply_field(reply, "mode") == "cluster"

    def _redirects(self) -> bool:
        """Whether the server redirects a key to another node (``MOVED``)."""
        with self._guard("EXISTS of probe keys"):
            pipe = self.client.pipeline(transaction=False)
            for n in range(_PROBES):
                pipe.exists(f"rdebug-nb:probe:{n}")
            answers = pipe.execute(raise_on_error=False)
        return any(isinstance(a, redis.exceptions.AskError) for a in answers)

    def _use_cluster(self, url: str, timeout: float, retries: int) -> None:
        """Read through all the primaries of the cluster ``url`` belongs to."""
        with self._guard("CLUSTER SLOTS (finding the nodes of the cluster)"):
            cluster = _cluster_client(url, timeout, retries)
        self.client.close()
        self.client, self.cluster, self.timeout = cluster, True, timeout
        logger.info("%s is a Redis Cluster node; reading the whole cluster", self.url)

    def guilds(self, *, count_distinct: bool = True) -> pd.DataFrame:
        """One row per namespace (guild or organisation) found on the server.

        Parameters
        ----------
        count_distinct : bool, default True
            Count distinct message ids (reads every stored member once, decoding
            only ids); with False, ``messages`` is ``<NA>`` and only key metadata
            is read.

        Returns
        -------
        pandas.DataFrame
            See :data:`rdebug_nb.guilds.GUILD_COLUMNS`. Keys under a guild prefix
            that are not what they look like are in ``attrs["skips"]``.
        """
        table = guild_table(self.keyspace(count_distinct=count_distinct))
        warn_skips(table, f"the keyspace of {self.url}", stacklevel=2)
        return table

    def keyspace(self, *, count_distinct: bool = False) -> Keyspace:
        """Scan the keyspace once (``SCAN``) and return what it holds."""
        with self._guard("SCAN"):
            space = discovery.scan_keyspace(self.client, count_distinct=count_distinct)
        logger.info("scanned %s: %s topic keys", self.url, len(space.topic_keys))
        return space

    def topics(self, guild_id: str) -> pd.DataFrame:
        """One row per topic key of a guild: topic, key, entries, first and last time.

        Raises
        ------
        GuildNotFound
        """
        space = Keyspace()
        space.topic_keys = {t.key: t for t in self._topic_keys(guild_id)}
        return topic_table(space, guild_id)

    def deliveries(
        self,
        guild_id: str,
        topics: Sequence[str] | None = None,
        since: TimeBound = None,
        until: TimeBound = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Every stored copy of a guild's messages: one row per (message, topic).

        Parameters are as for :meth:`messages`; ``limit`` counts deliveries.

        Returns
        -------
        pandas.DataFrame
            Columns :data:`rdebug_nb.messages.DELIVERY_COLUMNS`.
        """
        _check_query(guild_id, limit)
        keys = self._select_topics(guild_id, topics)
        low, high = _window(since, until)
        frame = self._load(guild_id, keys, low, high, limit, topics)
        return _finish(frame, limit, guild_id)

    def messages(
        self,
        guild_id: str,
        topics: Sequence[str] | None = None,
        since: TimeBound = None,
        until: TimeBound = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """A guild's messages, one row per distinct id.

        Parameters
        ----------
        guild_id : str
            The guild (or organisation) namespace.
        topics : sequence of str, optional
            Only these topics (un-namespaced names); default all.
        since, until : datetime, str, int, timedelta or None
            Time window on the message timestamp, inclusive; ints are Unix
            milliseconds, naive datetimes and ISO strings are UTC, and a
            duration (``"15m"``, ``"2h"``, a ``timedelta``) means that long
            before now. Only the window is read (``ZRANGEBYSCORE ... LIMIT``
            pages).
        limit : int, optional
            Keep the newest ``limit`` messages; a cut result issues a
            :class:`~rdebug_nb.errors.TruncatedWarning` and has
            ``attrs["truncated"] = True``.

        Returns
        -------
        pandas.DataFrame
            Columns :data:`rdebug_nb.messages.MESSAGE_COLUMNS`, sorted by time.
            Unreadable entries are skipped, counted in one
            :class:`~rdebug_nb.errors.SkippedEntriesWarning` and listed in
            ``attrs["skips"]``.

        Raises
        ------
        GuildNotFound
            If the guild has no topic key (or none of the requested topics).
        LoadIncomplete
            If the server fails part-way (after retries); nothing partial is
            returned.
        """
        _check_query(guild_id, limit)
        keys = self._select_topics(guild_id, topics)
        low, high = _window(since, until)
        frame = self._load(guild_id, keys, low, high, limit, topics, messages=True)
        return _finish(frame, limit, guild_id)

    def refresh(
        self, frame: pd.DataFrame, *, overlap_ms: int = REFRESH_OVERLAP_MS
    ) -> pd.DataFrame:
        """Bring a frame of :meth:`messages` or :meth:`deliveries` up to date.

        Only what was stored since the frame's newest timestamp is read (minus
        ``overlap_ms``, for messages stored a little after their timestamp), in
        the frame's guild, topics and time window, and merged in: new messages
        become rows, a message found again under more topics gets them added.
        Re-running a notebook cell on a live guild this way costs the new
        messages, not the whole guild.

        Parameters
        ----------
        frame : pandas.DataFrame
            A frame from :meth:`messages`, :meth:`deliveries` or :meth:`refresh`;
            ``attrs["query"]`` says what was asked (guild, topics, window, limit).
        overlap_ms : int, default 2000
            How far before the newest timestamp of ``frame`` to read again.

        Returns
        -------
        pandas.DataFrame
            The same kind of frame, as a full reload would give it, except that
            rows whose members were deleted from the topic keys since stay.
            Entries that are newly unreadable are counted in one
            :class:`~rdebug_nb.errors.SkippedEntriesWarning`.

        Raises
        ------
        ValueError
            If ``frame`` does not carry ``attrs["query"]``.
        GuildNotFound, LoadIncomplete
            As for :meth:`messages`.

        Notes
        -----
        Refresh the frame the Bus returned, not a filtered copy of it: a filtered
        copy still carries the query, and the new rows are not filtered. A
        message stored more than ``overlap_ms`` before the frame's newest
        timestamp, after the frame was loaded, is not seen.

        Examples
        --------
        >>> bus = connect(env={}, demo=True)
        >>> msgs = bus.messages("demo-orders", topics=["orders.in"])
        >>> again = bus.refresh(msgs)
        >>> again.equals(msgs), again.attrs["query"]["topics"]
        (True, ['orders.in'])
        >>> bus.close()
        """
        query = _query_of(frame)
        guild_id = query["guild_id"]
        keys = self._select_topics(guild_id, query["topics"])
        low = _refresh_low(frame, query["since"], overlap_ms)
        high = _score_bound(query["until"], "+inf")
        collapse = "topic" not in frame.columns
        fresh = self._load(
            guild_id, keys, low, high, None, query["topics"], messages=collapse
        )
        known = set(frame.attrs.get("skips", ()))
        fresh.attrs["skips"] = tuple(s for s in fresh.attrs["skips"] if s not in known)
        warn_skips(fresh, f"guild {guild_id!r}", stacklevel=2)
        merged = merge_frames(frame, fresh)
        merged.attrs["query"] = query
        return _newest(merged, query["limit"], guild_id)

    def message(self, guild_id: str, message_id: int | str) -> StoredMessage:
        """Find one message by id, also after its ``msg:`` key has expired.

        The id's timestamp is the topic keys' score, so each topic key is probed
        with one ``ZRANGEBYSCORE`` at that exact score.

        Raises
        ------
        MessageNotFound
        InvalidId
        """
        parts = decode_id(message_id)
        try:
            keys = self._topic_keys(guild_id)
        except GuildNotFound:
            keys = []  # the msg: key may still hold it
        with self._guard(f"ZRANGEBYSCORE on the topic keys of {guild_id!r}"):
            pipe = self.client.pipeline(transaction=False)
            pipe.get(message_key(guild_id, parts.id))
            for topic in keys:
                pipe.zrangebyscore(topic.key, parts.timestamp, parts.timestamp)
            answers = pipe.execute()
        return _stored_message(guild_id, parts.id, keys, answers)

    def tail(
        self, guild_id: str, topics: Sequence[str] | str | None = None, **options: Any
    ) -> Tail:
        """Start a live tail of a guild's topics (see :class:`rdebug_nb.tail.Tail`).

        The tail opens connections of its own; ``tail.stop()`` ends the
        subscription and ``tail.close()`` closes them. ``options`` go to
        :class:`~rdebug_nb.tail.Tail` (``buffer``, ``where``, ``callback`` ...).

        Raises
        ------
        ConnectionFailed
            If the server cannot be reached now.
        """
        return Tail(self, guild_id, topics, **options).start()

    def backlog(self, guild_id: str) -> pd.DataFrame:
        """Per agent and topic: the last processed message and what is stored after.

        Reads the ``eo:pos:*`` delivery positions of the guild and its deliveries.

        Returns
        -------
        pandas.DataFrame
            Columns :data:`rdebug_nb.backlog.BACKLOG_COLUMNS`. ``pending_by_id``
            counts what RusticAI would replay on resubscribe (ids greater than
            the position; ids sort by priority first), ``pending_by_time`` what
            was stored later than the position's message.

        Raises
        ------
        GuildNotFound
            If the guild has neither positions nor topic keys.
        """
        from rdebug_nb.positions import load_backlog

        return load_backlog(self, guild_id)

    def load_snapshot(
        self,
        path: str | Path,
        *,
        expiry: Expiry = "keep",
        replace: bool = False,
        force: bool = False,
    ) -> LoadReport:
        """Write a keyspace JSONL snapshot into this server.

        This writes to the server, so the Bus must be writable (an embedded
        server, or ``connect(url, writable=True)``) unless ``force=True``. Keys
        that already exist are left alone unless ``replace=True``.

        Parameters
        ----------
        path : str or Path
            The snapshot (see :mod:`rdebug_nb.snapshot`).
        expiry : {"keep", "restart", "persist"}, default "keep"
            ``"keep"``: each key expires at its recorded absolute time, and keys
            already past it are not written (listed in ``expired``);
            ``"restart"``: each key gets its recorded remaining time from now;
            ``"persist"``: nothing expires.
        replace : bool, default False
            Overwrite keys that exist.
        force : bool, default False
            Write even though the Bus is not marked writable.

        Returns
        -------
        LoadReport

        Raises
        ------
        WriteRefused
            If the Bus is not writable and ``force`` is False.
        SnapshotError
            If the file is an RDB file or holds no snapshot record at all.
        """
        self._check_writable("a snapshot", force)
        _check_not_rdb(path)
        if expiry not in get_args(Expiry):
            raise ValueError(
                f"expiry must be one of {', '.join(get_args(Expiry))}, not {expiry!r}"
            )
        with self._guard("writing the snapshot (SET/ZADD/HSET)"):
            report = _keyspace_io.write_records(
                self.client, read_snapshot(path), expiry=expiry, replace=replace
            )
        if report.skips and not (report.loaded or report.expired or report.existing):
            raise SnapshotError(
                f"no line of {str(path)!r} is a snapshot record (line "
                f"{report.skips[0].line}: {report.skips[0].reason}); an exported "
                "JSONL or Parquet file opens with rd.open_snapshot(path)"
            )
        if report.skips:
            warn_snapshot_skips(report.skips, str(path), stacklevel=2)
        logger.info("loaded %s into %s: %r", path, self.url, report)
        return report

    def save_snapshot(
        self,
        path: str | Path,
        guilds: Sequence[str] | None = None,
        *,
        now_ms: int | None = None,
    ) -> int:
        """Write the keyspace (or the keys of some guilds) to a JSONL snapshot.

        Parameters
        ----------
        path : str or Path
            File to write.
        guilds : sequence of str, optional
            Only keys of these namespaces: topic keys, ``msg:`` keys, positions
            and state. Default: every string, sorted-set and hash key.
        now_ms : int, optional
            The snapshot time ``ttl_ms`` is counted from (default the server's
            clock).

        Returns
        -------
        int
            Keys written. Keys of other types are skipped with a warning.

        Raises
        ------
        GuildNotFound
            If one of ``guilds`` owns no key; nothing is written then.
        """
        if isinstance(guilds, str):
            guilds = [guilds]
        with self._guard("reading keys for the snapshot"):
            keys = self._snapshot_keys(guilds)
            now = (
                now_ms
                if now_ms is not None
                else _keyspace_io.server_time_ms(self.client)
            )
            records, unsupported = _keyspace_io.read_records(
                self.client, keys, now_ms=now
            )
        _warn_unsupported(unsupported)
        return write_snapshot(records, path)

    def load_demo(
        self, *, seed: int = 0, guild_id: str = "demo-orders", force: bool = False
    ) -> LoadReport:
        """Write the simulated demo guild into this server (a write).

        Raises
        ------
        WriteRefused
            Unless the Bus is writable (an embedded server, or
            ``connect(url, writable=True)``) or ``force=True``.
        """
        from rdebug_nb.simulator import simulate_guild

        self._check_writable("the demo guild", force)
        with self._guard("writing the demo guild"):
            now = _keyspace_io.server_time_ms(self.client)
            records = simulate_guild(guild_id, seed=seed, now_ms=now)
            return _keyspace_io.write_records(self.client, records, replace=True)

    def _check_writable(self, what: str, force: bool) -> None:
        if not (self.writable or force):
            raise WriteRefused(
                f"{self.url} is not marked writable, and {what} belongs on a "
                "sandbox: open it with connect(url, writable=True), or pass force=True"
            )

    def _topic_keys(self, guild_id: str) -> list[TopicKey]:
        pattern = glob_escape(guild_id) + ":*"
        with self._guard(f"SCAN MATCH {pattern}"):
            keys = list(discovery.scan_keys(self.client, match=pattern, type_="zset"))
            found, _ = discovery.resolve_topic_keys(self.client, keys, {guild_id})
        own = sorted(
            (t for t in found if t.namespace == guild_id), key=lambda t: t.topic
        )
        if not own:
            raise GuildNotFound(
                f"no topic key of guild {guild_id!r} on {self.url}; "
                "bus.guilds() lists the namespaces that exist"
            )
        return own

    def _select_topics(
        self, guild_id: str, topics: Sequence[str] | None
    ) -> list[TopicKey]:
        keys = self._topic_keys(guild_id)
        if topics is None:
            return keys
        wanted = [topics] if isinstance(topics, str) else list(topics)
        chosen = [t for t in keys if t.topic in wanted]
        missing = sorted(set(wanted) - {t.topic for t in chosen})
        if missing:
            raise GuildNotFound(
                f"guild {guild_id!r} has no topic {missing}; "
                f"bus.topics({guild_id!r}) lists them"
            )
        return chosen

    def _load(
        self,
        guild_id: str,
        keys: list[TopicKey],
        low: str,
        high: str,
        limit: int | None,
        topics: Sequence[str] | str | None = None,
        *,
        messages: bool = False,
    ) -> pd.DataFrame:
        """Fetch and decode the planned pages; each page is decoded on arrival.

        Returns a delivery frame, or with ``messages`` a message frame built
        without the delivery frame.
        """
        decode = decode_messages if messages else decode_deliveries
        counts = self._counts(keys, low, high)
        plan = _plan_pages(keys, counts, low, high, limit)
        total = sum(count for _, count in plan)
        bar = tqdm(
            total=total,
            unit="msg",
            desc=guild_id,
            disable=not self.progress or total < PROGRESS_THRESHOLD,
        )
        with bar:
            frame = decode(guild_id, self._fetch(guild_id, plan, bar))
        frame.attrs["cut"] = limit is not None and any(n > limit for n in counts)
        frame.attrs["query"] = _query(guild_id, topics, low, high, limit)
        if self.url:
            frame.attrs["source"] = self.url  # password hidden; exports record it
        return frame

    def _counts(self, keys: list[TopicKey], low: str, high: str) -> list[int]:
        if low == "-inf" and high == "+inf":
            return [t.entries for t in keys]
        with self._guard("ZCOUNT on the topic keys"):
            pipe = self.client.pipeline(transaction=False)
            for topic in keys:
                pipe.zcount(topic.key, low, high)
            return [int(n) for n in pipe.execute()]

    def _fetch(
        self, guild_id: str, plan: list[tuple[_Page, int]], bar: Any
    ) -> Iterator[tuple[str, str, list[bytes]]]:
        done = 0
        for start in range(0, len(plan), _PAGES_PER_ROUND_TRIP):
            batch = [page for page, _ in plan[start : start + _PAGES_PER_ROUND_TRIP]]
            try:
                answers = self._fetch_pages(batch)
            except RdebugError as err:
                raise _incomplete(guild_id, plan, done, err) from err
            for page, members in zip(batch, answers, strict=True):
                if len(members) < page.size:
                    raise _incomplete(guild_id, plan, done, _shrunk(page, members))
                done += len(members)
                bar.update(len(members))
                yield page.topic.key, page.topic.topic, members

    def _fetch_pages(self, pages: list[_Page]) -> list[list[bytes]]:
        with self._guard(f"ZRANGE on {pages[0].topic.key!r}"):
            pipe = self.client.pipeline(transaction=False)
            for page in pages:
                page.queue(pipe)
            answers: list[list[bytes]] = pipe.execute()
        logger.info("fetched %s pages, %s entries", len(pages), sum(map(len, answers)))
        return answers

    def _snapshot_keys(self, guilds: Sequence[str] | None) -> list[str]:
        """Every key, or the keys of ``guilds``; a named guild must own one."""
        if guilds is None:
            return sorted(discovery.scan_keys(self.client))
        space = self.keyspace()
        keys: list[str] = []
        owners: set[str] = set()
        for key in discovery.scan_keys(self.client):
            found = {g for g in guilds if _belongs(key, {g}, space)}
            if found:
                keys.append(key)
                owners |= found
        missing = [g for g in guilds if g not in owners]
        if missing:
            raise GuildNotFound(
                f"no key of guild {missing} on {self.url}, so no snapshot was "
                "written; bus.guilds() lists the namespaces that exist"
            )
        return sorted(keys)

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Raise redis-py's errors as the package's, naming ``what`` and the fix."""
        try:
            yield
        except (
            redis.exceptions.RedisError,
            redis.exceptions.RedisClusterException,
        ) as err:
            failure = self._failure(err, what)
            if failure is None:
                raise
            raise failure from err

    def _failure(self, err: Exception, what: str) -> RdebugError | None:
        """The package's error for ``err``, or None for errors that are bugs."""
        timeout = "in time" if self.timeout is None else f"in {self.timeout} s"
        facts = {"url": self.url, "what": _with_notes(what, err), "timeout": timeout}
        for kinds, error, template in _FAILURES:
            if isinstance(err, kinds):
                return error(template.format(err=err, **facts))
        return None


class _Page:
    """One page of one topic key: by index for whole keys, by score in a window."""

    def __init__(
        self, topic: TopicKey, offset: int, size: int, low: str, high: str, newest: bool
    ) -> None:
        self.topic, self.offset, self.size = topic, offset, size
        self.low, self.high, self.newest = low, high, newest

    def queue(self, pipe: Any) -> None:
        if self.newest:
            pipe.zrevrangebyscore(
                self.topic.key, self.high, self.low, start=self.offset, num=self.size
            )
        elif self.low == "-inf" and self.high == "+inf":
            pipe.zrange(self.topic.key, self.offset, self.offset + self.size - 1)
        else:
            pipe.zrangebyscore(
                self.topic.key, self.low, self.high, start=self.offset, num=self.size
            )


def _plan_pages(
    keys: list[TopicKey], counts: list[int], low: str, high: str, limit: int | None
) -> list[tuple[_Page, int]]:
    plan: list[tuple[_Page, int]] = []
    for topic, count in zip(keys, counts, strict=True):
        wanted = count if limit is None else min(count, limit)
        for offset in range(0, wanted, PAGE_SIZE):
            size = min(PAGE_SIZE, wanted - offset)
            plan.append(
                (_Page(topic, offset, size, low, high, limit is not None), size)
            )
    return plan


def _query(
    guild_id: str,
    topics: Sequence[str] | str | None,
    low: str,
    high: str,
    limit: int | None,
) -> dict[str, Any]:
    """What a load asked for, kept in ``attrs["query"]`` for :meth:`Bus.refresh`."""
    if isinstance(topics, str):
        topics = [topics]
    return {
        "guild_id": guild_id,
        "topics": None if topics is None else list(topics),
        "since": None if low == "-inf" else int(low),
        "until": None if high == "+inf" else int(high),
        "limit": limit,
    }


def _query_of(frame: pd.DataFrame) -> dict[str, Any]:
    query = frame.attrs.get("query")
    if not isinstance(query, dict) or "guild_id" not in query:
        raise ValueError(
            "this frame does not say which load it came from (attrs['query'] is "
            "missing); refresh a frame returned by bus.messages() or bus.deliveries()"
        )
    return query


def _refresh_low(frame: pd.DataFrame, since: int | None, overlap_ms: int) -> str:
    """Where a refresh starts reading: the newest timestamp minus the overlap."""
    if not len(frame):
        return _score_bound(since, "-inf")
    low = int(frame["timestamp_ms"].max()) - overlap_ms
    return repr(low if since is None else max(low, since))


def _newest(frame: pd.DataFrame, limit: int | None, guild_id: str) -> pd.DataFrame:
    """Keep the newest ``limit`` rows of a refreshed frame, as a load would."""
    if limit is None or len(frame) <= limit:
        return frame
    attrs = {**frame.attrs, "truncated": True}
    frame = frame.iloc[-limit:].reset_index(drop=True) if limit else frame.iloc[:0]
    frame.attrs = attrs
    warn_truncated(f"guild {guild_id!r}", limit, stacklevel=3)
    return frame


def _incomplete(
    guild_id: str, plan: list[tuple[_Page, int]], done: int, err: Exception
) -> LoadIncomplete:
    total = sum(count for _, count in plan)
    return LoadIncomplete(
        f"loading guild {guild_id!r} stopped after {done} of {total} entries: {err}. "
        "No partial frame is returned; run the load again"
    )


def _shrunk(page: _Page, members: list[bytes]) -> RdebugError:
    """RusticAI never removes topic entries: a short page means the data changed."""
    return RdebugError(
        f"{page.topic.key!r} returned {len(members)} of the {page.size} entries "
        "counted when the load started; the key shrank (a restart without "
        "persistence, FLUSHDB or ZREM)"
    )


def _finish(frame: pd.DataFrame, limit: int | None, guild_id: str) -> pd.DataFrame:
    """Apply ``limit`` (newest rows) and issue the warnings of a load."""
    cut = bool(frame.attrs.pop("cut", False))
    if limit is not None and (cut or len(frame) > limit):
        attrs = {**frame.attrs, "truncated": True}
        frame = frame.iloc[-limit:].reset_index(drop=True) if limit else frame.iloc[:0]
        frame.attrs = attrs
        warn_truncated(f"guild {guild_id!r}", limit, stacklevel=3)
    warn_skips(frame, f"guild {guild_id!r}", stacklevel=3)
    return frame


def _check_query(guild_id: object, limit: object) -> None:
    if not isinstance(guild_id, str):
        raise TypeError(f"guild_id must be a str, not {type(guild_id).__name__}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, not {limit!r}")


Bounds = tuple[str, str]
_SECONDS_LIKE: Final = 10**11
"""Unix times below this (in 1973 as milliseconds) are taken for seconds."""


def _window(since: TimeBound | timedelta, until: TimeBound | timedelta) -> Bounds:
    """The score bounds of a time window; an empty window is an error."""
    low, high = _score_bound(since, "-inf"), _score_bound(until, "+inf")
    if float(low) > float(high):
        raise ValueError(
            f"since ({since!r}) is later than until ({until!r}): the window is empty; "
            "swap them"
        )
    return low, high


def _score_bound(value: TimeBound | timedelta, default: str) -> str:
    """A ZRANGEBYSCORE bound (Unix ms) from a time, a Unix ms number, or a duration
    such as ``"15m"`` / ``timedelta(hours=1)`` meaning that long before now."""
    if value is None:
        return default
    if isinstance(value, int | float) and not isinstance(value, bool):
        if 0 < abs(value) < _SECONDS_LIKE:
            raise ValueError(
                f"{value!r} looks like Unix seconds, but numeric times are Unix "
                f"milliseconds: pass {int(value * 1000)!r} or a datetime"
            )
        return repr(int(value))
    try:
        stamp = _timestamp(value)
    except (ValueError, OverflowError, TypeError) as err:
        raise ValueError(
            f"{value!r} is not a time: use a datetime, an ISO time such as "
            "'2026-12-03 12:30' (UTC), Unix milliseconds, or a duration such as "
            "'15m' (that long ago)"
        ) from err
    return repr(int(stamp.value // 1_000_000))


def _duration(value: timedelta | str) -> pd.Timedelta:
    if isinstance(value, timedelta):
        return pd.Timedelta(value)
    text = value.strip()
    if text.endswith("d"):  # pandas wants "D" for days
        return pd.Timedelta(float(text[:-1]), unit="D")
    return pd.Timedelta(text)


def _timestamp(value: Any) -> pd.Timestamp:
    if isinstance(value, timedelta) or (
        isinstance(value, str) and _DURATION.fullmatch(value.strip())
    ):
        return pd.Timestamp.now(tz="UTC") - abs(_duration(value))
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp


def _stored_message(
    guild_id: str, message_id: int, keys: list[TopicKey], answers: list[Any]
) -> StoredMessage:
    by_id = answers[0]
    copies: list[tuple[str, bytes]] = []
    for topic, members in zip(keys, answers[1:], strict=True):
        copies.extend(
            (topic.topic, m)
            for m in members
            if discovery.try_member_id(m) == message_id
        )
    if not copies and by_id is not None:
        copies.append((_topic_of(by_id), by_id))
    if not copies:
        raise MessageNotFound(
            f"message {message_id} is in no topic key of guild {guild_id!r} and its "
            f"{message_key(guild_id, message_id)} key does not exist; "
            "check the guild id"
        )
    return StoredMessage(guild_id, message_id, tuple(copies), by_id is not None)


def _topic_of(member: bytes) -> str:
    data = StoredMessage("", 0, (("", member),), True).data
    topic = data.get("topic_published_to")
    return topic if isinstance(topic, str) else "dead_letter_queue"


def _belongs(key: str, wanted: set[str], space: Keyspace) -> bool:
    topic = space.topic_keys.get(key)
    if topic is not None:
        return topic.namespace in wanted
    by_id = try_parse_message_key(key)
    if by_id is not None:
        return by_id[0] in wanted
    position = parse_position_key(key)
    if position is not None:
        return position.guild_id in wanted or position.namespace in wanted
    owner = try_state_owner(key, wanted)
    return owner is not None and owner[0] in wanted


def _check_not_rdb(path: str | Path) -> None:
    """Refuse an RDB file early: it is binary, not a keyspace JSONL snapshot."""
    try:
        with Path(path).open("rb") as handle:
            head = handle.read(5)
    except OSError as err:
        raise SnapshotError(
            f"cannot open snapshot {str(path)!r}: {err.strerror}"
        ) from err
    if head == b"REDIS":
        raise SnapshotError(
            f"{str(path)!r} is a Redis RDB file, not a keyspace JSONL snapshot: start "
            "redis-server on it (--dir <folder> --dbfilename <file>) and connect "
            "to that server"
        )


def _warn_unsupported(keys: list[str]) -> None:
    if keys:
        warn_unsupported(keys, stacklevel=3)


_FAILURES: Final[tuple[tuple[Any, type[RdebugError], str], ...]] = (
    (
        redis.exceptions.NoPermissionError,
        PermissionDenied,
        "{url} refused {what}: {err}. Reading needs an ACL user with +@read "
        "+@connection +time; load_snapshot and load_demo also need +@write "
        "on the keys (see the Notes of rdebug_nb.connect)",
    ),
    (
        redis.exceptions.ReadOnlyError,
        WriteRefused,
        "{url} refused {what}: {err}. It is a read-only replica; write to its "
        "primary instead",
    ),
    (
        redis.exceptions.AskError,
        ConnectionFailed,
        "{url} is a node of a Redis Cluster and redirected {what} to another "
        "node ({err}); connect(url, cluster=True) reads the whole cluster",
    ),
    (
        redis.exceptions.TimeoutError,
        CommandTimeout,
        "{what} on {url} got no answer {timeout}, also after retries ({err}); "
        "raise connect(timeout=...) or check the server's load",
    ),
    (
        (
            redis.exceptions.AuthenticationError,
            redis.exceptions.AuthorizationError,
        ),
        ConnectionFailed,
        "{url} rejected the credentials: {err}; check the user and password in the URL",
    ),
    (
        redis.exceptions.BusyLoadingError,
        ConnectionFailed,
        "{url} was still loading its data set during {what}, also after retries "
        "({err}); try again when it has started",
    ),
    (
        redis.exceptions.ConnectionError,
        ConnectionFailed,
        "cannot reach {url} during {what}: {err}; check that the server runs "
        "and the host, port, TLS and password in the URL are right",
    ),
    (
        redis.exceptions.InvalidResponse,
        ConnectionFailed,
        "{url} answered {what} with something that is not the Redis protocol "
        "({err}); check the host and port in the URL point at a Redis server",
    ),
    (
        (redis.exceptions.ClusterError, redis.exceptions.RedisClusterException),
        ConnectionFailed,
        "the Redis Cluster behind {url} failed {what}: {err}; if the cluster is "
        "down, redis-cli --cluster check shows which slots are not served",
    ),
)
"""redis-py errors the Bus turns into the package's: (kinds, error, message)."""

_SECRET_OPTIONS: Final = frozenset({"password", "ssl_password"})
_PROBES: Final = 32


def _client(url: str, timeout: float, retries: int) -> redis.Redis:
    """A client on one server that retries dropped connections and time-outs."""
    try:
        client = redis.Redis.from_url(
            url,
            decode_responses=False,
            socket_timeout=timeout,
            encoding_errors="surrogateescape",
            socket_connect_timeout=timeout,
            retry=_retry(retries),
            retry_on_error=[
                redis.exceptions.ConnectionError,
                redis.exceptions.TimeoutError,
            ],
            health_check_interval=30,
        )
        _check_options(client)
    except (ValueError, TypeError) as err:
        raise ConnectionFailed(
            f"{_shown_url(url)!r} is not a Redis URL redis-py can use: {err}; use "
            "redis://, rediss:// (needed for ssl_* options) or unix://, with query "
            "options redis-py knows"
        ) from err
    return client


def _cluster_client(url: str, timeout: float, retries: int) -> redis.Redis:
    """A client on every node of the cluster ``url`` belongs to.

    Typed as :class:`redis.Redis`: it offers the same commands and pipelines,
    runs ``SCAN`` on every primary and routes each key to its node.
    """
    cluster = redis.RedisCluster.from_url(
        url,
        socket_timeout=timeout,
        encoding_errors="surrogateescape",
        socket_connect_timeout=timeout,
        retry=_retry(retries),
        health_check_interval=30,
    )
    return cast("redis.Redis", cluster)


def _retry(retries: int) -> Retry:
    return Retry(ExponentialBackoff(cap=2.0, base=0.1), retries)


def _check_options(client: redis.Redis) -> None:
    """Raise TypeError now for a URL option redis-py does not know (not later)."""
    pool = client.connection_pool
    pool.connection_class(**pool.connection_kwargs)


def _socket_timeout(client: Any) -> float | None:
    pool = getattr(client, "connection_pool", None)
    timeout = getattr(pool, "connection_kwargs", {}).get("socket_timeout")
    return float(timeout) if isinstance(timeout, int | float) else None


def _reply_field(reply: Any, name: str) -> str | None:
    """A field of a map reply: a dict (RESP3) or alternating items (RESP2)."""
    if isinstance(reply, list):
        reply = dict(zip(reply[::2], reply[1::2], strict=False))
    if not isinstance(reply, dict):
        return None
    found = {_as_text(key): value for key, value in reply.items()}.get(name)
    return None if found is None else _as_text(found)


def _as_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _with_notes(what: str, err: Exception) -> str:
    """``what`` and the notes discovery added to ``err`` (which keys it read)."""
    notes = getattr(err, "__notes__", ())
    return "".join([what, *(f" ({note})" for note in notes)])


def _shown_url(url: str) -> str:
    """The URL as shown anywhere: password and secret query options hidden."""
    return redact_url(_hide_query_secrets(url))


def _hide_query_secrets(url: str) -> str:
    """Replace the values of secret query options by ``***``.

    >>> _hide_query_secrets("rediss://h:1/0?ssl_password=pw&ssl_ca_certs=/ca.pem")
    'rediss://h:1/0?ssl_password=***&ssl_ca_certs=/ca.pem'
    """
    parts = urlsplit(url)
    options = parse_qsl(parts.query, keep_blank_values=True)
    if not any(name in _SECRET_OPTIONS for name, _ in options):
        return url
    shown = [(n, "***" if n in _SECRET_OPTIONS else v) for n, v in options]
    return urlunsplit(parts._replace(query=urlencode(shown, safe="/*:")))

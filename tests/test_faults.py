"""Faults of real servers: restarts and killed connections mid-load, stalls,
killed tail connections, and discovery on a keyspace of 200,000 keys.

A load either completes (after bounded retries) with exactly the frame a clean
load gives, or fails with the package's error saying what was read; never a
partial frame. Mid-load faults are triggered by a thread that watches the
server's own command counters (``INFO commandstats``) from another connection,
so they strike after a known share of the load's ``ZRANGE`` calls.
"""

from __future__ import annotations

import contextlib
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

import rdebug_nb as rd
from rdebug_nb import discovery
from rdebug_nb._keyspace_io import write_records
from rdebug_nb.simulator import simulate_guild
from rdebug_nb.tail import Tail
from tests.members import command, publish, restamped, server_ms, template
from tests.servers import RedisServerProcess, redis_server_available

pytestmark = pytest.mark.redis_server

GUILD = "fault-orders"
ORDERS = 1000
SIMULATED_AT = 1_796_301_000_000
DEBUG = ("--enable-debug-command", "yes")
WAIT = 60.0


def zrange_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_zrange", {}).get("calls", 0))


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.005)


def fill(url: str) -> None:
    """Write the simulated order guild (about 11,000 deliveries, 35 MB), the
    same on every server."""
    client = redis.Redis.from_url(url)
    records = simulate_guild(GUILD, now_ms=SIMULATED_AT, orders=ORDERS)
    write_records(client, records, expiry="persist")
    client.close()


def start_server(folder: Path, *args: str) -> RedisServerProcess:
    if not redis_server_available():
        pytest.skip("Debian's redis-server is not installed")
    return RedisServerProcess(folder, *DEBUG, *args)


@pytest.fixture(scope="module")
def guild_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server holding the simulated guild; restarted tests get their own."""
    server = start_server(tmp_path_factory.mktemp("faults"))
    fill(server.url)
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def clean(guild_server: str) -> tuple[pd.DataFrame, int, int]:
    """A clean load, its ZRANGE calls before the load, and during the load."""
    with rd.connect(guild_server, progress=False) as bus:
        admin = redis.Redis.from_url(guild_server)
        topics = len(bus.topics(GUILD))
        before = zrange_calls(admin)
        frame = bus.messages(GUILD)
        calls = zrange_calls(admin) - before
        admin.close()
    # discovery peeks at the first and last member of each topic key
    return frame, 2 * topics, calls - 2 * topics


class Trigger(threading.Thread):
    """Runs ``action`` once the server has answered ``after`` more ZRANGEs."""

    def __init__(self, url: str, after: int, action: Callable[[], None]) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url)
        self.target = zrange_calls(self.client) + after
        self.action = action
        self.fired = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while zrange_calls(self.client) < self.target:
                time.sleep(0.0005)
            self.client.close()
            self.action()
            self.fired.set()
        except BaseException as err:
            self.error = err
            raise

    def finish(self) -> None:
        self.join(WAIT)
        assert self.error is None
        assert self.fired.is_set()


def mid_load(clean: tuple[pd.DataFrame, int, int]) -> int:
    """ZRANGE calls after which a third of the load's pages were answered."""
    _, peeks, pages = clean
    assert pages >= 6, "the guild is too small to strike in the middle of a load"
    return peeks + pages // 3


# -- restarts and killed connections during a load ----------------------------


def shutdown(url: str, how: str) -> None:
    client = redis.Redis.from_url(url)
    with contextlib.suppress(redis.exceptions.ConnectionError):  # it hung up: done
        command(client, "SHUTDOWN", how)


@pytest.fixture
def restartable(
    tmp_path: Path, guild_server: str
) -> Iterator[list[RedisServerProcess]]:
    """A server of this test's own, filled like the shared one."""
    servers = [start_server(tmp_path / "redis")]
    fill(servers[0].url)
    yield servers
    for server in servers:
        if server.process.poll() is None:
            server.stop()


def test_a_restart_mid_load_is_retried_and_gives_the_clean_frame(
    restartable: list[RedisServerProcess], clean: tuple[pd.DataFrame, int, int]
) -> None:
    first = restartable[0]
    admin = redis.Redis.from_url(first.url)
    run_id = admin.info("server")["run_id"]

    def restart() -> None:
        shutdown(first.url, "SAVE")  # keeps the data: dump.rdb in its folder
        restartable.append(RedisServerProcess(first.workdir, *DEBUG, port=first.port))

    with rd.connect(first.url, retries=6, progress=False) as bus:
        trigger = Trigger(first.url, mid_load(clean), restart)
        trigger.start()
        frame = bus.messages(GUILD)
    trigger.finish()

    assert admin.info("server")["run_id"] != run_id
    assert zrange_calls(admin) > 0  # the load went on against the new server
    pd.testing.assert_frame_equal(frame, clean[0])
    admin.close()


def test_a_server_down_for_longer_than_the_retries_fails_with_what_was_read(
    restartable: list[RedisServerProcess], clean: tuple[pd.DataFrame, int, int]
) -> None:
    first = restartable[0]
    total = int(clean[0]["topics"].map(len).sum())

    with rd.connect(first.url, retries=1, timeout=1, progress=False) as bus:
        trigger = Trigger(
            first.url, mid_load(clean), lambda: shutdown(first.url, "SAVE")
        )
        trigger.start()
        with pytest.raises(rd.LoadIncomplete) as caught:
            bus.messages(GUILD)
    trigger.finish()

    message = str(caught.value)
    done = int(message.split("stopped after ")[1].split(" of ")[0])
    assert 0 < done < total
    assert f"of {total} entries" in message
    assert "No partial frame" in message
    assert isinstance(caught.value.__cause__, rd.ConnectionFailed)


def test_a_restart_that_lost_the_data_is_not_a_silent_partial_frame(
    restartable: list[RedisServerProcess], clean: tuple[pd.DataFrame, int, int]
) -> None:
    first = restartable[0]

    def restart_empty() -> None:
        shutdown(first.url, "NOSAVE")
        (first.workdir / "dump.rdb").unlink(missing_ok=True)
        restartable.append(RedisServerProcess(first.workdir, *DEBUG, port=first.port))

    with rd.connect(first.url, retries=6, progress=False) as bus:
        trigger = Trigger(first.url, mid_load(clean), restart_empty)
        trigger.start()
        try:
            frame = bus.messages(GUILD)
        except rd.LoadIncomplete:
            frame = clean[0]
    trigger.finish()

    pd.testing.assert_frame_equal(frame, clean[0])


def test_a_killed_connection_mid_load_is_retried_transparently(
    guild_server: str, clean: tuple[pd.DataFrame, int, int]
) -> None:
    admin = redis.Redis.from_url(guild_server)
    killed: list[int] = []

    def kill() -> None:
        killed.append(admin.client_kill_filter(_type="normal", skipme=True))

    with rd.connect(guild_server, retries=2, progress=False) as bus:
        trigger = Trigger(guild_server, mid_load(clean), kill)
        trigger.start()
        frame = bus.messages(GUILD)
    trigger.finish()

    assert killed[0] >= 1
    pd.testing.assert_frame_equal(frame, clean[0])
    admin.close()


# -- stalls ------------------------------------------------------------------


class Stall(threading.Thread):
    """``DEBUG SLEEP seconds`` from a connection of its own: the server stops."""

    def __init__(self, url: str, seconds: float) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url, socket_timeout=seconds + 30)
        self.seconds = seconds

    def run(self) -> None:
        command(self.client, "DEBUG", "SLEEP", self.seconds)
        self.client.close()

    def is_sleeping(self) -> bool:
        """Whether the server is in DEBUG SLEEP (asked on another connection)."""
        port = self.client.connection_pool.connection_kwargs["port"]
        quick = Retry(NoBackoff(), 0)
        with redis.Redis(
            port=port, socket_timeout=0.05, socket_connect_timeout=0.05, retry=quick
        ) as probe:
            try:
                probe.ping()
            except redis.exceptions.TimeoutError:
                return True
        return False

    def __enter__(self) -> Stall:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.join(WAIT)


def stalled_error(url: str, call: Callable[[rd.Bus], object]) -> rd.RdebugError:
    """The error ``call`` raises while the server sleeps 2 s (timeout 0.3 s)."""
    with rd.connect(url, timeout=0.3, retries=1, progress=False) as bus:
        bus.ping()
        with Stall(url, 2.0) as stall:
            wait_for(stall.is_sleeping, "DEBUG SLEEP")
            with pytest.raises(rd.RdebugError) as caught:
                call(bus)
    return caught.value


def test_a_stall_during_discovery_names_the_command(guild_server: str) -> None:
    error = stalled_error(guild_server, lambda bus: bus.guilds())

    assert isinstance(error, rd.CommandTimeout)
    assert "SCAN MATCH * COUNT" in str(error)
    assert "in 0.3 s" in str(error)
    assert "connect(timeout=...)" in str(error)


def test_a_stall_during_a_lookup_names_the_guild_pattern(guild_server: str) -> None:
    def look_up(bus: rd.Bus) -> object:
        return bus.message(GUILD, 2824971229302112256)

    error = stalled_error(guild_server, look_up)

    assert isinstance(error, rd.CommandTimeout)
    assert f"SCAN MATCH {GUILD}:*" in str(error)


def test_a_stall_mid_load_names_the_command_and_key(
    guild_server: str, clean: tuple[pd.DataFrame, int, int]
) -> None:
    stall = Stall(guild_server, 2.0)

    with rd.connect(guild_server, timeout=0.3, retries=1, progress=False) as bus:
        trigger = Trigger(guild_server, mid_load(clean), stall.start)
        trigger.start()
        with pytest.raises(rd.LoadIncomplete) as caught:
            bus.messages(GUILD)
    trigger.finish()
    stall.join(WAIT)

    cause = caught.value.__cause__
    assert isinstance(cause, rd.CommandTimeout)
    assert f"ZRANGE on '{GUILD}:" in str(cause)
    assert "stopped after" in str(caught.value)


def test_a_stall_shorter_than_the_retries_is_waited_out(
    guild_server: str, clean: tuple[pd.DataFrame, int, int]
) -> None:
    stall = Stall(guild_server, 0.5)

    with rd.connect(guild_server, timeout=0.3, retries=4, progress=False) as bus:
        trigger = Trigger(guild_server, mid_load(clean), stall.start)
        trigger.start()
        frame = bus.messages(GUILD)
    trigger.finish()
    stall.join(WAIT)

    pd.testing.assert_frame_equal(frame, clean[0])


# -- the tail's connection killed again and again ---------------------------


def test_a_tail_killed_four_times_holds_every_message_once_and_reports_gaps(
    fresh_bus: rd.Bus, capture: Path
) -> None:
    client, body = fresh_bus.client, template(capture)
    now = server_ms(client)
    bodies = [restamped(body, "default_topic", now, sequence=n) for n in range(1200)]
    tail = Tail(fresh_bus, GUILD, buffer=5000, reconnect_delay=0.05).start()
    wait_for(lambda: tail.state == "live", "the subscription")
    publisher = threading.Thread(target=publish_slowly, args=(client, bodies))

    publisher.start()
    for kill in range(1, 5):
        wait_for(lambda: tail.counts.received >= 200 * kill, "more messages")  # noqa: B023
        assert client.client_kill_filter(_type="pubsub") >= 1
        wait_for(lambda: len(tail.gaps) == kill, "the reconnect")  # noqa: B023
    publisher.join(WAIT)
    wait_for(lambda: tail.counts.received >= len(bodies), "every message")

    held = [(m.topic, m.id) for m in tail.messages]
    assert len(held) == len(set(held)) == len(bodies)
    assert {mid for _, mid in held} == {b["id"] for b in bodies}
    assert len(tail.gaps) == 4
    assert sum(gap.count for gap in tail.gaps) == tail.counts.backfilled
    assert all(gap.reason for gap in tail.gaps)
    assert "4 reconnects" in tail.status
    assert tail.reconcile().ok
    tail.close()


def publish_slowly(client: redis.Redis, bodies: list[dict[str, object]]) -> None:
    for n, body in enumerate(bodies):
        publish(client, GUILD, body)
        if n % 20 == 0:
            time.sleep(0.01)


# -- discovery on a large keyspace --------------------------------------------

MESSAGE_KEYS = 190_000
OTHER_KEYS = 10_000
VALUE_SIZE = 1000


@pytest.fixture(scope="module")
def large(guild_server: str) -> Iterator[rd.Bus]:
    """Database 2: 200,000 keys of 1 kB values, plus a small simulated guild."""
    url = guild_server.replace("/0", "/2")
    admin = redis.Redis.from_url(url)
    admin.flushdb()
    command(admin, "DEBUG", "POPULATE", MESSAGE_KEYS, "msg:big", VALUE_SIZE)
    command(admin, "DEBUG", "POPULATE", OTHER_KEYS, "cache", VALUE_SIZE)
    write_records(admin, simulate_guild("big", now_ms=server_ms(admin)))
    bus = rd.connect(url, progress=False)
    yield bus
    bus.close()
    admin.flushdb()
    admin.close()


def test_discovery_of_200000_keys_keeps_memory_bounded(large: rd.Bus) -> None:
    keys = large.client.dbsize()

    tracemalloc.start()
    guilds = large.guilds()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    assert keys > MESSAGE_KEYS + OTHER_KEYS
    assert peak < MESSAGE_KEYS * VALUE_SIZE / 20  # values: 190 MB
    row = guilds.set_index("namespace").loc["big"]
    assert row["message_keys"] >= MESSAGE_KEYS
    assert row["topic_keys"] == len(large.topics("big"))


SLOW_US = 10_000


def slow_commands(client: redis.Redis, run: Callable[[], object]) -> list[bytes]:
    """Commands the server logged as slower than 10 ms while ``run`` ran."""
    client.config_set("slowlog-log-slower-than", SLOW_US)
    client.slowlog_reset()
    run()
    return [entry["command"] for entry in client.slowlog_get(128)]


def test_discovery_of_200000_keys_never_blocks_the_server_for_long(
    large: rd.Bus,
) -> None:
    admin = large.client
    scans = int(admin.info("commandstats")["cmdstat_scan"]["calls"])

    # A busy machine can pause the server in any command; bounded commands
    # are quick in at least one of three runs, an unbounded one never is.
    runs = [slow_commands(admin, large.guilds) for _ in range(3)]
    witness = slow_commands(admin, lambda: command(admin, "DEBUG", "SLEEP", 0.02))

    stats = admin.info("commandstats")
    assert [] in runs, runs
    assert witness == [b"DEBUG SLEEP 0.02"]
    assert "cmdstat_keys" not in stats
    scanned = stats["cmdstat_scan"]["calls"] - scans
    assert scanned >= 3 * admin.dbsize() // (2 * discovery.SCAN_COUNT)

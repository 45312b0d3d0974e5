"""The live tail against real servers: bursts, reconnects, restarts, stop.

Messages are published the way RusticAI publishes them: ``ZADD`` of the message
JSON to the topic key, then ``PUBLISH`` of the same bytes on the channel of the
same name.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis

import rdebug_nb as rd
from rdebug_nb._query import MessageFilter
from rdebug_nb.errors import PermissionDenied
from rdebug_nb.ids import encode_id
from rdebug_nb.tail import Tail, TailMessage
from tests.clusters import RedisClusterProcesses
from tests.servers import RedisServerProcess, redis_server_available

GUILD = "tail-guild"
WAIT = 60.0


def make_member(
    topic: str | None,
    message_id: int,
    timestamp_ms: int,
    payload: dict[str, Any],
    *,
    sender: str = "probe",
    fmt: str = "generic_json",
    in_response_to: int | None = None,
    is_error: bool = False,
    process_status: str | None = None,
    history: Sequence[dict[str, Any]] = (),
) -> bytes:
    """A message JSON shaped like RusticAI 1.4's ``Message.to_json()``."""
    message = {
        "sender": {"id": sender, "name": sender.title()},
        "topics": topic or "dead_letter_queue",
        "recipient_list": [],
        "payload": payload,
        "format": fmt,
        "in_response_to": in_response_to,
        "thread": [in_response_to or message_id],
        "conversation_id": None,
        "forward_header": None,
        "routing_slip": None,
        "message_history": list(history),
        "ttl": None,
        "is_error_message": is_error,
        "traceparent": None,
        "session_state": None,
        "topic_published_to": topic,
        "enrich_with_history": 0,
        "process_status": process_status,
        "origin_guild_stack": [],
        "id": message_id,
        "priority": message_id >> 61,
        "timestamp": float(timestamp_ms),
    }
    return msgspec.json.encode(message)


def publish(
    client: redis.Redis,
    guild_id: str,
    members: Sequence[tuple[str, bytes]],
    *,
    per_second: float | None = None,
    chunk: int = 50,
) -> None:
    """ZADD then PUBLISH each (topic, member), pipelined in chunks, paced."""
    start = time.perf_counter()
    for offset in range(0, len(members), chunk):
        pipe = client.pipeline(transaction=False)
        for topic, member in members[offset : offset + chunk]:
            key = f"{guild_id}:{topic}"
            pipe.zadd(key, {member: msgspec.json.decode(member)["timestamp"]})
            pipe.publish(key, member)
        pipe.execute()
        if per_second:
            ahead = start + (offset + chunk) / per_second - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)


def server_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def batch(
    client: redis.Redis,
    count: int,
    *,
    topic: str = "orders.in",
    first: int = 0,
    pad: int = 400,
) -> list[tuple[str, bytes]]:
    """``count`` distinct messages stamped with the server's clock."""
    now = server_ms(client)
    return [
        (
            topic,
            make_member(
                topic,
                int(encode_id(4, now, machine_id=1, sequence=(first + i) % 4096))
                + (((first + i) // 4096) << 12),
                now,
                {"n": first + i, "note": "x" * pad},
            ),
        )
        for i in range(count)
    ]


def state_of(tail: Tail) -> str:
    return tail.state


def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.01)


def is_live(tail: Tail) -> Callable[[], bool]:
    return lambda: tail.state == "live"


def has_received(tail: Tail, count: int) -> Callable[[], bool]:
    return lambda: tail.counts.received >= count


def held_keys(tail: Tail) -> list[tuple[str, int]]:
    return [(m.topic, m.id) for m in tail.messages]


def expected_keys(members: Sequence[tuple[str, bytes]]) -> set[tuple[str, int]]:
    return {(topic, msgspec.json.decode(member)["id"]) for topic, member in members}


@pytest.fixture
def client(fresh_bus: rd.Bus) -> redis.Redis:
    return fresh_bus.client


@pytest.fixture
def live_tail(fresh_bus: rd.Bus) -> Iterator[Tail]:
    tail = Tail(fresh_bus, GUILD, buffer=20_000)
    tail.start()
    wait_for(lambda: tail.state == "live", "the subscription")
    yield tail
    tail.close()


def test_a_burst_of_5000_in_one_second_arrives_exactly_once(
    live_tail: Tail, client: redis.Redis
) -> None:
    members = batch(client, 5000)

    publish(client, GUILD, members, per_second=5000)
    wait_for(lambda: live_tail.counts.received >= 5000, "5,000 deliveries")

    held = held_keys(live_tail)
    assert len(held) == len(set(held)) == 5000
    assert set(held) == expected_keys(members)
    assert live_tail.counts.duplicates == 0
    assert live_tail.gaps == ()
    check = live_tail.reconcile(until=server_ms(client))
    assert check.ok
    assert check.stored == check.received == 5000


def test_listeners_are_called_at_most_ten_times_a_second(
    live_tail: Tail, client: redis.Redis
) -> None:
    calls: list[float] = []
    live_tail.add_listener(lambda tail: calls.append(time.monotonic()))

    publish(client, GUILD, batch(client, 3000), per_second=3000)
    wait_for(lambda: live_tail.counts.received >= 3000, "3,000 deliveries")

    gaps = [later - earlier for earlier, later in itertools.pairwise(calls)]
    assert len(calls) >= 2
    assert min(gaps) >= live_tail.refresh_interval * 0.99


def test_other_guilds_with_a_common_prefix_or_glob_characters_do_not_leak(
    fresh_bus: rd.Bus, client: redis.Redis
) -> None:
    guilds = ["g", "g:x", "g*", "gA", "g[1]"]
    tails = {g: Tail(fresh_bus, g).start() for g in guilds}
    for tail in tails.values():
        wait_for(is_live(tail), "the subscriptions")
    members = {g: batch(client, 5, first=10 * i) for i, g in enumerate(guilds)}
    closing = {g: batch(client, 1, first=100 + i) for i, g in enumerate(guilds)}

    for guild, chosen in members.items():
        publish(client, guild, chosen)
    for guild, last in closing.items():  # published after everything else
        publish(client, guild, last)
        members[guild] += last
    for tail in tails.values():
        wait_for(has_received(tail, 6), "each guild's 6")

    for guild, tail in tails.items():
        assert set(held_keys(tail)) == expected_keys(members[guild])
        tail.close()
    # g:x matches the pattern g:* but is another guild; * and [ are escaped
    assert tails["g"].counts.other_guilds == len(members["g:x"])
    assert tails["g*"].counts.other_guilds == 0


def test_dead_letters_arrive_on_their_topic(
    live_tail: Tail, client: redis.Redis
) -> None:
    now = server_ms(client)
    dead = make_member(None, int(encode_id(4, now)), now, {"error_type": "KeyError"})

    publish(client, GUILD, [("dead_letter_queue", dead)])
    wait_for(lambda: live_tail.counts.received >= 1, "the dead letter")

    assert held_keys(live_tail) == [("dead_letter_queue", int(encode_id(4, now)))]
    assert live_tail.to_frame()["is_dead_letter"].tolist() == [True]


def test_reconnect_after_client_kill_backfills_the_gap(
    fresh_bus: rd.Bus, client: redis.Redis
) -> None:
    tail = Tail(fresh_bus, GUILD, buffer=20_000, reconnect_delay=1.0).start()
    wait_for(lambda: tail.state == "live", "the subscription")
    members = batch(client, 4000)
    publisher = threading.Thread(
        target=publish, args=(client, GUILD, members), kwargs={"per_second": 1000}
    )

    publisher.start()
    wait_for(lambda: tail.counts.received >= 1000, "the first 1,000")
    killed = client.client_kill_filter(_type="pubsub")
    wait_for(lambda: tail.state == "reconnecting", "the tail to notice")
    publisher.join()
    wait_for(lambda: tail.counts.received >= 4000, "all 4,000")

    held = held_keys(tail)
    assert int(killed) >= 1
    assert len(held) == len(set(held)) == 4000
    assert set(held) == expected_keys(members)
    assert len(tail.gaps) == 1
    gap = tail.gaps[0]
    assert gap.count == tail.counts.backfilled > 0
    assert gap.first_ms is not None
    assert gap.last_ms is not None
    assert gap.since_ms <= gap.first_ms <= gap.last_ms
    assert "closed" in gap.reason.lower() or "connection" in gap.reason.lower()
    assert tail.reconcile().ok
    tail.close()


def restart(server: RedisServerProcess, *args: str) -> RedisServerProcess:
    """Start redis-server again on the same port and directory."""
    return RedisServerProcess(server.workdir, *args, port=server.port)


def publish_through_outages(
    url: str, members: Sequence[tuple[str, bytes]], per_second: float
) -> None:
    """Publish every member, retrying (same bytes) while the server is down."""
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=2)
    for offset in range(0, len(members), 10):
        while True:
            try:
                publish(client, GUILD, members[offset : offset + 10], chunk=10)
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        time.sleep(10 / per_second)
    client.close()


@pytest.mark.redis_server
def test_server_restart_mid_stream_loses_nothing(tmp_path: Path) -> None:
    if not redis_server_available():
        pytest.skip("Debian's redis-server is not installed")
    durable = ("--appendonly", "yes", "--appendfsync", "always")
    server = RedisServerProcess(tmp_path / "redis", *durable)
    client = redis.Redis.from_url(server.url)
    tail = Tail(client, GUILD, buffer=20_000, reconnect_delay=1.0).start()
    wait_for(lambda: tail.state == "live", "the subscription")
    members = batch(client, 3000)
    publisher = threading.Thread(
        target=publish_through_outages, args=(server.url, members, 1000)
    )

    publisher.start()
    wait_for(lambda: tail.counts.received >= 800, "the first 800")
    server.stop()
    wait_for(lambda: tail.state == "reconnecting", "the tail to notice")
    server = restart(server, *durable)
    publisher.join()
    wait_for(lambda: tail.counts.received >= 3000, "all 3,000")

    held = held_keys(tail)
    assert len(held) == len(set(held)) == 3000
    assert set(held) == expected_keys(members)
    assert tail.gaps
    assert sum(gap.count for gap in tail.gaps) == tail.counts.backfilled
    assert tail.gaps[-1].count > 0
    assert tail.reconcile().ok
    tail.close()
    client.close()
    server.stop()


def test_a_subscriber_beyond_the_output_buffer_limit_is_dropped_and_backfills(
    fresh_bus: rd.Bus, client: redis.Redis
) -> None:
    before = str(
        client.config_get("client-output-buffer-limit")["client-output-buffer-limit"]
    )
    release = threading.Event()

    def blocked(message: TailMessage) -> None:
        release.wait(WAIT)

    tail = Tail(fresh_bus, GUILD, buffer=20_000, callback=blocked).start()
    wait_for(lambda: tail.state == "live", "the subscription")
    members = batch(client, 12_000, pad=1000)
    client.config_set("client-output-buffer-limit", "pubsub 256kb 128kb 1")
    try:
        publish(client, GUILD, members, chunk=500)
        wait_for(lambda: not _pubsub_clients(client), "the server to drop the tail")
    finally:
        client.config_set("client-output-buffer-limit", before)
        release.set()
    wait_for(lambda: tail.counts.received >= 12_000, "all 12,000")

    held = held_keys(tail)
    assert len(held) == len(set(held)) == 12_000
    assert set(held) == expected_keys(members)
    assert tail.gaps
    assert tail.gaps[0].count > 0
    tail.close()


def _pubsub_clients(client: redis.Redis) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = client.client_list()
    return [
        c
        for c in listed
        if c.get("name", "").startswith("rdebug-tail:")
        and (int(c.get("psub", 0)) or int(c.get("sub", 0)))
    ]


def test_stop_joins_the_thread_and_leaves_no_subscription(
    fresh_bus: rd.Bus, client: redis.Redis
) -> None:
    tail = Tail(fresh_bus, GUILD).start()
    wait_for(lambda: tail.state == "live", "the subscription")
    assert client.pubsub_numpat() == 1
    thread = tail.thread

    tail.stop()

    assert thread is not None
    assert not thread.is_alive()
    assert tail.state == "stopped"
    assert client.pubsub_numpat() == 0
    wait_for(lambda: not _pubsub_clients(client), "the connection to close")
    tail.stop()  # idempotent
    tail.start()  # and it can start again
    wait_for(lambda: tail.state == "live", "the second subscription")
    tail.close()
    assert client.pubsub_numpat() == 0
    wait_for(lambda: not _tail_clients(client), "every tail connection to close")


def _tail_clients(client: redis.Redis) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = client.client_list()
    return [c for c in listed if c.get("name") == f"rdebug-tail:{GUILD}"]


def test_iteration_yields_shown_messages_until_stopped(
    live_tail: Tail, client: redis.Redis
) -> None:
    members = batch(client, 20)
    got: list[TailMessage] = []

    def consume() -> None:
        got.extend(live_tail)

    consumer = threading.Thread(target=consume)
    consumer.start()
    publish(client, GUILD, members)
    wait_for(lambda: len(got) >= 20, "the iterator")
    live_tail.stop()
    consumer.join(5)

    assert not consumer.is_alive()
    assert {(m.topic, m.id) for m in got} == expected_keys(members)
    assert [m.data["payload"]["n"] for m in got] == list(range(20))


def test_filter_pause_resume_and_bounded_buffer(
    fresh_bus: rd.Bus, client: redis.Redis
) -> None:
    seen: list[int] = []
    tail = Tail(
        fresh_bus,
        GUILD,
        buffer=100,
        where=MessageFilter(query="payload.n >= 50"),
        callback=lambda message: seen.append(message.data["payload"]["n"]),
    ).start()
    wait_for(lambda: tail.state == "live", "the subscription")

    publish(client, GUILD, batch(client, 300))
    wait_for(lambda: tail.counts.received >= 300, "300 deliveries")
    counts = tail.counts
    assert (counts.shown, counts.filtered_out) == (250, 50)
    assert len(tail.messages) == 100
    assert counts.evicted == 150
    assert [m.data["payload"]["n"] for m in tail.messages] == list(range(200, 300))
    wait_for(lambda: len(seen) >= 250, "the callbacks")  # they run after counting
    assert seen == list(range(50, 300))

    tail.pause()
    publish(client, GUILD, batch(client, 10, first=1000))
    wait_for(lambda: tail.counts.received >= 310, "the deliveries while paused")
    assert tail.state == "paused"
    assert tail.counts.shown == 250
    tail.resume()
    assert state_of(tail) == "live"
    assert tail.counts.shown == 260
    assert seen[-10:] == list(range(1000, 1010))
    tail.close()


def test_reconcile_lists_what_is_missing_and_what_is_extra(
    live_tail: Tail, client: redis.Redis
) -> None:
    members = batch(client, 10)
    publish(client, GUILD, members)
    wait_for(lambda: live_tail.counts.received >= 10, "10 deliveries")
    now = server_ms(client)
    stored_only = make_member(
        "orders.in", int(encode_id(4, now, sequence=4000)), now, {}
    )
    published_only = make_member(
        "orders.in", int(encode_id(4, now, sequence=4001)), now, {}
    )

    client.zadd(f"{GUILD}:orders.in", {stored_only: now})
    client.publish(f"{GUILD}:orders.in", published_only)
    wait_for(lambda: live_tail.counts.received >= 11, "the published-only message")
    check = live_tail.reconcile(until=server_ms(client))

    assert not check.ok
    assert check.missing["id"].tolist() == [int(encode_id(4, now, sequence=4000))]
    assert check.extra["id"].tolist() == [int(encode_id(4, now, sequence=4001))]
    assert check.stored == 11
    assert check.received == 11
    assert "MISMATCH" in repr(check)
    assert "missing 1, extra 1" in repr(check)


def test_a_snapshot_bus_cannot_be_tailed(capture: Path) -> None:
    offline = rd.open_snapshot(capture / "keyspace.jsonl")

    with pytest.raises(rd.RdebugError, match="no live traffic to tail"):
        Tail(offline, "orders-pipeline-01")


def test_a_failing_callback_is_logged_and_shown_and_the_tail_goes_on(
    fresh_bus: rd.Bus, client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(message: TailMessage) -> None:
        raise ValueError(f"cannot handle {message.id}")

    tail = Tail(fresh_bus, GUILD, callback=broken).start()
    wait_for(lambda: tail.state == "live", "the subscription")
    with caplog.at_level(logging.ERROR, logger="rdebug_nb.tail"):
        publish(client, GUILD, batch(client, 3))
        wait_for(lambda: tail.counts.callback_errors >= 3, "three callback errors")

    assert "cannot handle" in tail.problem
    assert "cannot handle" in tail.status
    assert sum("raised" in r.getMessage() for r in caplog.records) == 3
    assert tail.state == "live"
    assert len(tail.messages) == 3
    tail.close()


def test_a_fatal_error_in_the_thread_fails_the_tail_visibly(
    fresh_bus: rd.Bus, client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    client.acl_setuser(
        "nopsub",
        enabled=True,
        passwords=["+secret"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-psubscribe"],
    )
    kwargs = client.connection_pool.connection_kwargs
    limited = redis.Redis(
        host=kwargs["host"], port=kwargs["port"], db=1, username="nopsub",
        password="secret",
    )  # fmt: skip
    try:
        with caplog.at_level(logging.ERROR, logger="rdebug_nb.tail"):
            tail = Tail(limited, GUILD).start()
            with pytest.raises(PermissionDenied, match="PSUBSCRIBE"):
                list(tail)
        assert tail.state == "failed"
        assert isinstance(tail.error, PermissionDenied)
        assert "failed" in tail.status
        assert any(r.exc_info for r in caplog.records)
        assert tail.thread is not None
        assert not tail.thread.is_alive()
        tail.close()
    finally:
        limited.close()
        client.acl_deluser("nopsub")


def test_to_frame_is_a_message_frame_of_the_held_deliveries(
    live_tail: Tail, client: redis.Redis
) -> None:
    now = server_ms(client)
    both = int(encode_id(4, now, sequence=7))
    one = make_member("orders.in", both, now, {"order_id": "ORD-1"})
    two = make_member("orders.audit", both, now, {"order_id": "ORD-1"})

    publish(client, GUILD, [("orders.in", one), ("orders.audit", two)])
    wait_for(lambda: live_tail.counts.received >= 2, "both copies")
    frame = live_tail.to_frame()

    assert list(frame.columns) == list(rd.MESSAGE_COLUMNS)
    assert frame["id"].tolist() == [both]
    assert sorted(frame["topics"].iloc[0]) == ["orders.audit", "orders.in"]
    assert len(live_tail.to_deliveries()) == 2


def publish_one_by_one(
    clients: Sequence[Any], guild_id: str, members: Sequence[tuple[str, bytes]]
) -> None:
    """ZADD through the first client, PUBLISH through each client in turn."""
    for n, (topic, member) in enumerate(members):
        key = f"{guild_id}:{topic}"
        clients[0].zadd(key, {member: msgspec.json.decode(member)["timestamp"]})
        clients[n % len(clients)].publish(key, member)


@pytest.mark.redis_server
def test_the_tail_follows_a_cluster_through_a_lost_connection(tmp_path: Path) -> None:
    if not redis_server_available():
        pytest.skip("Debian's redis-server is not installed")
    cluster = RedisClusterProcesses(tmp_path / "cluster")
    try:
        bus = rd.connect(cluster.url, progress=False)
        client: Any = bus.client  # a redis.RedisCluster
        topics = ["orders.in", "orders.done", "state_topic", "heartbeat"]
        members = [
            (topic, member)
            for n, topic in enumerate(topics)
            for _, member in batch(client, 300, topic=topic, first=1000 * n)
        ]
        nodes = {client.get_node_from_key(f"{GUILD}:{t}").name for t in topics}
        tail = Tail(bus, GUILD, buffer=10_000, reconnect_delay=0.5).start()
        wait_for(is_live(tail), "the subscription")
        publishers = [client, *cluster.node_clients()]

        publish_one_by_one(publishers, GUILD, members[:600])
        wait_for(has_received(tail, 600), "the first 600")
        killed = sum(
            c.client_kill_filter(_type="pubsub") for c in cluster.node_clients()
        )
        wait_for(lambda: tail.state == "reconnecting", "the tail to notice")
        publish_one_by_one(publishers, GUILD, members[600:])
        wait_for(has_received(tail, 1200), "all 1,200")

        held = held_keys(tail)
        assert len(nodes) > 1  # the topic keys live on different primaries
        assert killed == 1
        assert len(held) == len(set(held)) == 1200
        assert set(held) == expected_keys(members)
        assert len(tail.gaps) == 1
        assert tail.gaps[0].count > 0
        assert tail.reconcile(until=server_ms(client)).ok
        tail.close()
        bus.close()
    finally:
        cluster.stop()

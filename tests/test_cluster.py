"""Redis Cluster: the same capture in a three-primary cluster and in one server
reads back the same, through the same ``connect``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import redis

import rdebug_nb as rd
from rdebug_nb import discovery
from rdebug_nb.tail import Tail
from tests.clusters import PRIMARIES, RedisClusterProcesses
from tests.members import command, publish, restamped, server_ms, template
from tests.servers import redis_server_available

pytestmark = pytest.mark.redis_server

CAPTURE_KEYS = 1148


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RedisClusterProcesses]:
    if not redis_server_available():
        pytest.skip("Debian's redis-server is not installed")
    processes = RedisClusterProcesses(tmp_path_factory.mktemp("cluster"))
    yield processes
    processes.stop()


@pytest.fixture(scope="module")
def cluster_bus(cluster: RedisClusterProcesses, capture: Path) -> Iterator[rd.Bus]:
    """The whole capture written into the cluster by load_snapshot."""
    bus = rd.connect(cluster.url, progress=False)
    report = bus.load_snapshot(capture / "keyspace.jsonl", expiry="restart", force=True)
    assert report.loaded == CAPTURE_KEYS
    yield bus
    bus.close()


def namespaces(bus: rd.Bus) -> list[str]:
    return sorted(bus.guilds(count_distinct=False)["namespace"])


def some_ids(capture: Path) -> list[tuple[str, int]]:
    """(guild, id) of messages stored under several topics or namespaces."""
    found: dict[int, set[str]] = {}
    with (capture / "keyspace.jsonl").open() as handle:
        for line in handle:
            record = json.loads(line)
            if record["key"].startswith("msg:"):
                namespace, _, mid = record["key"][4:].rpartition(":")
                found.setdefault(int(mid), set()).add(namespace)
    shared = sorted(mid for mid, spaces in found.items() if len(spaces) > 1)
    chosen = shared[:3] + sorted(found)[:: max(1, len(found) // 12)]
    return [(space, mid) for mid in chosen for space in sorted(found[mid])]


def look_up_all(bus: rd.Bus, chosen: list[tuple[str, int]]) -> None:
    for guild, mid in chosen:
        bus.message(guild, mid)


def test_connect_finds_the_cluster_and_its_keys_are_spread(
    cluster: RedisClusterProcesses, cluster_bus: rd.Bus
) -> None:
    per_node = [client.dbsize() for client in cluster.node_clients()]

    assert cluster_bus.cluster is True
    assert isinstance(cluster_bus.client, redis.RedisCluster)
    assert len(per_node) == PRIMARIES
    assert min(per_node) > 0
    assert sum(per_node) == CAPTURE_KEYS


def test_scan_covers_every_primary(
    cluster: RedisClusterProcesses, cluster_bus: rd.Bus
) -> None:
    behind = set()
    for client in cluster.node_clients():
        behind |= {key.decode() for key in client.scan_iter(count=1000)}

    seen = list(discovery.scan_keys(cluster_bus.client))

    assert len(seen) == len(set(seen)) == CAPTURE_KEYS
    assert set(seen) == behind


def test_guild_table_is_the_same_as_on_one_server(
    cluster_bus: rd.Bus, capture_bus: rd.Bus
) -> None:
    pd.testing.assert_frame_equal(cluster_bus.guilds(), capture_bus.guilds())


def test_topic_tables_are_the_same(cluster_bus: rd.Bus, capture_bus: rd.Bus) -> None:
    for guild in namespaces(capture_bus):
        pd.testing.assert_frame_equal(
            cluster_bus.topics(guild), capture_bus.topics(guild), obj=guild
        )


def test_message_and_delivery_frames_are_the_same(
    cluster_bus: rd.Bus, capture_bus: rd.Bus
) -> None:
    for guild in namespaces(capture_bus):
        pd.testing.assert_frame_equal(
            cluster_bus.messages(guild), capture_bus.messages(guild), obj=guild
        )
        pd.testing.assert_frame_equal(
            cluster_bus.deliveries(guild), capture_bus.deliveries(guild), obj=guild
        )


def test_windowed_and_cut_loads_are_the_same(
    cluster_bus: rd.Bus, capture_bus: rd.Bus
) -> None:
    guild = "orders-pipeline-01"
    whole = capture_bus.messages(guild)
    since, until = whole["timestamp"].quantile([0.25, 0.5]).tolist()

    loads = []
    for bus in (cluster_bus, capture_bus):
        with pytest.warns(rd.TruncatedWarning):
            cut = bus.messages(guild, since=since, until=until, limit=20)
        windowed = bus.deliveries(guild, topics=["state_topic"], since=since)
        loads.append((cut, windowed))

    assert len(loads[0][0]) == 20
    pd.testing.assert_frame_equal(loads[0][0], loads[1][0])
    pd.testing.assert_frame_equal(loads[0][1], loads[1][1])


def test_lookups_are_the_same(
    cluster_bus: rd.Bus, capture_bus: rd.Bus, capture: Path
) -> None:
    chosen = some_ids(capture)

    for guild, mid in chosen:
        assert cluster_bus.message(guild, mid) == capture_bus.message(guild, mid)
    with pytest.raises(rd.MessageNotFound):
        cluster_bus.message(chosen[0][0], chosen[0][1] + 1)


def test_a_snapshot_saved_from_the_cluster_equals_one_from_one_server(
    cluster_bus: rd.Bus, capture_bus: rd.Bus, tmp_path: Path
) -> None:
    now = 1_796_301_100_000
    cluster_bus.save_snapshot(tmp_path / "cluster.jsonl", now_ms=now)
    capture_bus.save_snapshot(tmp_path / "single.jsonl", now_ms=now)

    from_cluster = (tmp_path / "cluster.jsonl").read_bytes().splitlines()
    from_single = (tmp_path / "single.jsonl").read_bytes().splitlines()

    assert len(from_cluster) == CAPTURE_KEYS
    assert [without_expiry(line) for line in from_cluster] == [
        without_expiry(line) for line in from_single
    ]


def test_a_snapshot_of_the_cluster_leaves_other_types_out_with_a_warning(
    cluster_bus: rd.Bus, tmp_path: Path
) -> None:
    cluster_bus.client.rpush("a-list-key", "x")
    try:
        with pytest.warns(rd.RdebugWarning, match="a-list-key"):
            written = cluster_bus.save_snapshot(tmp_path / "s.jsonl", now_ms=1)
    finally:
        cluster_bus.client.delete("a-list-key")

    assert written == CAPTURE_KEYS


def without_expiry(line: bytes) -> dict[str, object]:
    """A snapshot line without its expiry, which differs by when each was loaded."""
    body: dict[str, object] = json.loads(line)
    body.pop("ttl_ms")
    body.pop("expire_at_ms")
    return body


def test_cluster_false_reads_one_node_and_a_redirect_names_the_fix(
    cluster: RedisClusterProcesses, cluster_bus: rd.Bus, capture: Path
) -> None:
    first_node = cluster.node_clients()[0].dbsize()

    with rd.connect(cluster.url, cluster=False, retries=0) as plain:
        assert plain.cluster is False
        shown = plain.guilds(count_distinct=False)["deliveries"].sum()
        with pytest.raises(rd.ConnectionFailed, match=r"cluster=True") as caught:
            look_up_all(plain, some_ids(capture))
        assert len(list(discovery.scan_keys(plain.client))) == first_node

    assert shown < cluster_bus.guilds(count_distinct=False)["deliveries"].sum()
    assert "redirected" in str(caught.value)


def test_the_cluster_is_found_when_hello_is_refused(
    cluster: RedisClusterProcesses, cluster_bus: rd.Bus
) -> None:
    rules = ["on", ">pw", "~*", "&*", "-@all", "+@read", "+@connection", "-hello"]
    for client in cluster.node_clients():
        command(client, "ACL", "SETUSER", "nohello", *rules, "+cluster|slots")
    url = cluster.url.replace("redis://", "redis://nohello:pw@")

    with rd.connect(url, retries=0) as bus:
        assert bus.cluster is True
        guilds = bus.guilds()

    pd.testing.assert_frame_equal(guilds, cluster_bus.guilds())


def test_a_database_number_other_than_0_is_refused_with_the_reason(
    cluster: RedisClusterProcesses,
) -> None:
    with pytest.raises(rd.ConnectionFailed, match="cluster"):
        rd.connect(cluster.url.replace("/0", "/3"), cluster=True, retries=0)


def test_the_tail_receives_what_is_published_on_the_cluster(
    cluster_bus: rd.Bus, capture: Path
) -> None:
    client = cluster_bus.client
    with Tail(cluster_bus, "live-guild") as tail:
        now = server_ms(client)
        bodies = [restamped(template(capture), "t", now, sequence=n) for n in range(20)]
        for body in bodies:
            publish(client, "live-guild", body)
        deadline = time.monotonic() + 30
        while tail.counts.received < len(bodies) and time.monotonic() < deadline:
            time.sleep(0.05)

    assert sorted(m.id for m in tail.messages) == sorted(b["id"] for b in bodies)
    assert tail.reconcile().ok

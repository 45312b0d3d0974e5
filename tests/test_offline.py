"""Offline analysis: a Bus over a snapshot or an export answers like the live server."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pandas as pd
import pytest

import rdebug_nb as rd
from rdebug_nb import export
from rdebug_nb._memory import MemoryClient, snapshot_time_ms
from rdebug_nb.errors import (
    MessageNotFound,
    RdebugWarning,
    SkippedEntriesWarning,
    SnapshotError,
    TruncatedWarning,
    WriteRefused,
)
from rdebug_nb.offline import open_snapshot
from rdebug_nb.snapshot import KeyRecord, read_snapshot
from tests.test_export import GUILDS, NOW, load, without_raw


@pytest.fixture(scope="module")
def offline(capture: Path) -> Iterator[rd.Bus]:
    bus = open_snapshot(capture / "keyspace.jsonl", progress=False)
    yield bus
    bus.close()


@pytest.fixture(scope="module")
def records(capture: Path) -> list[KeyRecord]:
    return [
        r for r in read_snapshot(capture / "keyspace.jsonl") if isinstance(r, KeyRecord)
    ]


def test_guild_table_matches_live(capture_bus: rd.Bus, offline: rd.Bus) -> None:
    pd.testing.assert_frame_equal(offline.guilds(), capture_bus.guilds())
    pd.testing.assert_frame_equal(
        offline.guilds(count_distinct=False), capture_bus.guilds(count_distinct=False)
    )
    assert offline.url.startswith("snapshot:")


@pytest.mark.parametrize("guild", GUILDS)
def test_frames_match_live(capture_bus: rd.Bus, offline: rd.Bus, guild: str) -> None:
    pd.testing.assert_frame_equal(offline.topics(guild), capture_bus.topics(guild))
    pd.testing.assert_frame_equal(offline.messages(guild), capture_bus.messages(guild))
    pd.testing.assert_frame_equal(
        offline.deliveries(guild), capture_bus.deliveries(guild)
    )


@pytest.mark.parametrize("guild", GUILDS)
def test_windows_and_limits_match_live(
    capture_bus: rd.Bus, offline: rd.Bus, guild: str
) -> None:
    stamps = capture_bus.messages(guild)["timestamp_ms"]
    since, until = int(stamps.quantile(0.25)), int(stamps.quantile(0.75))
    topics = capture_bus.topics(guild)["topic"].tolist()[:2]
    windows: list[dict[str, Any]] = [
        {"since": since, "until": until},
        {"since": pd.Timestamp(since, unit="ms")},
        {"until": until, "topics": topics},
    ]
    for window in windows:
        pd.testing.assert_frame_equal(
            offline.messages(guild, **window), capture_bus.messages(guild, **window)
        )
        pd.testing.assert_frame_equal(
            offline.deliveries(guild, **window), capture_bus.deliveries(guild, **window)
        )
    limit = max(1, len(stamps) // 3)
    with pytest.warns(TruncatedWarning):
        live = capture_bus.messages(guild, since=since, limit=limit)
    with pytest.warns(TruncatedWarning):
        here = offline.messages(guild, since=since, limit=limit)
    pd.testing.assert_frame_equal(here, live)


@pytest.mark.parametrize("guild", GUILDS)
def test_lookups_match_live(capture_bus: rd.Bus, offline: rd.Bus, guild: str) -> None:
    ids = capture_bus.messages(guild)["id"].tolist()
    for message_id in ids:
        assert offline.message(guild, message_id) == capture_bus.message(
            guild, message_id
        )
    with pytest.raises(MessageNotFound):
        offline.message(guild, rd.encode_id(4, 1796300977681, machine_id=99))


def test_keys_expired_since_are_kept(offline: rd.Bus, records: list[KeyRecord]) -> None:
    """The clock stands at the snapshot's time; every key keeps its expiry."""
    client = offline.client
    now = snapshot_time_ms(records)
    assert client.time() == (now // 1000, now % 1000 * 1000)
    expiring = [r for r in records if r.expire_at_ms is not None]
    assert expiring
    for record in expiring:
        assert client.pexpiretime(record.key) == record.expire_at_ms
        assert client.pttl(record.key) == record.expire_at_ms - now
        assert client.pttl(record.key) > 0
    echo_keys = [r.key for r in expiring if r.key.startswith("msg:acme:support:echo:")]
    assert (
        len(echo_keys)
        == offline.guilds()
        .set_index("namespace")
        .loc["acme:support:echo", "message_keys"]
    )


def _calls(
    records: list[KeyRecord],
) -> Iterator[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    zsets = {r.key: r.value for r in records if isinstance(r.value, list)}
    strings = [r.key for r in records if r.type == "string"][:40]
    hashes = [r.key for r in records if r.type == "hash"]
    for key, pairs in zsets.items():
        scores = [score for _, score in pairs]
        middle = repr(int(scores[len(scores) // 2]))
        yield "zcard", (key,), {}
        yield "zrange", (key, 0, 0), {"withscores": True}
        yield "zrange", (key, -1, -1), {"withscores": True}
        yield "zrange", (key, -3, 100), {}
        yield "zrangebyscore", (key, "-inf", "+inf"), {"start": 1, "num": 2}
        yield "zrangebyscore", (key, middle, "+inf"), {"withscores": True}
        yield "zrangebyscore", (key, f"({middle}", "+inf"), {}
        yield "zrangebyscore", (key, int(scores[0]), int(scores[0])), {}
        yield "zrevrangebyscore", (key, "+inf", middle), {"start": 0, "num": 3}
        yield "zrevrangebyscore", (key, f"({middle}", "-inf"), {"start": 2, "num": 5}
        yield "zcount", (key, "-inf", middle), {}
        yield "zcount", (key, f"({middle}", "+inf"), {}
        yield "type", (key,), {}
    for key in strings:
        yield "get", (key,), {}
        yield "type", (key,), {}
    for key in hashes:
        yield "hgetall", (key,), {}
    yield "get", ("no-such-key",), {}
    yield "zrange", ("no-such-key", 0, -1), {}
    yield "exists", (next(iter(zsets)), strings[0], "no-such-key"), {}
    yield "type", ("no-such-key",), {}


PATTERNS = (
    "*",
    "msg:*",
    "eo:pos:*",
    "managed_state:*",
    "acme:support:echo:*",
    "*:default_t?pic",
    "*[Jj]d8*",
    "*[^a-z]heartbeat",
    "orders-pipeline-01:orders.[a-p]*",
    r"acme\:support\:echo:*",
    r"*\[*",
)


def test_client_answers_like_the_server(
    capture_bus: rd.Bus, offline: rd.Bus, records: list[KeyRecord]
) -> None:
    live, here = capture_bus.client, offline.client
    for name, args, kwargs in _calls(records):
        expected = getattr(live, name)(*args, **kwargs)
        assert getattr(here, name)(*args, **kwargs) == expected, (name, args, kwargs)
    pipe = here.pipeline(transaction=False)
    live_pipe = live.pipeline(transaction=False)
    for name, args, kwargs in list(_calls(records))[:60]:
        getattr(pipe, name)(*args, **kwargs)
        getattr(live_pipe, name)(*args, **kwargs)
    assert pipe.execute() == live_pipe.execute()


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("kind", [None, "zset", "string", "hash"])
def test_scan_matches_like_the_server(
    capture_bus: rd.Bus, offline: rd.Bus, pattern: str, kind: str | None
) -> None:
    live = set(capture_bus.client.scan_iter(match=pattern, count=1000, _type=kind))
    assert set(offline.client.scan_iter(match=pattern, count=1000, _type=kind)) == live


def test_writes_are_refused(offline: rd.Bus, capture: Path) -> None:
    with pytest.raises(WriteRefused, match="read-only"):
        offline.load_snapshot(capture / "keyspace.jsonl", replace=True, force=True)
    with pytest.raises(WriteRefused, match="SET refused"):
        offline.client.set("x", b"1")
    with pytest.raises(WriteRefused, match="ZADD refused"):
        offline.client.pipeline(transaction=False).zadd("k", {b"m": 1.0})
    with pytest.raises(WriteRefused):
        offline.client.flushdb()
    with pytest.raises(AttributeError, match="read commands"):
        offline.client.keys("*")
    assert offline.guilds()["deliveries"].sum() == 1058


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize("kind", ["messages", "deliveries"])
def test_exports_open_offline(
    capture_bus: rd.Bus, tmp_path: Path, fmt: str, kind: str
) -> None:
    guild = "orders-pipeline-01"
    path = tmp_path / f"orders.{fmt}"
    getattr(export, f"to_{fmt}")(load(capture_bus, guild, kind), path, now=NOW)
    bus = open_snapshot(path)
    assert bus.guilds()["namespace"].tolist() == [guild]
    pd.testing.assert_frame_equal(bus.topics(guild), capture_bus.topics(guild))
    pd.testing.assert_frame_equal(bus.messages(guild), capture_bus.messages(guild))
    pd.testing.assert_frame_equal(bus.deliveries(guild), capture_bus.deliveries(guild))
    for message_id in capture_bus.messages(guild)["id"].tolist()[::5]:
        found = bus.message(guild, message_id)
        assert found.copies == capture_bus.message(guild, message_id).copies
        assert not found.has_message_key


def test_export_under_another_guild(capture_bus: rd.Bus, tmp_path: Path) -> None:
    frame = load(capture_bus, "faulty-workers", "messages")
    path = tmp_path / "faulty.parquet"
    export.to_parquet(frame, path, now=NOW)
    bus = open_snapshot(path, guild_id="faulty-copy")
    assert bus.guilds()["namespace"].tolist() == ["faulty-copy"]
    copy = bus.messages("faulty-copy")
    pd.testing.assert_frame_equal(
        without_raw(copy).drop(columns="guild_id"),
        without_raw(frame).drop(columns="guild_id"),
    )


def test_jsonl_without_sidecar(capture_bus: rd.Bus, tmp_path: Path) -> None:
    frame = load(capture_bus, "acme:support:echo", "deliveries")
    path = tmp_path / "echo.jsonl"
    path.write_bytes(b"".join(raw + b"\n" for raw in frame["raw"]))
    with pytest.raises(SnapshotError, match="guild_id="):
        open_snapshot(path)
    bus = open_snapshot(path, guild_id="acme:support:echo")
    pd.testing.assert_frame_equal(
        bus.messages("acme:support:echo"), capture_bus.messages("acme:support:echo")
    )


def test_saved_guild_snapshot_opens_offline(
    capture_bus: rd.Bus, tmp_path: Path
) -> None:
    path = tmp_path / "g2g.jsonl"
    guilds = ["Qm3sYv7TzA9cXe2RkWpN5d", "acme-org"]
    capture_bus.save_snapshot(path, guilds, now_ms=1796301031186)
    bus = open_snapshot(path)
    assert bus.guilds()["namespace"].tolist() == guilds
    for guild in guilds:
        pd.testing.assert_frame_equal(bus.messages(guild), capture_bus.messages(guild))


def test_bad_snapshot_lines_are_skipped(capture: Path, tmp_path: Path) -> None:
    lines = (capture / "keyspace.jsonl").read_bytes().splitlines()
    path = tmp_path / "damaged.jsonl"
    path.write_bytes(b"\n".join([*lines[:10], b'{"key": 1}', *lines[10:]]) + b"\n")
    with pytest.warns(SkippedEntriesWarning, match="skipped 1 lines"):
        bus = open_snapshot(path)
    assert len(cast(MemoryClient, bus.client).records) == len(lines)


def test_memory_client_defaults(records: list[KeyRecord]) -> None:
    zsets_only = [r for r in records if r.type == "zset"]
    newest = max(score for r in zsets_only for _, score in r.value)  # type: ignore[misc]
    assert MemoryClient(zsets_only).now_ms == int(newest)
    assert MemoryClient([]).now_ms == 0
    client = MemoryClient(records, now_ms=0)
    assert client.time() == (0, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RdebugWarning)
        assert repr(client) == f"<MemoryClient {len(records)} keys>"


def test_files_that_are_not_snapshots_or_exports_are_refused(
    capture_bus: rd.Bus, tmp_path: Path
) -> None:
    rdb = tmp_path / "dump.rdb"
    rdb.write_bytes(b"REDIS0011\xfa\tredis-ver")
    text = tmp_path / "notes.md"
    text.write_text("# not a snapshot\n")
    records = tmp_path / "records.jsonl"
    records.write_text('{"key": "g:t", "type": "zset", "value": "oops"}\n[1, 2]\n')
    csv = tmp_path / "hunt.csv"
    rd.to_csv(capture_bus.messages("acme:support:echo"), csv)

    cases = {
        rdb: "is a Redis RDB file",
        text: "its first line is not JSON",
        records: "no line of",
        csv: "is a csv export, not JSONL: CSV keeps only the flat columns",
    }
    for path, said in cases.items():
        with pytest.raises(rd.SnapshotError, match=re.escape(said)):
            rd.open_snapshot(path)
    with pytest.raises(rd.SnapshotError, match="is a csv export"):
        rd.read_jsonl(csv)

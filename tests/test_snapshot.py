"""Snapshots: the keyspace JSONL format into a real server and back, byte for byte;
and the capture's RDB file loaded by Debian's redis-server."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

import rdebug_nb as rd
from rdebug_nb.snapshot import KeyRecord, SnapshotSkip, read_snapshot
from tests.servers import RedisServerProcess, redis_server_available

TEN_YEARS_MS = 315_360_000_000


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def without_ttl(raw: list[bytes]) -> list[dict[str, object]]:
    """Lines as objects minus ``ttl_ms``, which counts down while a dump runs."""
    return [
        {k: v for k, v in json.loads(line).items() if k != "ttl_ms"} for line in raw
    ]


def far_future_copy(source: Path, target: Path) -> Path:
    """The capture with its one-hour expiries pushed ten years out."""
    out = []
    for line in lines(source):
        body = json.loads(line)
        if body["expire_at_ms"] is not None and body["ttl_ms"] < TEN_YEARS_MS // 2:
            body["expire_at_ms"] += TEN_YEARS_MS
            body["ttl_ms"] += TEN_YEARS_MS
        out.append(json.dumps(body, ensure_ascii=False).encode() + b"\n")
    target.write_bytes(b"".join(out))
    return target


def test_the_capture_round_trips_exactly(
    fresh_bus: rd.Bus, capture: Path, tmp_path: Path
) -> None:
    source = far_future_copy(capture / "keyspace.jsonl", tmp_path / "in.jsonl")
    report = fresh_bus.load_snapshot(source, force=True)

    written = fresh_bus.save_snapshot(tmp_path / "out.jsonl")

    assert report.loaded == written == 1148
    saved = lines(tmp_path / "out.jsonl")
    assert without_ttl(saved) == without_ttl(lines(source))
    unexpiring = [line for line in lines(source) if b'"ttl_ms": -1,' in line]
    assert [line for line in saved if b'"ttl_ms": -1,' in line] == unexpiring


def test_a_saved_snapshot_round_trips_byte_for_byte(
    fresh_bus: rd.Bus, capture: Path, tmp_path: Path
) -> None:
    fresh_bus.load_snapshot(
        far_future_copy(capture / "keyspace.jsonl", tmp_path / "in.jsonl"), force=True
    )
    fresh_bus.save_snapshot(tmp_path / "first.jsonl", now_ms=1796301031000)
    fresh_bus.client.flushdb()

    fresh_bus.load_snapshot(tmp_path / "first.jsonl", force=True)
    fresh_bus.save_snapshot(tmp_path / "second.jsonl", now_ms=1796301031000)

    first = (tmp_path / "first.jsonl").read_bytes()
    assert len(first.splitlines()) == 1148
    assert (tmp_path / "second.jsonl").read_bytes() == first


def test_one_guild_round_trips_as_its_own_lines(
    fresh_bus: rd.Bus, capture: Path, tmp_path: Path
) -> None:
    source = far_future_copy(capture / "keyspace.jsonl", tmp_path / "in.jsonl")
    fresh_bus.load_snapshot(source, force=True)
    guild = "acme:support:echo"
    prefixes = (f"{guild}:", f"msg:{guild}:", f"eo:pos:{guild}$")
    expected = [
        line for line in lines(source) if json.loads(line)["key"].startswith(prefixes)
    ]

    fresh_bus.save_snapshot(tmp_path / "g.jsonl", [guild])

    assert len(expected) == 4 + 24 + 6
    assert without_ttl(lines(tmp_path / "g.jsonl")) == without_ttl(expected)


def test_keep_expiry_drops_keys_already_expired(
    fresh_bus: rd.Bus, tmp_path: Path
) -> None:
    now = int(time.time() * 1000)
    path = tmp_path / "s.jsonl"
    rows = [
        {
            "key": "msg:g:1",
            "type": "string",
            "ttl_ms": 5,
            "expire_at_ms": now - 60_000,
            "value": "a",
        },
        {
            "key": "msg:g:2",
            "type": "string",
            "ttl_ms": 5,
            "expire_at_ms": now + 600_000,
            "value": "b",
        },
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))

    report = fresh_bus.load_snapshot(path, force=True)

    assert report.expired == ["msg:g:1"]
    assert report.loaded == 1
    assert fresh_bus.client.exists("msg:g:1") == 0
    assert 0 < fresh_bus.client.pttl("msg:g:2") <= 600_000


def test_bad_snapshot_lines_are_counted_not_fatal(
    fresh_bus: rd.Bus, tmp_path: Path
) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text(
        '{"key": "a", "type": "string", "ttl_ms": -1, "expire_at_ms": null, "value": "x"}\n'
        "not json\n"
        '{"key": "b", "type": "list", "ttl_ms": -1, "expire_at_ms": null, "value": []}\n'
        '{"key": "c", "type": "zset", "ttl_ms": -1, "expire_at_ms": null, "value": [["m", "x"]]}\n'
    )

    with pytest.warns(rd.SkippedEntriesWarning, match="skipped 3 lines"):
        report = fresh_bus.load_snapshot(path, force=True)

    assert report.loaded == 1
    assert [(s.line, s.key) for s in report.skips] == [(2, None), (3, "b"), (4, "c")]
    assert all(isinstance(s, SnapshotSkip) for s in report.skips)


def test_existing_keys_are_left_alone_unless_replaced(
    fresh_bus: rd.Bus, tmp_path: Path
) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text(
        '{"key": "a", "type": "string", "ttl_ms": -1, "expire_at_ms": null, "value": "new"}\n'
    )
    fresh_bus.client.set("a", "old")

    kept = fresh_bus.load_snapshot(path, force=True)
    assert kept.existing == ["a"]
    assert fresh_bus.client.get("a") == b"old"

    replaced = fresh_bus.load_snapshot(path, replace=True, force=True)
    assert replaced.loaded == 1
    assert fresh_bus.client.get("a") == b"new"


def test_binary_values_survive_as_base64(fresh_bus: rd.Bus, tmp_path: Path) -> None:
    fresh_bus.client.set("bin", b"\xff\x00ok")
    fresh_bus.client.zadd("z", {b"\xfe": 1.5})

    fresh_bus.save_snapshot(tmp_path / "b.jsonl", now_ms=0)
    records = [
        r for r in read_snapshot(tmp_path / "b.jsonl") if isinstance(r, KeyRecord)
    ]

    assert {r.key: r.value for r in records} == {
        "bin": b"\xff\x00ok",
        "z": [(b"\xfe", 1.5)],
    }


def test_debian_redis_server_loads_the_rdb_with_the_same_counts(
    capture: Path, tmp_path: Path
) -> None:
    if not redis_server_available():
        pytest.skip("Debian's redis-server is not installed")
    shutil.copy(capture / "dump.rdb", tmp_path / "dump.rdb")
    started = int(time.time() * 1000)
    server = RedisServerProcess(tmp_path, "--dbfilename", "dump.rdb")
    loaded = int(time.time() * 1000)
    try:
        with rd.connect(server.url, progress=False) as bus:
            guilds = bus.guilds()
    finally:
        server.stop()

    expiries = [
        json.loads(line)["expire_at_ms"] for line in lines(capture / "keyspace.jsonl")
    ]
    alive_at_start = sum(1 for e in expiries if e is not None and e > started)
    alive_at_end = sum(1 for e in expiries if e is not None and e > loaded)
    assert guilds["topic_keys"].sum() == 70
    assert guilds["deliveries"].sum() == 1058
    assert guilds["messages"].sum() == 952
    assert guilds["positions"].sum() == 121
    assert alive_at_end <= guilds["message_keys"].sum() <= alive_at_start


def test_an_rdb_file_is_refused_with_what_to_do(
    fresh_bus: rd.Bus, capture: Path
) -> None:
    with pytest.raises(rd.SnapshotError, match=r"RDB file.*start redis-server"):
        fresh_bus.load_snapshot(capture / "dump.rdb", force=True)

    assert fresh_bus.client.dbsize() == 0


def test_the_demo_guild_is_not_written_to_a_server_not_marked_writable(
    fresh_bus: rd.Bus,
) -> None:
    with pytest.raises(rd.WriteRefused, match="writable=True"):
        fresh_bus.load_demo()

    assert fresh_bus.client.dbsize() == 0
    assert fresh_bus.load_demo(force=True).loaded > 100

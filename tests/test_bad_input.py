"""Bad stored entries are skipped, counted and shown; nothing else changes."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import cast

import pandas as pd
import pytest

import rdebug_nb as rd
from rdebug_nb.snapshot import KeyRecord, read_snapshot

GUILD = "acme:support:echo"


def load_guild(bus: rd.Bus, capture: Path) -> None:
    """Write the capture's colon-named guild (its topic keys and msg: keys)."""
    records = [
        item
        for item in read_snapshot(capture / "keyspace.jsonl")
        if isinstance(item, KeyRecord) and GUILD in item.key
    ]
    pipe = bus.client.pipeline()
    for record in records:
        if record.type == "zset":
            pipe.zadd(record.key, dict(record.value))  # type: ignore[arg-type]
        elif record.type == "string":
            pipe.set(record.key, record.value)  # type: ignore[arg-type]
    pipe.execute()


def a_member(bus: rd.Bus) -> dict[str, object]:
    raw = cast("list[bytes]", bus.client.zrange(f"{GUILD}:default_topic", 0, 0))[0]
    body: dict[str, object] = json.loads(raw)
    return body


def add(bus: rd.Bus, topic: str, member: bytes, score: float) -> None:
    bus.client.zadd(f"{GUILD}:{topic}", {member: score})


def bad_members(good: dict[str, object]) -> dict[str, bytes]:
    missing = {k: v for k, v in good.items() if k != "format"}
    negative = {**good, "id": -5}
    floated = json.dumps(good).replace(str(good["id"]), f"{good['id']}.0", 1)
    too_big = {**good, "id": 1 << 64}
    return {
        "not JSON": b"not json {",
        "truncated": json.dumps(good).encode()[:100],
        "JSON that is not a message": b'{"hello": 1}',
        "missing field": json.dumps(missing).encode(),
        "negative id": json.dumps(negative).encode(),
        "float id": floated.encode(),
        "65-bit id": json.dumps(too_big).encode(),
        "invalid UTF-8": b'{"sender": "\xff\xfe"}',
    }


def test_each_bad_member_is_skipped_and_counted(
    fresh_bus: rd.Bus, capture: Path
) -> None:
    load_guild(fresh_bus, capture)
    before = fresh_bus.messages(GUILD)
    bad = bad_members(a_member(fresh_bus))
    for n, member in enumerate(bad.values()):
        add(fresh_bus, "default_topic", member, 1796300982838.0 + n)

    with pytest.warns(rd.SkippedEntriesWarning, match=f"skipped {len(bad)} ") as caught:
        after = fresh_bus.messages(GUILD)

    assert len(caught) == 1
    skipped = rd.skips(after)
    assert len(skipped) == len(bad)
    assert set(skipped["key"]) == {f"{GUILD}:default_topic"}
    assert skipped["reason"].str.len().min() > 10
    pd.testing.assert_frame_equal(
        after.drop(columns=["payload"]), before.drop(columns=["payload"])
    )
    assert after["payload"].tolist() == before["payload"].tolist()


def test_a_topic_key_with_only_bad_members_is_still_found(
    fresh_bus: rd.Bus, capture: Path
) -> None:
    load_guild(fresh_bus, capture)
    add(fresh_bus, "junk", b"garbage", 1.0)

    topics = fresh_bus.topics(GUILD)
    with pytest.warns(rd.SkippedEntriesWarning, match="skipped 1 "):
        messages = fresh_bus.messages(GUILD)

    assert "junk" in topics["topic"].tolist()
    assert len(messages) == 24


def test_a_key_of_another_type_under_a_guild_prefix_is_a_counted_skip(
    fresh_bus: rd.Bus, capture: Path
) -> None:
    load_guild(fresh_bus, capture)
    fresh_bus.client.set(f"{GUILD}:rogue", "hello")
    fresh_bus.client.hset(f"{GUILD}:rogue_hash", "a", "b")

    with pytest.warns(rd.SkippedEntriesWarning, match="skipped 2 "):
        guilds = fresh_bus.guilds()

    skipped = {skip.key: skip.reason for skip in guilds.attrs["skips"]}
    assert set(skipped) == {f"{GUILD}:rogue", f"{GUILD}:rogue_hash"}
    assert "string" in skipped[f"{GUILD}:rogue"]
    assert guilds.set_index("namespace").loc[GUILD, "deliveries"] == 24


def test_a_skip_shows_the_key_and_an_excerpt(fresh_bus: rd.Bus, capture: Path) -> None:
    load_guild(fresh_bus, capture)
    add(fresh_bus, "heartbeat", b"<script>alert(1)</script>", 5.0)

    with pytest.warns(rd.SkippedEntriesWarning, match=f"{GUILD}:heartbeat"):
        frame = fresh_bus.deliveries(GUILD)

    assert rd.skips(frame)["excerpt"].tolist() == ["<script>alert(1)</script>"]
    assert len(frame) == 24


# -- names and files that do not exist ------------------------------------------


def test_backlog_of_an_unknown_guild_says_so(capture_bus: rd.Bus) -> None:
    with pytest.raises(rd.GuildNotFound, match="'nope'"):
        capture_bus.backlog("nope")


def test_saving_an_unknown_guild_writes_no_file(
    capture_bus: rd.Bus, tmp_path: Path
) -> None:
    path = tmp_path / "snap.jsonl"

    with pytest.raises(rd.GuildNotFound, match=r"\['nope'\]"):
        capture_bus.save_snapshot(path, guilds=["orders-pipeline-01", "nope"])

    assert not path.exists()


def test_reading_a_file_that_is_not_parquet_says_so(tmp_path: Path) -> None:
    path = tmp_path / "hunt.parquet"
    path.write_text('{"not": "parquet"}\n')

    with pytest.raises(rd.SnapshotError, match="is not a Parquet file"):
        rd.read_parquet(path)
    with pytest.raises(rd.SnapshotError, match="cannot read"):
        rd.read_parquet(tmp_path / "missing.parquet")


# -- times, options and servers that are not what they look like -----------------


def test_unix_seconds_are_refused_with_the_milliseconds_to_pass(
    capture_bus: rd.Bus,
) -> None:
    with pytest.raises(ValueError, match="1796301012000 or a datetime"):
        capture_bus.messages("orders-pipeline-01", since=1796301012)
    with pytest.raises(ValueError, match="looks like Unix seconds"):
        capture_bus.deliveries("orders-pipeline-01", until=1796301012.6)


def test_a_window_that_ends_before_it_starts_is_refused(capture_bus: rd.Bus) -> None:
    with pytest.raises(ValueError, match="is later than until"):
        capture_bus.messages(
            "orders-pipeline-01", since="2026-12-03 13:00", until="2026-12-03 12:00"
        )


def test_an_unknown_expiry_writes_nothing(fresh_bus: rd.Bus, capture: Path) -> None:
    with pytest.raises(ValueError, match="keep, restart, persist, not 'bogus'"):
        fresh_bus.load_snapshot(capture / "keyspace.jsonl", expiry="bogus", force=True)  # type: ignore[arg-type]

    assert fresh_bus.client.dbsize() == 0


def test_one_guild_may_be_named_without_a_list(
    capture_bus: rd.Bus, tmp_path: Path
) -> None:
    one, listed = tmp_path / "one.jsonl", tmp_path / "listed.jsonl"

    count = capture_bus.save_snapshot(one, guilds="orders-pipeline-01", now_ms=1)
    capture_bus.save_snapshot(listed, guilds=["orders-pipeline-01"], now_ms=1)

    assert count > 29
    assert one.read_bytes() == listed.read_bytes()


def test_a_server_that_is_not_redis_is_a_connection_failure() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def answer_like_a_web_server() -> None:
        conn, _ = listener.accept()
        conn.recv(1024)
        conn.sendall(b"<html>not redis</html>\r\n")
        conn.close()

    thread = threading.Thread(target=answer_like_a_web_server, daemon=True)
    thread.start()
    try:
        with pytest.raises(rd.ConnectionFailed, match="not the Redis protocol"):
            rd.connect(f"redis://127.0.0.1:{port}/0", retries=0)
    finally:
        listener.close()
        thread.join(5)


def test_a_snapshot_is_not_written_to_a_server_not_marked_writable(
    server_url: str, capture: Path
) -> None:
    with rd.connect(server_url.replace("/0", "/2"), progress=False) as bus:
        bus.client.flushdb()

        with pytest.raises(rd.WriteRefused, match="connect\\(url, writable=True\\)"):
            bus.load_snapshot(capture / "keyspace.jsonl")

        assert bus.client.dbsize() == 0


def test_the_report_command_reads_one_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rdebug_nb.cli import main

    out = tmp_path / "r.html"
    args = ["report", "--redis-url", "redis://h/0", "--snapshot", "s.jsonl"]

    assert main([*args, "--out", str(out)]) == 2
    assert "give --redis-url or --snapshot, not both" in capsys.readouterr().err
    assert not out.exists()


def test_loading_an_export_as_a_snapshot_points_to_open_snapshot(
    capture_bus: rd.Bus, fresh_bus: rd.Bus, tmp_path: Path
) -> None:
    path = tmp_path / "echo.jsonl"
    rd.to_jsonl(capture_bus.messages("acme:support:echo"), path)

    with pytest.raises(rd.SnapshotError, match=r"rd.open_snapshot\(path\)"):
        fresh_bus.load_snapshot(path, force=True)

    assert fresh_bus.client.dbsize() == 0

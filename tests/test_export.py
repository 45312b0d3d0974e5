"""Exports of the real capture: JSONL, Parquet and CSV round trips, metadata."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path
from typing import Any, cast

import msgspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import rdebug_nb as rd
from rdebug_nb import export
from rdebug_nb.errors import RdebugWarning, SnapshotError
from rdebug_nb.snapshot import write_snapshot

# The namespaces of the capture, from its README.
GUILDS = (
    "Ht4PqZr8wKd2VnXy6sTbLm",
    "Jd8LbR2hFv6KwZ4yMq9TxC",
    "Qm3sYv7TzA9cXe2RkWpN5d",
    "acme-org",
    "acme:support:echo",
    "faulty-workers",
    "orders-pipeline-01",
)
KINDS = ("messages", "deliveries")
NOW = pd.Timestamp("2026-12-04T09:30:00", tz="UTC")


def stored_members(bus: rd.Bus, guild: str) -> dict[tuple[str, int], bytes]:
    """Every member of a guild's topic keys, read straight from the server."""
    members: dict[tuple[str, int], bytes] = {}
    for key in bus.topics(guild)["key"]:
        for member in zmembers(bus, key):
            members[(key, msgspec.json.decode(member)["id"])] = member
    return members


def zmembers(bus: rd.Bus, key: str) -> list[bytes]:
    """All members of a sorted set, in the server's order."""
    return cast("list[bytes]", bus.client.zrange(key, 0, -1))


def load(bus: rd.Bus, guild: str, kind: str) -> pd.DataFrame:
    """A frame as the Bus gives it, its ``raw`` column checked against the server."""
    deliveries = bus.deliveries(guild)
    members = stored_members(bus, guild)
    assert deliveries["raw"].tolist() == [
        members[(key, int(mid))]
        for key, mid in zip(deliveries["key"], deliveries["id"], strict=True)
    ]
    if kind == "deliveries":
        return deliveries
    kept = deliveries.drop_duplicates("id")  # the copy to_messages keeps
    first = dict(zip(kept["id"].tolist(), kept["raw"].tolist(), strict=True))
    frame = bus.messages(guild)
    assert frame["raw"].tolist() == [first[int(mid)] for mid in frame["id"]]
    return frame


def without_raw(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with its stored member bytes dropped, as a user may do."""
    return frame.drop(columns=["raw"])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("guild", GUILDS)
def test_jsonl_lines_are_the_stored_members(
    capture_bus: rd.Bus, tmp_path: Path, guild: str, kind: str
) -> None:
    frame = load(capture_bus, guild, kind)
    path = tmp_path / "out.jsonl"
    export.to_jsonl(frame, path, now=NOW)
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert lines[:-1] == frame["raw"].tolist()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("guild", GUILDS)
def test_jsonl_round_trip(
    capture_bus: rd.Bus, tmp_path: Path, guild: str, kind: str
) -> None:
    frame = load(capture_bus, guild, kind)
    path = tmp_path / "out.jsonl"
    export.to_jsonl(frame, path, now=NOW)
    pd.testing.assert_frame_equal(export.read_jsonl(path), frame)


def normalised(message: dict[str, Any]) -> dict[str, Any]:
    """What a frame without ``raw`` keeps of a message (see to_jsonl, Notes)."""
    topics = message["topics"]
    return {
        **message,
        "topics": [topics] if isinstance(topics, str) else topics,
        "recipient_list": [
            {"id": tag["id"], "name": None} for tag in message["recipient_list"]
        ],
    }


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("guild", GUILDS)
def test_reserialised_lines_match_the_stored_members(
    capture_bus: rd.Bus, tmp_path: Path, guild: str, kind: str
) -> None:
    frame = load(capture_bus, guild, kind)
    path = tmp_path / "out.jsonl"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RdebugWarning)
        export.to_jsonl(without_raw(frame), path, now=NOW)
    lines = path.read_bytes().splitlines()
    stored = frame["raw"].tolist()
    changed = [
        raw
        for raw in stored
        if normalised(msgspec.json.decode(raw)) != msgspec.json.decode(raw)
    ]
    assert len(lines) == len(stored)
    for line, raw in zip(lines, stored, strict=True):
        expected = normalised(msgspec.json.decode(raw))
        assert msgspec.json.decode(line) == expected
        assert line == (raw if raw not in changed else msgspec.json.encode(expected))
    assert len(caught) == (1 if changed else 0)
    if changed:
        assert f"{len(changed)} of {len(stored)} lines" in str(caught[0].message)


def test_reserialised_export_warns(capture_bus: rd.Bus, tmp_path: Path) -> None:
    frame = without_raw(capture_bus.messages("acme:support:echo"))
    with pytest.warns(RdebugWarning, match="no 'raw' column"):
        export.to_jsonl(frame, tmp_path / "echo.jsonl", now=NOW)


def test_lines_are_accepted_as_rusticai_messages(
    capture_bus: rd.Bus, tmp_path: Path
) -> None:
    """Every line has RusticAI's 22 fields in its order (section 4 of the layout)."""
    dead_letter = capture_bus.message("faulty-workers", 9742500132942774272)
    order = list(msgspec.json.decode(dead_letter.raw))
    assert len(order) == 22
    frame = load(capture_bus, "orders-pipeline-01", "messages")
    path = tmp_path / "out.jsonl"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RdebugWarning)
        export.to_jsonl(without_raw(frame), path, now=NOW)
    for line in path.read_bytes().splitlines():
        message = msgspec.json.decode(line)
        assert list(message) == order
        assert isinstance(message["timestamp"], float)
        assert line.endswith(b".0}")


def test_big_ids_survive_every_format(capture_bus: rd.Bus, tmp_path: Path) -> None:
    frame = load(capture_bus, "orders-pipeline-01", "messages")
    big = frame["id"] >= 2**63
    assert big.any()
    assert (~big).any()
    export.to_jsonl(frame, tmp_path / "o.jsonl", now=NOW)
    export.to_parquet(frame, tmp_path / "o.parquet", now=NOW)
    export.to_csv(frame, tmp_path / "o.csv", now=NOW)
    with (tmp_path / "o.csv").open(newline="") as handle:
        csv_ids = [row["id"] for row in csv.DictReader(handle)]
    expected = [str(int(mid)) for mid in frame["id"]]
    assert (
        export.read_jsonl(tmp_path / "o.jsonl")["id"].tolist() == frame["id"].tolist()
    )
    assert (
        export.read_parquet(tmp_path / "o.parquet")["id"].tolist()
        == frame["id"].tolist()
    )
    assert csv_ids == expected


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("guild", GUILDS)
def test_parquet_round_trip(
    capture_bus: rd.Bus, tmp_path: Path, guild: str, kind: str
) -> None:
    frame = load(capture_bus, guild, kind)
    path = tmp_path / "out.parquet"
    export.to_parquet(frame, path, now=NOW, row_group_size=16)
    pd.testing.assert_frame_equal(export.read_parquet(path), frame)
    pd.testing.assert_frame_equal(
        export.read_parquet(path, columns=["id", "payload"]), frame[["id", "payload"]]
    )
    assert pq.ParquetFile(path).num_row_groups == -(-len(frame) // 16)


def test_parquet_without_raw_round_trips(capture_bus: rd.Bus, tmp_path: Path) -> None:
    frame = capture_bus.deliveries("orders-pipeline-01")
    path = tmp_path / "out.parquet"
    export.to_parquet(frame, path, now=NOW)
    pd.testing.assert_frame_equal(export.read_parquet(path), frame)


def test_parquet_streams_frames(capture_bus: rd.Bus, tmp_path: Path) -> None:
    frame = capture_bus.messages("orders-pipeline-01")
    chunks = (frame.iloc[start : start + 100] for start in range(0, len(frame), 100))
    path = tmp_path / "chunks.parquet"
    meta = export.to_parquet(chunks, path, now=NOW, row_group_size=40)
    back = export.read_parquet(path)
    pd.testing.assert_frame_equal(back, frame)
    assert (meta.rows, meta.messages) == (len(frame), frame["id"].nunique())
    assert pq.ParquetFile(path).num_row_groups == sum(
        -(-min(100, len(frame) - s) // 40) for s in range(0, len(frame), 100)
    )


def test_parquet_is_plain_for_other_readers(
    capture_bus: rd.Bus, tmp_path: Path
) -> None:
    frame = capture_bus.messages("orders-pipeline-01")
    path = tmp_path / "out.parquet"
    export.to_parquet(frame, path, now=NOW)
    table = pq.read_table(path)
    schema = table.schema
    assert schema.field("id").type == pa.uint64()
    assert schema.field("thread").type == pa.list_(pa.uint64())
    assert schema.field("topics").type == pa.list_(pa.string())
    assert schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert schema.field("payload").type == pa.string()
    marked = json.loads(schema.metadata[b"rdebug_nb.json_columns"])
    assert set(marked) == set(export.JSON_COLUMNS)
    payloads = [json.loads(text) for text in table.column("payload").to_pylist()]
    assert payloads == frame["payload"].tolist()
    assert table.column("id").to_pylist() == [int(mid) for mid in frame["id"]]
    assert pa.types.is_string(
        schema.field("process_status").type
    ) or pa.types.is_large_string(schema.field("process_status").type)
    statuses = [None if pd.isna(v) else v for v in frame["process_status"]]
    assert table.column("process_status").to_pylist() == statuses


def test_csv_has_the_flat_columns(capture_bus: rd.Bus, tmp_path: Path) -> None:
    frame = capture_bus.deliveries("faulty-workers")
    path = tmp_path / "out.csv"
    meta = export.to_csv(frame, path, now=NOW)
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [c for c in export.FLAT_COLUMNS if c in frame.columns]
    assert list(meta.columns) == list(rows[0])
    assert len(rows) == len(frame)
    replies = [r["in_response_to"] for r in rows]
    assert replies == [
        "" if pd.isna(v) else str(int(v)) for v in frame["in_response_to"]
    ]
    assert [r["process_status"] for r in rows] == [
        "" if pd.isna(v) else v for v in frame["process_status"]
    ]
    assert pd.Timestamp(rows[0]["timestamp"]) == frame["timestamp"].iloc[0]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv"])
def test_metadata_says_where_and_when(
    capture_bus: rd.Bus, tmp_path: Path, fmt: str
) -> None:
    frame = capture_bus.messages("faulty-workers")
    path = tmp_path / f"out.{fmt}"
    write = getattr(export, f"to_{fmt}")
    url = "redis://ops:s3cret@bus.example:6379/0"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RdebugWarning)
        written = write(frame, path, source=url, now=NOW)
    meta = export.read_metadata(path)
    assert meta == written
    assert meta.format == fmt
    assert meta.kind == "messages"
    assert meta.source == "redis://ops:***@bus.example:6379/0"
    assert "s3cret" not in (path.read_bytes() + _sidecar_bytes(path)).decode("latin-1")
    assert meta.guild_ids == ("faulty-workers",)
    assert (meta.rows, meta.messages) == (len(frame), frame["id"].nunique())
    assert meta.first_time == frame["timestamp"].min()
    assert meta.last_time == frame["timestamp"].max()
    assert meta.exported_at == NOW
    assert meta.version == rd.__version__


def _sidecar_bytes(path: Path) -> bytes:
    side = export.sidecar_path(path)
    return side.read_bytes() if side.exists() else b""


def test_metadata_source_from_attrs(capture_bus: rd.Bus, tmp_path: Path) -> None:
    frame = capture_bus.messages("acme-org")
    frame.attrs["source"] = "redis://:pw@h:1/15"
    meta = export.to_parquet(frame, tmp_path / "a.parquet", now=NOW)
    assert meta.source == "redis://:***@h:1/15"
    assert export.read_metadata(tmp_path / "a.parquet").source == meta.source


def test_read_metadata_without_any(tmp_path: Path) -> None:
    path = tmp_path / "plain.jsonl"
    path.write_bytes(b"")
    with pytest.raises(SnapshotError, match="no rdebug_nb export metadata"):
        export.read_metadata(path)


def test_jsonl_without_sidecar_needs_a_guild(
    capture_bus: rd.Bus, tmp_path: Path
) -> None:
    frame = load(capture_bus, "acme:support:echo", "messages")
    path = tmp_path / "echo.jsonl"
    path.write_bytes(b"".join(raw + b"\n" for raw in frame["raw"]))
    with pytest.raises(SnapshotError, match="pass guild_id="):
        export.read_jsonl(path)
    back = export.read_jsonl(path, guild_id="acme:support:echo")
    pd.testing.assert_frame_equal(without_raw(back), without_raw(frame))
    with_lines = export.read_jsonl(path, guild_id="acme:support:echo", raw=True)
    pd.testing.assert_frame_equal(with_lines, frame)


def test_jsonl_keeps_selected_topics_and_order(
    capture_bus: rd.Bus, tmp_path: Path
) -> None:
    """A topic filter leaves messages stored under fewer topics than they name."""
    frame = capture_bus.messages("orders-pipeline-01", topics=["orders.done"])
    assert all(
        len(t) < len(m)
        for t, m in zip(frame["topics"], frame["message_topics"], strict=True)
    )
    shuffled = frame.sort_values("priority", kind="stable").reset_index(drop=True)
    path = tmp_path / "done.jsonl"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RdebugWarning)
        export.to_jsonl(shuffled, path, now=NOW)
    pd.testing.assert_frame_equal(export.read_jsonl(path), shuffled)


def test_jsonl_of_several_guilds(capture_bus: rd.Bus, tmp_path: Path) -> None:
    """The same ids exist in a guild and in the organisation namespace."""
    parts = [
        load(capture_bus, g, "deliveries")
        for g in ("Qm3sYv7TzA9cXe2RkWpN5d", "acme-org")
    ]
    frame = pd.concat(parts, ignore_index=True)
    assert frame["id"].duplicated().any()
    path = tmp_path / "g2g.jsonl"
    meta = export.to_jsonl(frame, path, now=NOW)
    assert meta.guild_ids == ("Qm3sYv7TzA9cXe2RkWpN5d", "acme-org")
    pd.testing.assert_frame_equal(export.read_jsonl(path), frame)


def test_snapshot_records_rebuild_the_topic_keys(
    capture_bus: rd.Bus, fresh_bus: rd.Bus, tmp_path: Path
) -> None:
    frame = load(capture_bus, "orders-pipeline-01", "messages")
    path = tmp_path / "orders-keys.jsonl"
    write_snapshot(export.to_snapshot_records(frame), path)
    report = fresh_bus.load_snapshot(path, force=True)
    assert report.loaded == len(capture_bus.topics("orders-pipeline-01"))
    pd.testing.assert_frame_equal(
        fresh_bus.deliveries("orders-pipeline-01"),
        capture_bus.deliveries("orders-pipeline-01"),
    )


def test_empty_frames_round_trip(tmp_path: Path) -> None:
    from rdebug_nb.messages import empty_deliveries, to_messages

    for frame in (empty_deliveries(), to_messages(empty_deliveries())):
        export.to_jsonl(frame, tmp_path / "e.jsonl", now=NOW)
        export.to_parquet(frame, tmp_path / "e.parquet", now=NOW)
        pd.testing.assert_frame_equal(export.read_jsonl(tmp_path / "e.jsonl"), frame)
        back = export.read_parquet(tmp_path / "e.parquet")
        assert list(back.columns) == list(frame.columns)
        assert back.empty
        assert export.read_metadata(tmp_path / "e.parquet").first_time is None


def test_the_metadata_names_the_server_a_frame_was_loaded_from(
    capture_bus: rd.Bus, tmp_path: Path
) -> None:
    frame = capture_bus.messages("acme:support:echo")

    export.to_jsonl(frame[frame["is_error"] | ~frame["is_error"]], tmp_path / "e.jsonl")

    assert export.read_metadata(tmp_path / "e.jsonl").source == capture_bus.url
    assert capture_bus.url.startswith("redis://")


@pytest.mark.parametrize("writer", [export.to_jsonl, export.to_parquet, export.to_csv])
def test_a_frame_without_the_needed_columns_is_refused_by_name(
    capture_bus: rd.Bus, tmp_path: Path, writer: Any
) -> None:
    frame = capture_bus.messages("acme:support:echo")[["id", "payload"]]

    with pytest.raises(rd.SnapshotError, match=r"lacks the columns \['guild_id'"):
        writer(frame, tmp_path / "out")
    with pytest.raises(TypeError, match="not list"):
        writer([[1, 2]], tmp_path / "out")


def test_a_jsonl_export_without_raw_needs_every_message_column(
    capture_bus: rd.Bus, tmp_path: Path
) -> None:
    frame = without_raw(capture_bus.messages("acme:support:echo"))

    with pytest.raises(rd.SnapshotError, match=r"lacks the columns \['payload'\]"):
        export.to_jsonl(frame.drop(columns="payload"), tmp_path / "out.jsonl")

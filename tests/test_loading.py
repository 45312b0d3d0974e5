"""The fast loading path: lazy JSON columns, direct message frames, refresh.

Frames are built from the real capture (pure tests) and, for ``Bus.refresh``,
from the capture's orders guild cycled with fresh ids and times into a real
server (``fresh_bus``), then compared with a full reload.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pytest

import rdebug_nb as rd
from bench.data import Guild, read_guild
from rdebug_nb.messages import (
    JsonArray,
    JsonDtype,
    decode_deliveries,
    decode_messages,
    merge_frames,
    to_messages,
)

GUILD = "orders-pipeline-01"
JSON_COLUMNS = (
    "payload",
    "routing_slip",
    "message_history",
    "forward_header",
    "session_state",
    "origin_guild_stack",
)


def capture_entries(capture: Path, guild: str) -> list[tuple[str, str, list[bytes]]]:
    """(key, topic, members) of every topic key of ``guild`` in the capture."""
    entries = []
    with (capture / "keyspace.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if record["type"] == "zset" and record["key"].startswith(guild + ":"):
                topic = record["key"][len(guild) + 1 :]
                entries.append(
                    (record["key"], topic, [m.encode() for m, _ in record["value"]])
                )
    return entries


@pytest.fixture(scope="module")
def orders_entries(capture: Path) -> list[tuple[str, str, list[bytes]]]:
    return capture_entries(capture, GUILD)


@pytest.fixture(scope="module")
def orders(orders_entries: list[tuple[str, str, list[bytes]]]) -> pd.DataFrame:
    return decode_messages(GUILD, orders_entries)


def stored_bodies(
    entries: list[tuple[str, str, list[bytes]]],
) -> dict[int, dict[str, Any]]:
    """Each message of the entries decoded with the standard library, by id."""
    return {
        body["id"]: body
        for _, _, members in entries
        for body in (json.loads(member) for member in members)
    }


# -- the lazy JSON columns -------------------------------------------------------


def test_nested_columns_hold_exactly_what_was_stored(
    orders: pd.DataFrame, orders_entries: list[tuple[str, str, list[bytes]]]
) -> None:
    bodies = stored_bodies(orders_entries)

    for name in JSON_COLUMNS:
        assert isinstance(orders[name].dtype, JsonDtype)
        expected = [bodies[int(mid)][name] for mid in orders["id"]]
        assert orders[name].tolist() == expected, name
    assert all(type(p) is dict for p in orders["payload"])


def test_nested_values_are_plain_python_for_every_consumer(
    orders: pd.DataFrame, orders_entries: list[tuple[str, str, list[bytes]]]
) -> None:
    bodies = stored_bodies(orders_entries)
    row = orders.iloc[3]
    body = bodies[int(row["id"])]

    assert type(row["payload"]) is dict
    assert row["payload"] == body["payload"]
    assert (
        msgspec.json.decode(msgspec.json.encode(row["routing_slip"]))
        == (body["routing_slip"])
    )
    assert (
        json.loads(json.dumps(orders.at[3, "message_history"]))
        == (body["message_history"])
    )
    records = orders.head(5).to_dict("records")
    assert [r["payload"] for r in records] == [
        bodies[int(mid)]["payload"] for mid in orders["id"].head(5)
    ]
    mapped = orders["payload"].map(lambda p: sorted(p)).tolist()
    assert mapped == [sorted(bodies[int(mid)]["payload"]) for mid in orders["id"]]


def test_json_nulls_are_missing_before_and_after_decoding(
    orders: pd.DataFrame, orders_entries: list[tuple[str, str, list[bytes]]]
) -> None:
    bodies = stored_bodies(orders_entries)
    fresh = decode_messages(GUILD, orders_entries)

    for name in ("forward_header", "routing_slip", "session_state"):
        expected = [bodies[int(mid)][name] is None for mid in fresh["id"]]
        assert fresh[name].isna().tolist() == expected, name
        assert fresh[name].tolist().count(None) == sum(expected)
    assert orders["routing_slip"].notna().sum() == sum(
        body["routing_slip"] is not None
        for mid, body in bodies.items()
        if mid in set(orders["id"].tolist())
    )


def test_a_decoded_value_is_cached_and_shared_by_slices(orders: pd.DataFrame) -> None:
    payloads = orders["payload"].array
    first = payloads[0]

    assert payloads[0] is first
    assert payloads[:5][0] is first


def test_frames_with_lazy_columns_compare_copy_pickle_and_concat(
    orders_entries: list[tuple[str, str, list[bytes]]],
) -> None:
    one = decode_messages(GUILD, orders_entries)
    two = decode_messages(GUILD, orders_entries)

    assert one.equals(two)
    pd.testing.assert_frame_equal(one, two)
    restored = pickle.loads(pickle.dumps(one))
    pd.testing.assert_frame_equal(restored, two)
    both = pd.concat([one.iloc[:10], two.iloc[10:]], ignore_index=True)
    pd.testing.assert_frame_equal(both, two)
    changed = one.copy()
    changed.at[0, "payload"] = {"edited": True}  # type: ignore[assignment]
    assert changed["payload"][0] == {"edited": True}
    assert one["payload"][0] != {"edited": True}
    assert one["payload"].astype(object).tolist() == two["payload"].tolist()


def test_explode_matches_an_object_column(orders: pd.DataFrame) -> None:
    lazy = orders[["id", "message_history"]]
    plain = lazy.astype({"message_history": object})

    exploded = lazy.explode("message_history")
    expected = plain.explode("message_history")

    assert exploded["id"].tolist() == expected["id"].tolist()
    got = exploded["message_history"].tolist()
    want = expected["message_history"].tolist()
    assert [g for g in got if isinstance(g, dict)] == [
        w for w in want if isinstance(w, dict)
    ]
    assert sum(pd.isna(g) for g in got if not isinstance(g, dict)) == sum(
        pd.isna(w) for w in want if not isinstance(w, dict)
    )


def test_json_array_from_texts() -> None:
    values = JsonArray.from_json([b'{"n": 1}', b"null", b"[2]", b"true"])

    assert values.isna().tolist() == [False, True, False, False]
    assert values.tolist() == [{"n": 1}, None, [2], True]
    assert (values == [{"n": 1}, None, [2], True]).all()


def test_direct_message_frames_equal_collapsed_deliveries(capture: Path) -> None:
    namespaces = {"orders-pipeline-01", "faulty-workers", "acme:support:echo"}
    for namespace in namespaces:
        entries = capture_entries(capture, namespace)
        deliveries = decode_deliveries(namespace, entries)
        direct = decode_messages(namespace, entries)
        pd.testing.assert_frame_equal(direct, to_messages(deliveries))
        assert list(direct.columns) == list(rd.MESSAGE_COLUMNS)


def test_documented_dtypes(orders: pd.DataFrame) -> None:
    dtypes = orders.dtypes.astype(str).to_dict()

    assert dtypes["id"] == "UInt64"
    assert dtypes["thread_root"] == "UInt64"
    assert dtypes["ttl"] == "Int64"
    for name in ("guild_id", "sender_id", "sender_name", "format"):
        assert dtypes[name] == "str", name
    for name in ("process_status", "traceparent", "trace_id", "topics", "thread"):
        assert dtypes[name] == "object", name
    for name in JSON_COLUMNS:
        assert dtypes[name] == "json", name


def test_an_id_above_64_bits_is_a_skip_not_a_wrong_row(
    orders_entries: list[tuple[str, str, list[bytes]]],
) -> None:
    key, topic, members = orders_entries[0]
    body = json.loads(members[0])
    body["thread"] = [*body["thread"], 1 << 64]
    bad = json.dumps(body).encode()

    frame = decode_messages(GUILD, [(key, topic, [*members[1:], bad])])

    assert len(frame) == len(members) - 1
    assert [skip.key for skip in frame.attrs["skips"]] == [key]
    assert "64-bit" in frame.attrs["skips"][0].reason


# -- Bus.refresh against a real server ------------------------------------------


@pytest.fixture(scope="module")
def cycled(capture: Path) -> Guild:
    """The orders guild of the capture, cycled with fresh ids and times."""
    return read_guild(capture / "keyspace.jsonl", GUILD)


def store(bus: rd.Bus, guild: Guild, start: int, stop: int) -> None:
    """ZADD members ``start`` to ``stop`` of the cycled guild."""
    pipe = bus.client.pipeline(transaction=False)
    for topic, member, score in list(guild.members(stop))[start:]:
        pipe.zadd(f"{GUILD}:{topic}", {member: score})
    pipe.execute()


def fetched_entries(caplog: pytest.LogCaptureFixture) -> int:
    """Entries the Bus logged as fetched (one INFO line per round trip)."""
    found = (
        re.search(r"fetched \d+ pages, (\d+) entries", record.getMessage())
        for record in caplog.records
    )
    return sum(int(match.group(1)) for match in found if match)


def test_refresh_reads_only_what_arrived_and_equals_a_full_reload(
    fresh_bus: rd.Bus, cycled: Guild, caplog: pytest.LogCaptureFixture
) -> None:
    store(fresh_bus, cycled, 0, 1500)
    msgs = fresh_bus.messages(GUILD)
    store(fresh_bus, cycled, 1500, 2200)

    with caplog.at_level(logging.INFO, logger="rdebug_nb.bus"):
        refreshed = fresh_bus.refresh(msgs)
    read = fetched_entries(caplog)

    full = fresh_bus.messages(GUILD)
    pd.testing.assert_frame_equal(refreshed, full)
    assert len(msgs) < len(refreshed)
    assert 700 <= read < 1000  # the new members and a 2-second overlap
    assert refreshed.attrs["query"] == msgs.attrs["query"]
    assert fresh_bus.refresh(refreshed).equals(full)


def test_refresh_adds_topics_of_a_message_stored_again(
    fresh_bus: rd.Bus, cycled: Guild
) -> None:
    members = list(cycled.members(len(cycled.templates)))
    ids = [json.loads(member)["id"] for _, member, _ in members]
    twice = next(mid for mid in ids if ids.count(mid) > 1)
    copies = [m for m, mid in zip(members, ids, strict=True) if mid == twice]
    first, *later = copies
    fresh_bus.client.zadd(f"{GUILD}:{first[0]}", {first[1]: first[2]})
    msgs = fresh_bus.messages(GUILD)
    for topic, member, score in later:
        fresh_bus.client.zadd(f"{GUILD}:{topic}", {member: score})

    refreshed = fresh_bus.refresh(msgs)

    assert msgs["topics"].tolist() == [[first[0]]]
    assert sorted(refreshed["topics"][0]) == sorted(t for t, _, _ in copies)
    pd.testing.assert_frame_equal(refreshed, fresh_bus.messages(GUILD))


def test_refresh_of_deliveries_equals_a_full_reload(
    fresh_bus: rd.Bus, cycled: Guild
) -> None:
    store(fresh_bus, cycled, 0, 800)
    deliveries = fresh_bus.deliveries(GUILD)
    store(fresh_bus, cycled, 800, 1400)

    refreshed = fresh_bus.refresh(deliveries)

    pd.testing.assert_frame_equal(refreshed, fresh_bus.deliveries(GUILD))


def test_refresh_keeps_the_topics_and_window_asked_for(
    fresh_bus: rd.Bus, cycled: Guild
) -> None:
    members = list(cycled.members(2000))
    since, until = members[300][2], members[1600][2]
    store(fresh_bus, cycled, 0, 1000)
    window = fresh_bus.messages(GUILD, since=since, until=until)
    some = fresh_bus.messages(GUILD, topics=["state_topic", "orders.in"])
    store(fresh_bus, cycled, 1000, 2000)

    pd.testing.assert_frame_equal(
        fresh_bus.refresh(window), fresh_bus.messages(GUILD, since=since, until=until)
    )
    pd.testing.assert_frame_equal(
        fresh_bus.refresh(some),
        fresh_bus.messages(GUILD, topics=["state_topic", "orders.in"]),
    )


def test_refresh_keeps_the_limit(fresh_bus: rd.Bus, cycled: Guild) -> None:
    store(fresh_bus, cycled, 0, 600)
    with pytest.warns(rd.TruncatedWarning):
        newest = fresh_bus.messages(GUILD, limit=100)
    store(fresh_bus, cycled, 600, 900)

    with pytest.warns(rd.TruncatedWarning):
        refreshed = fresh_bus.refresh(newest)
    with pytest.warns(rd.TruncatedWarning):
        expected = fresh_bus.messages(GUILD, limit=100)

    pd.testing.assert_frame_equal(refreshed, expected)
    assert refreshed.attrs["truncated"]


def test_refresh_finds_a_new_topic_and_warns_once_per_bad_member(
    fresh_bus: rd.Bus, cycled: Guild
) -> None:
    store(fresh_bus, cycled, 0, 700)
    msgs = fresh_bus.messages(GUILD)
    newest = int(msgs["timestamp_ms"].max())
    _, member, _ = next(cycled.members(1))
    body = json.loads(member)
    body.update(topic_published_to="brand.new", topics="brand.new")
    body.update(id=body["id"] + (5000 << 22), timestamp=float(newest + 5000))
    fresh_bus.client.zadd(f"{GUILD}:brand.new", {json.dumps(body): newest + 5000})
    fresh_bus.client.zadd(f"{GUILD}:heartbeat", {b"not a message": newest + 4000})

    with pytest.warns(rd.SkippedEntriesWarning, match="skipped 1 "):
        refreshed = fresh_bus.refresh(msgs)
    again = fresh_bus.refresh(refreshed)  # the bad member is known: no warning

    assert "brand.new" in refreshed["topics"].iloc[-1]
    assert len(rd.skips(again)) == 1
    assert again.equals(refreshed)


def test_refresh_needs_a_loaded_frame(fresh_bus: rd.Bus) -> None:
    with pytest.raises(ValueError, match="attrs"):
        fresh_bus.refresh(pd.DataFrame({"id": [1]}))


def test_merge_frames_on_frames_without_overlap(orders: pd.DataFrame) -> None:
    half = len(orders) // 2
    older, newer = orders.iloc[:half], orders.iloc[half:].reset_index(drop=True)

    merged = merge_frames(older, newer)

    pd.testing.assert_frame_equal(merged, orders)
    assert np.array_equal(merged["id"].to_numpy(), orders["id"].to_numpy())

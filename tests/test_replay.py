"""Replay into a sandbox guild on a real server."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import msgspec
import pandas as pd
import pytest
import redis

import rdebug_nb as rd
from rdebug_nb.errors import WriteRefused
from rdebug_nb.offline import open_snapshot
from rdebug_nb.replay import PUBLISH_COLUMNS, ReplayPlan, replay
from tests.test_export import load, without_raw, zmembers

SOURCE = "orders-pipeline-01"
TARGET = "sandbox-orders"
NOW = pd.Timestamp("2026-12-05T08:00:00", tz="UTC")
NOW_MS = int(NOW.value // 1_000_000)


def mark_writable(bus: rd.Bus) -> rd.Bus:
    """What ``connect(url, writable=True)`` is proposed to do."""
    bus.__dict__["writable"] = True
    return bus


@pytest.fixture
def sandbox(fresh_bus: rd.Bus) -> rd.Bus:
    return mark_writable(fresh_bus)


@pytest.fixture
def selection(capture_bus: rd.Bus) -> pd.DataFrame:
    """Three complete order chains, less the first order's own message.

    References to that order stay as they are; the rest point inside.
    """
    msgs = load(capture_bus, SOURCE, "messages")
    done = msgs[msgs["topics"].map(lambda topics: "orders.done" in topics)]
    roots = done["thread_root"].unique()[:3]
    chains = msgs[msgs["thread_root"].isin(roots)]
    chosen: pd.DataFrame = chains[chains["id"] != roots[0]].reset_index(drop=True)
    return chosen


def commandstats(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def expected_topic_keys(selection: pd.DataFrame) -> dict[str, int]:
    counts = selection["topics"].explode().value_counts()
    return {f"{TARGET}:{topic}": int(n) for topic, n in counts.items()}


def test_dry_run_writes_nothing(sandbox: rd.Bus, selection: pd.DataFrame) -> None:
    client = sandbox.client
    before = commandstats(client)
    plan = replay(selection, sandbox, TARGET, now=NOW)
    after = commandstats(client)
    grown = sorted(name for name, calls in after.items() if calls > before.get(name, 0))
    flags = client.execute_command("COMMAND", "INFO", *grown)  # type: ignore[no-untyped-call]
    assert grown == ["info"]
    assert not any("write" in flags[name]["flags"] for name in grown)
    assert client.dbsize() == 0
    assert not plan.written
    assert plan.refusal is None
    assert plan.messages == len(selection)
    assert len(plan.publishes) == sum(len(topics) for topics in selection["topics"])
    assert plan.topic_keys.to_dict() == expected_topic_keys(selection)
    assert list(plan.publishes.columns) == list(PUBLISH_COLUMNS)
    text = repr(plan)
    assert "dry run" in text
    assert f"{plan.messages} messages as {len(plan.publishes)} deliveries" in text
    assert f"into guild {TARGET!r}" in text


def receive(pubsub: Any, count: int) -> list[tuple[bytes, bytes]]:
    received: list[tuple[bytes, bytes]] = []
    for _ in range(count + 100):
        if len(received) == count:
            break
        item = pubsub.get_message(ignore_subscribe_messages=True, timeout=2.0)
        if item is not None:
            received.append((item["channel"], item["data"]))
    return received


def subscribe(bus: rd.Bus, keys: list[str]) -> Any:
    pubsub = bus.client.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(*keys)
    confirmed = 0
    for _ in range(len(keys) + 100):
        item = pubsub.get_message(timeout=2.0)
        confirmed += item is not None and item["type"] == "subscribe"
        if confirmed == len(keys):
            break
    return pubsub


def test_replay_writes_like_rusticai(sandbox: rd.Bus, selection: pd.DataFrame) -> None:
    keys = sorted(expected_topic_keys(selection))
    pubsub = subscribe(sandbox, keys)
    plan = replay(selection, sandbox, TARGET, write=True, now=NOW)
    received = receive(pubsub, len(plan.publishes))
    pubsub.close()
    published = list(zip(plan.publishes["key"], plan.publishes["json"], strict=True))
    assert plan.written
    assert sorted(received) == sorted((k.encode(), j) for k, j in published)
    client = sandbox.client
    for key, count in expected_topic_keys(selection).items():
        members = client.zrange(key, 0, -1, withscores=True)
        rows = plan.publishes[plan.publishes["key"] == key]
        assert len(members) == count
        assert sorted(members) == sorted(zip(rows["json"], rows["score"], strict=True))
    last_copy = plan.publishes.drop_duplicates("id", keep="last")
    for msg_key, member in zip(
        last_copy["message_key"], last_copy["json"], strict=True
    ):
        assert client.get(msg_key) == member
        assert 0 < client.ttl(msg_key) <= 3600
    assert set(client.scan_iter(match="msg:*")) == {
        k.encode() for k in last_copy["message_key"]
    }


def test_replay_rewrites_references(sandbox: rd.Bus, selection: pd.DataFrame) -> None:
    plan = replay(selection, sandbox, TARGET, write=True, now=NOW)
    ids = plan.id_map
    originals = {
        int(mid): msgspec.json.decode(raw)
        for mid, raw in zip(selection["id"], selection["raw"], strict=True)
    }
    assert set(ids) == set(originals)
    assert len(set(ids.values())) == len(ids)
    assert not set(ids.values()) & set(ids)
    back = {new: old for old, new in ids.items()}
    inside = outside = 0
    for member in zmembers(sandbox, f"{TARGET}:orders.done"):
        new = msgspec.json.decode(member)
        old = originals[back[new["id"]]]
        parts = rd.decode_id(new["id"])
        assert parts.priority == old["priority"]
        assert NOW_MS <= parts.timestamp < NOW_MS + len(ids)
        assert new["timestamp"] == float(parts.timestamp)
        assert new["in_response_to"] == ids.get(
            old["in_response_to"], old["in_response_to"]
        )
        assert new["thread"] == [ids.get(t, t) for t in old["thread"]]
        hops = [(h["origin"], h["result"]) for h in new["message_history"]]
        assert hops == [
            (ids.get(h["origin"], h["origin"]), ids.get(h["result"], h["result"]))
            for h in old["message_history"]
        ]
        origin = old["forward_header"]["origin_message_id"]
        assert new["forward_header"]["origin_message_id"] == ids.get(origin, origin)
        assert _unchanged(new) == _unchanged(old)
        assert new["topic_published_to"] == "orders.done"
        references = [old["in_response_to"], *old["thread"]]
        inside += sum(ref in ids for ref in references)
        outside += sum(ref not in ids for ref in references)
    assert inside > 0
    assert outside > 0


def test_a_fast_replay_keeps_the_order_of_every_topic_key(
    sandbox: rd.Bus, selection: pd.DataFrame
) -> None:
    plan = replay(selection, sandbox, TARGET, write=True, now=NOW)
    back = {new: old for old, new in plan.id_map.items()}
    stored_at = dict(
        zip(selection["id"].tolist(), selection["timestamp_ms"].tolist(), strict=True)
    )

    for topic in plan.publishes["topic"].unique():
        members = zmembers(sandbox, f"{TARGET}:{topic}")
        replayed = [back[msgspec.json.decode(m)["id"]] for m in members]
        assert replayed == sorted(replayed, key=lambda mid: (stored_at[mid], mid))
        stamps = [msgspec.json.decode(m)["timestamp"] for m in members]
        assert len(set(stamps)) == len(stamps)


def _unchanged(message: dict[str, Any]) -> dict[str, Any]:
    """The fields a replay leaves alone."""
    changed = {
        "id",
        "timestamp",
        "in_response_to",
        "thread",
        "message_history",
        "forward_header",
        "topic_published_to",
    }
    return {name: value for name, value in message.items() if name not in changed}


def test_keep_ids_and_spacing(
    capture_bus: rd.Bus, sandbox: rd.Bus, selection: pd.DataFrame
) -> None:
    pauses: list[float] = []
    plan = replay(
        selection,
        sandbox,
        TARGET,
        write=True,
        keep_ids=True,
        speed=4.0,
        sleep=pauses.append,
    )
    ordered = selection.sort_values(["timestamp_ms", "id"], kind="stable")
    stamps = ordered["timestamp_ms"].tolist()
    gaps = [(b - a) / 1000 / 4.0 for a, b in itertools.pairwise(stamps)]
    assert pauses == [gap for gap in gaps if gap > 0]
    assert plan.id_map == {int(mid): int(mid) for mid in selection["id"]}
    published = plan.publishes.drop_duplicates("id")
    assert published["score"].tolist() == [float(s) for s in stamps]
    chosen = {int(mid) for mid in selection["id"]}
    expected = [
        member
        for member in zmembers(capture_bus, f"{SOURCE}:orders.done")
        if msgspec.json.decode(member)["id"] in chosen
    ]
    assert expected
    assert zmembers(sandbox, f"{TARGET}:orders.done") == expected


def test_delivery_frame_publishes_each_copy(
    capture_bus: rd.Bus, sandbox: rd.Bus
) -> None:
    deliveries = capture_bus.deliveries("faulty-workers")
    plan = replay(deliveries, sandbox, "sandbox-faulty", write=True, now=NOW)
    assert len(plan.publishes) == len(deliveries)
    assert plan.messages == deliveries["id"].nunique()
    live = capture_bus.topics("faulty-workers")
    copied = sandbox.topics("sandbox-faulty")
    assert copied["topic"].tolist() == live["topic"].tolist()
    assert copied["entries"].tolist() == live["entries"].tolist()
    dead = sandbox.messages("sandbox-faulty", topics=["dead_letter_queue"])
    assert dead["is_dead_letter"].all()
    assert len(dead) == len(
        capture_bus.messages("faulty-workers", topics=["dead_letter_queue"])
    )


def test_refuses_the_source_guild(sandbox: rd.Bus, selection: pd.DataFrame) -> None:
    with pytest.raises(WriteRefused, match="is the guild these messages came from"):
        replay(selection, sandbox, SOURCE, write=True)
    assert sandbox.client.dbsize() == 0
    plan = replay(selection, sandbox, SOURCE)
    assert "refused without force=True" in repr(plan)


def test_refuses_a_server_not_marked_writable(
    fresh_bus: rd.Bus, selection: pd.DataFrame
) -> None:
    with pytest.raises(WriteRefused, match="not marked writable"):
        replay(selection, fresh_bus, TARGET, write=True)
    with pytest.raises(WriteRefused, match=r"came from.*not marked writable"):
        replay(selection, fresh_bus, SOURCE, write=True)
    assert fresh_bus.client.dbsize() == 0


def test_force_writes_anyway(fresh_bus: rd.Bus, selection: pd.DataFrame) -> None:
    plan = replay(selection, fresh_bus, SOURCE, write=True, force=True, now=NOW)
    assert plan.written
    assert plan.refusal is not None
    assert fresh_bus.messages(SOURCE)["id"].tolist() == sorted(
        plan.id_map.values(), key=lambda i: (rd.decode_id(i).timestamp, i)
    )


def test_snapshot_bus_refuses_even_with_force(
    capture: Path, selection: pd.DataFrame
) -> None:
    offline = open_snapshot(capture / "keyspace.jsonl")
    with pytest.raises(WriteRefused, match="read-only"):
        replay(selection, offline, TARGET, write=True, force=True)


def test_bad_options(sandbox: rd.Bus, selection: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="speed"):
        replay(selection, sandbox, TARGET, speed=0)
    with pytest.raises(ValueError, match="ttl_s"):
        replay(selection, sandbox, TARGET, ttl_s=0)
    with pytest.raises(ValueError, match="target_guild"):
        replay(selection, sandbox, "")


def test_many_messages_in_one_millisecond(capture_bus: rd.Bus, sandbox: rd.Bus) -> None:
    """Fresh ids stay unique past the 4,096 sequence numbers of one millisecond."""
    msgs = without_raw(capture_bus.messages(SOURCE))
    frame = pd.concat([msgs] * 8, ignore_index=True)
    frame["id"] = pd.array(range(1, len(frame) + 1), dtype="UInt64") + msgs["id"].max()
    frame["timestamp_ms"] = frame["timestamp_ms"].iloc[0]  # all sent at once
    frame["timestamp"] = frame["timestamp"].iloc[0]
    plan = replay(frame, sandbox, TARGET, now=NOW, speed=1.0)
    new = plan.publishes.drop_duplicates("id")["id"]
    assert new.is_unique
    parts = [rd.decode_id(int(i)) for i in new]
    assert max(p.sequence for p in parts) == 4095
    assert {p.timestamp for p in parts} == {NOW_MS, NOW_MS + 1}
    assert isinstance(plan, ReplayPlan)


@pytest.fixture
def exported(selection: pd.DataFrame, tmp_path: Path) -> Path:
    path = tmp_path / "selection.jsonl"
    rd.to_jsonl(selection, path)
    return path


@pytest.mark.parametrize(
    ("options", "status", "said"),
    [
        (["--write"], 1, "--write needs --redis-url"),
        (["--speed", "0"], 2, "speed=0.0: give a factor above 0"),
        (["--guild", ""], 2, "target_guild"),
    ],
    ids=["write without a server", "speed 0", "empty guild"],
)
def test_the_replay_command_explains_bad_options(
    exported: Path,
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    status: int,
    said: str,
) -> None:
    from rdebug_nb.cli import main

    assert main(["replay", str(exported), "--guild", TARGET, *options]) == status

    err = capsys.readouterr().err
    assert err.startswith("rdebug-nb: ")
    assert said in err
    assert "Traceback" not in err


def test_the_replay_command_names_its_own_flags_when_refusing(
    exported: Path, sandbox: rd.Bus, capsys: pytest.CaptureFixture[str]
) -> None:
    from rdebug_nb.cli import main

    url = sandbox.url
    command = ["replay", str(exported), "--guild", TARGET, "--redis-url", url]
    status = main([*command, "--write"])

    assert status == 1
    assert "--writable marks the server as a sandbox" in capsys.readouterr().err
    assert sandbox.client.dbsize() == 0


def test_a_dry_run_of_the_replay_command_names_the_flags_to_write(
    exported: Path, sandbox: rd.Bus, capsys: pytest.CaptureFixture[str]
) -> None:
    from rdebug_nb.cli import main

    command = ["replay", str(exported), "--guild", TARGET, "--redis-url", sandbox.url]

    assert main(command) == 0
    refused = capsys.readouterr().out
    assert main([*command, "--writable"]) == 0
    allowed = capsys.readouterr().out

    assert "--writable marks the server as a sandbox" in refused
    assert "dry run: add --write to write" in allowed
    assert sandbox.client.dbsize() == 0

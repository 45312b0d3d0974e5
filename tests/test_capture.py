"""The real RusticAI capture, loaded into real servers, read back with exact counts.

Expected numbers come from the capture's own README (parsed here, so the test
checks the toolkit against the document, not against numbers copied by hand) and
from the raw JSONL lines themselves.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

import rdebug_nb as rd


def readme_table(capture: Path, header: str) -> list[list[str]]:
    """Rows of the markdown table whose header line starts with ``header``."""
    lines = (capture / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip().strip("`") for cell in line.strip("|").split("|")])
    return rows


def number(text: str) -> int:
    return int(text.replace(",", ""))


def raw_members(capture: Path) -> list[tuple[str, bytes, float]]:
    """(key, member bytes, score) of every sorted-set member in the keyspace file."""
    found: list[tuple[str, bytes, float]] = []
    with (capture / "keyspace.jsonl").open("rb") as handle:
        for line in handle:
            body = json.loads(line)
            if body["type"] == "zset":
                found.extend((body["key"], m.encode(), s) for m, s in body["value"])
    return found


def test_guild_table_matches_the_readme(capture_bus: rd.Bus, capture: Path) -> None:
    expected = {
        row[0]: row[1:] for row in readme_table(capture, "| namespace | topic zsets |")
    }

    guilds = capture_bus.guilds().set_index("namespace")

    assert sorted(guilds.index) == sorted(expected)
    for namespace, (zsets, entries, distinct, msg_keys, _) in expected.items():
        row = guilds.loc[namespace]
        assert row["topic_keys"] == number(zsets), namespace
        assert row["deliveries"] == number(entries), namespace
        assert row["messages"] == number(distinct), namespace
        assert row["message_keys"] == number(msg_keys), namespace


def test_totals_and_kinds(capture_bus: rd.Bus) -> None:
    guilds = capture_bus.guilds()

    assert len(guilds) == 7
    assert guilds["topic_keys"].sum() == 70
    assert guilds["deliveries"].sum() == 1058
    assert guilds["messages"].sum() == 952
    assert guilds["positions"].sum() == 121
    kinds = dict(zip(guilds["namespace"], guilds["kind"], strict=True))
    assert kinds["acme-org"] == "organisation"
    assert "acme:support:echo" in kinds
    assert {k for k, v in kinds.items() if v == "organisation"} == {"acme-org"}


def test_guild_table_shows_agents_and_state(capture_bus: rd.Bus) -> None:
    guilds = capture_bus.guilds().set_index("namespace")

    orders = guilds.loc["orders-pipeline-01"]
    assert orders["has_guild_state"]
    assert orders["agent_states"] == ["inventory"]
    assert {"validator", "pricing", "inventory", "notifier"} <= set(orders["agents"])
    assert not guilds.loc["faulty-workers", "has_guild_state"]
    assert guilds["first_time"].min() == pd.Timestamp(
        1796300977540, unit="ms", tz="UTC"
    )


def test_per_topic_entries_match_the_readme(capture_bus: rd.Bus, capture: Path) -> None:
    expected = Counter(
        {
            (ns, topic): number(n)
            for ns, topic, n in readme_table(capture, "| namespace | topic |")
        }
    )
    assert len(expected) == 70

    found: Counter[tuple[str, str]] = Counter()
    for namespace in capture_bus.guilds()["namespace"]:
        table = capture_bus.topics(namespace)
        for topic, entries in zip(table["topic"], table["entries"], strict=True):
            found[(str(namespace), str(topic))] = int(entries)

    assert found == expected


def test_deliveries_and_messages_of_every_guild(capture_bus: rd.Bus) -> None:
    deliveries = pd.concat(
        [capture_bus.deliveries(g) for g in capture_bus.guilds()["namespace"]]
    )
    messages = pd.concat(
        [capture_bus.messages(g) for g in capture_bus.guilds()["namespace"]]
    )

    assert len(deliveries) == 1058
    assert len(messages) == 952
    assert deliveries["is_error"].sum() == 48
    assert messages["is_dead_letter"].sum() == 5
    assert set(messages.columns) == set(rd.MESSAGE_COLUMNS)
    assert list(deliveries.columns) == list(rd.DELIVERY_COLUMNS)


def test_error_deliveries_by_key_and_format(capture_bus: rd.Bus, capture: Path) -> None:
    text = (capture / "README.md").read_text()
    expected = {
        (key, fmt): int(n)
        for key, fmt, n in re.findall(r"- `([^`]+)` format `([^`]+)`: (\d+)", text)
    }
    errors = pd.concat(
        [capture_bus.deliveries(g) for g in ("faulty-workers", "orders-pipeline-01")]
    )
    errors = errors[errors["is_error"]]

    found = Counter(zip(errors["key"], errors["format"], strict=True))

    assert sum(expected.values()) == 48
    assert dict(found) == expected


def test_every_member_decodes_to_its_json_priority_and_timestamp(
    capture_bus: rd.Bus, capture: Path
) -> None:
    members = raw_members(capture)
    bodies = [json.loads(member) for _, member, _ in members]

    parts = rd.decode_ids([body["id"] for body in bodies])

    assert len(members) == 1058
    assert parts["priority"].tolist() == [body["priority"] for body in bodies]
    assert parts["timestamp_ms"].tolist() == [int(body["timestamp"]) for body in bodies]
    assert parts["timestamp_ms"].tolist() == [int(score) for _, _, score in members]


def test_ids_survive_the_frame_exactly(capture_bus: rd.Bus, capture: Path) -> None:
    by_key: dict[str, set[int]] = {}
    for key, member, _ in raw_members(capture):
        by_key.setdefault(key, set()).add(json.loads(member)["id"])
    frames = [capture_bus.deliveries(g) for g in capture_bus.guilds()["namespace"]]
    deliveries = pd.concat(frames)

    found: dict[str, set[int]] = {}
    for key, mid in zip(deliveries["key"], deliveries["id"], strict=True):
        found.setdefault(key, set()).add(int(mid))

    assert found == by_key
    assert any(mid >= 2**63 for ids in found.values() for mid in ids)
    assert deliveries["id"].dtype == "UInt64"


def test_nested_fields_are_kept_intact(capture_bus: rd.Bus) -> None:
    messages = capture_bus.messages("orders-pipeline-01").set_index("id")

    row = messages.loc[2824971229302112256]

    assert row["topics"] == ["orders.done", "agent_inbox:orders_client"]
    assert row["hop_count"] == 4
    assert [hop["agent"]["id"] for hop in row["message_history"]] == [
        "validator",
        "pricing",
        "inventory",
        "notifier",
    ]
    assert row["forward_header"]["origin_message_id"] == 2824971229214027776
    assert row["trace_id"] == "f9ab4d86775d0e41be45876b797b82f6"
    assert row["payload"]["order_id"] == "ORD-0000"
    assert row["in_response_to"] == 2824971229214027776
    assert row["thread_root"] == 9742500256746053632


def test_message_lookup_after_the_message_key_is_gone(
    fresh_bus: rd.Bus, capture: Path
) -> None:
    fresh_bus.load_snapshot(capture / "keyspace.jsonl", expiry="persist", force=True)
    guild, mid = "orders-pipeline-01", 2824971229302112256
    fresh_bus.client.delete(f"msg:{guild}:{mid}")

    found = fresh_bus.message(guild, mid)

    assert not found.has_message_key
    assert sorted(found.topics) == ["agent_inbox:orders_client", "orders.done"]
    assert found.data["id"] == mid
    assert found.to_frame()["topics"][0] == ["orders.done", "agent_inbox:orders_client"]


def test_message_lookup_in_a_guild_whose_id_has_colons(capture_bus: rd.Bus) -> None:
    found = capture_bus.message("acme:support:echo", "7436657122877640704")

    assert found.has_message_key
    assert found.topics == ["default_topic"]
    assert found.data["payload"] == {"seq": 0, "q": "status:0"}


def test_unknown_message_and_guild_raise(capture_bus: rd.Bus) -> None:
    with pytest.raises(rd.MessageNotFound, match="7436657122877640705"):
        capture_bus.message("acme:support:echo", 7436657122877640705)
    with pytest.raises(rd.GuildNotFound, match="acme:support"):
        capture_bus.messages("acme:support")


def test_time_window_and_topics(capture_bus: rd.Bus) -> None:
    everything = capture_bus.messages("orders-pipeline-01")
    start = everything["timestamp"].iloc[100]
    end = everything["timestamp"].iloc[200]

    window = capture_bus.messages("orders-pipeline-01", since=start, until=end)
    done = capture_bus.messages("orders-pipeline-01", topics=["orders.done"])

    inside = everything[
        (everything["timestamp"] >= start) & (everything["timestamp"] <= end)
    ]
    assert window["id"].tolist() == inside["id"].tolist()
    assert len(done) == 41
    assert all("orders.done" in topics for topics in done["topics"])


def test_limit_keeps_the_newest_and_says_so(capture_bus: rd.Bus) -> None:
    everything = capture_bus.messages("orders-pipeline-01")

    with pytest.warns(rd.TruncatedWarning, match="limit=10"):
        newest = capture_bus.messages("orders-pipeline-01", limit=10)

    assert newest.attrs["truncated"] is True
    assert newest["id"].tolist() == everything["id"].tolist()[-10:]


def test_a_duration_means_that_long_ago_and_bad_times_are_explained(
    capture_bus: rd.Bus,
) -> None:
    everything = capture_bus.messages("acme:support:echo", since="36500d")
    nothing = capture_bus.messages("acme:support:echo", until=timedelta(days=36500))

    assert len(everything) == 24
    assert nothing.empty

    with pytest.raises(ValueError, match="is not a time: use a datetime"):
        capture_bus.messages("acme:support:echo", since="yesterday-ish")
    with pytest.raises(ValueError, match="positive int"):
        capture_bus.messages("acme:support:echo", limit=-1)
    with pytest.raises(TypeError, match="guild_id must be a str"):
        capture_bus.messages(None)  # type: ignore[arg-type]

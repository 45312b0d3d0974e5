"""Tests of the simulated guild: its keys must look like RusticAI 1.4 wrote them."""

from __future__ import annotations

import ast
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from rdebug_nb.ids import decode_id
from rdebug_nb.simulator import simulate_guild
from rdebug_nb.snapshot import KeyRecord

NOW_MS = 1_796_301_000_000
GUILD = "demo-orders"
TTL_MS = 3_600_000
FIELDS = (
    "sender",
    "topics",
    "recipient_list",
    "payload",
    "format",
    "in_response_to",
    "thread",
    "conversation_id",
    "forward_header",
    "routing_slip",
    "message_history",
    "ttl",
    "is_error_message",
    "traceparent",
    "session_state",
    "topic_published_to",
    "enrich_with_history",
    "process_status",
    "origin_guild_stack",
    "id",
    "priority",
    "timestamp",
)

Delivery = tuple[str, bytes, float, dict[str, Any]]


@pytest.fixture(scope="module")
def records() -> list[KeyRecord]:
    return simulate_guild(seed=1, now_ms=NOW_MS)


@pytest.fixture(scope="module")
def keys(records: list[KeyRecord]) -> dict[str, KeyRecord]:
    return {record.key: record for record in records}


@pytest.fixture(scope="module")
def deliveries(records: list[KeyRecord]) -> list[Delivery]:
    """Every zset member as (key, member, score, parsed message)."""
    found: list[Delivery] = []
    for record in records:
        if record.type == "zset":
            assert isinstance(record.value, list)
            for member, score in record.value:
                found.append((record.key, member, score, json.loads(member)))
    return found


@pytest.fixture(scope="module")
def ids_by_key(deliveries: list[Delivery]) -> dict[str, set[int]]:
    found: dict[str, set[int]] = defaultdict(set)
    for key, _, _, message in deliveries:
        found[key].add(message["id"])
    return found


def _dumps(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


def _msg_key(message_id: int) -> str:
    return f"msg:{GUILD}:{message_id}"


def test_same_arguments_give_same_bytes(records: list[KeyRecord]) -> None:
    assert simulate_guild(seed=1, now_ms=NOW_MS) == records
    assert simulate_guild(seed=2, now_ms=NOW_MS) != records


def test_records_are_sorted_and_typed(records: list[KeyRecord]) -> None:
    assert [record.key for record in records] == sorted(r.key for r in records)
    for record in records:
        if record.type == "hash":
            assert isinstance(record.value, dict)
        else:
            assert isinstance(record.value, bytes | list)


def test_members_have_every_field_in_order(deliveries: list[Delivery]) -> None:
    for _, member, _, message in deliveries:
        assert tuple(message) == FIELDS
        assert _dumps(message) == member, "not compact or not round-trippable"
        assert b'"timestamp":' in member
        assert member.endswith(b".0}")


def test_zsets_are_sorted_by_score_then_member(records: list[KeyRecord]) -> None:
    for record in records:
        if record.type == "zset":
            assert isinstance(record.value, list)
            order = sorted(record.value, key=lambda pair: (pair[1], pair[0]))
            assert record.value == order, record.key


def test_id_parts_match_json_and_score(deliveries: list[Delivery]) -> None:
    for _, _, score, message in deliveries:
        parts = decode_id(message["id"])
        assert parts.priority == message["priority"]
        assert parts.timestamp == message["timestamp"] == score
        assert isinstance(message["timestamp"], float)
        assert message["timestamp"] <= NOW_MS


def test_ids_are_unique_per_message(deliveries: list[Delivery]) -> None:
    bodies: dict[int, set[bytes]] = defaultdict(set)
    for _, _, _, message in deliveries:
        bodies[message["id"]].add(_dumps({**message, "topic_published_to": None}))
    assert all(len(variants) == 1 for variants in bodies.values())


def test_every_priority_appears(deliveries: list[Delivery]) -> None:
    assert {message["priority"] for _, _, _, message in deliveries} == set(range(8))


def test_vip_orders_are_raised_to_priority_one(deliveries: list[Delivery]) -> None:
    raised = [
        message
        for key, _, _, message in deliveries
        if key == f"{GUILD}:orders.done" and message["priority"] == 1
    ]
    assert raised
    for message in raised:
        assert decode_id(message["thread"][0]).priority != 1


def test_multi_topic_message_and_its_msg_key(
    deliveries: list[Delivery], keys: dict[str, KeyRecord]
) -> None:
    copies: dict[int, dict[str, bytes]] = defaultdict(dict)
    for _, member, _, message in deliveries:
        copies[message["id"]][message["topic_published_to"]] = member
    several = {i: c for i, c in copies.items() if len(c) > 1 and _msg_key(i) in keys}
    assert several
    for message_id, by_topic in several.items():
        last = json.loads(next(iter(by_topic.values())))["topics"][-1]
        assert keys[_msg_key(message_id)].value == by_topic[last]


def test_self_ready_notifications(deliveries: list[Delivery]) -> None:
    ready = [m for k, _, _, m in deliveries if ":agent_self_inbox:" in k]
    assert len(ready) == 7
    for message in ready:
        (entry,) = message["message_history"]
        assert entry["origin"] == 0
        assert entry["processor"].endswith(":self")


def test_error_messages(deliveries: list[Delivery]) -> None:
    errors = [m for k, _, _, m in deliveries if k == f"{GUILD}:error_topic"]
    formats = {message["format"] for message in errors}
    assert "rustic_ai.core.agents.commons.message_formats.ErrorMessage" in formats
    assert all(message["is_error_message"] for message in errors)
    rejected = [m for k, _, _, m in deliveries if k == f"{GUILD}:orders.rejected"]
    assert rejected
    assert all(message["process_status"] == "error" for message in rejected)


def test_dead_letter_shape(
    deliveries: list[Delivery], ids_by_key: dict[str, set[int]]
) -> None:
    letters = [m for k, _, _, m in deliveries if k == f"{GUILD}:dead_letter_queue"]
    assert letters
    for letter in letters:
        assert letter["sender"] == {
            "id": "messaging_backend",
            "name": "MessagingBackend",
        }
        assert letter["topics"] == "dead_letter_queue"
        assert letter["topic_published_to"] is None
        assert (letter["format"], letter["priority"]) == ("generic_json", 4)
        assert letter["is_error_message"] is True
        assert decode_id(letter["id"]).machine_id == 0
        assert letter["thread"] == [letter["id"]]
        assert letter["message_history"] == []
        payload = letter["payload"]
        original = payload["original_message"]
        assert list(original)[-2:] == ["current_thread_id", "root_thread_id"]
        assert letter["in_response_to"] == payload["original_message_id"]
        assert original["id"] in ids_by_key[payload["original_topic"]]
        assert payload["client_id"].startswith(f"{GUILD}$")


def test_positions_are_stored_ids(
    keys: dict[str, KeyRecord], ids_by_key: dict[str, set[int]]
) -> None:
    prefix = f"eo:pos:{GUILD}$"
    positions = [record for key, record in keys.items() if key.startswith(prefix)]
    assert len(positions) > 20
    for record in positions:
        topic_key = record.key[len(prefix) :].split(":", 1)[1]
        assert isinstance(record.value, bytes)
        assert int(record.value) in ids_by_key[topic_key], record.key
        assert (record.ttl_ms, record.expire_at_ms) == (-1, None)


def test_oldest_msg_keys_have_expired(
    deliveries: list[Delivery], keys: dict[str, KeyRecord]
) -> None:
    missing = [m for _, _, _, m in deliveries if _msg_key(m["id"]) not in keys]
    assert missing
    assert max(message["timestamp"] for message in missing) <= NOW_MS - TTL_MS
    latest = sorted(deliveries, key=lambda delivery: delivery[2])[-5:]
    assert all(_msg_key(m["id"]) in keys for _, _, _, m in latest)


def test_msg_keys_carry_consistent_expiry(keys: dict[str, KeyRecord]) -> None:
    stored = [record for key, record in keys.items() if key.startswith("msg:")]
    assert stored
    for record in stored:
        assert record.expire_at_ms is not None
        assert record.expire_at_ms > NOW_MS
        assert record.ttl_ms == record.expire_at_ms - NOW_MS
        assert isinstance(record.value, bytes)
        message = json.loads(record.value)
        set_at = record.expire_at_ms - TTL_MS
        assert 0 <= set_at - message["timestamp"] <= len(message["topics"])
        assert record.key == _msg_key(message["id"])


def test_history_chains_are_consistent(
    deliveries: list[Delivery], ids_by_key: dict[str, set[int]]
) -> None:
    stored = set().union(*ids_by_key.values())
    for _, _, _, message in deliveries:
        history = message["message_history"]
        if history:
            assert history[-1]["result"] == message["id"]
        if message["in_response_to"] is not None:
            assert message["in_response_to"] in stored
        assert message["thread"][0] in stored
    assert max(len(m["message_history"]) for _, _, _, m in deliveries) >= 4


def test_pipeline_chain_keeps_trace_and_thread(deliveries: list[Delivery]) -> None:
    done = next(m for k, _, _, m in deliveries if k == f"{GUILD}:orders.done")
    processors = [entry["processor"] for entry in done["message_history"]]
    assert processors[-4:] == ["validate", "price", "reserve", "notify"]
    assert done["process_status"] == "completed"
    assert done["routing_slip"]["steps"]
    assert done["traceparent"].startswith("00-")


def test_state_hashes(keys: dict[str, KeyRecord]) -> None:
    for key in (f"managed_state:{GUILD}", f"managed_state:{GUILD}#inventory"):
        value = keys[key].value
        assert isinstance(value, dict)
        assert set(value) == {b"state", b"version", b"timestamp"}
        assert isinstance(json.loads(value[b"state"]), dict)
        assert int(value[b"version"]) > 0


def test_large_payload_present(deliveries: list[Delivery]) -> None:
    assert max(len(member) for _, member, _, _ in deliveries) > 20_000


def test_too_few_orders_are_refused() -> None:
    with pytest.raises(ValueError, match="orders=3"):
        simulate_guild(now_ms=NOW_MS, orders=3)


def test_short_ttl_still_consistent() -> None:
    records = simulate_guild(now_ms=NOW_MS, msg_ttl_s=60, orders=12)
    stored = [r for r in records if r.key.startswith("msg:")]
    assert stored
    assert all(r.ttl_ms <= 60_000 for r in stored)


def test_module_imports_no_display_or_redis() -> None:
    source = Path(__file__).parents[1] / "rdebug_nb" / "simulator.py"
    tree = ast.parse(source.read_text(encoding="utf-8"))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }
    assert not imported & {"redis", "plotly", "ipywidgets", "IPython"}

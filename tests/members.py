"""Stored messages for the tests, made from a real member of the capture.

A member is changed only where a test needs it (id, time, topic, one field), so
everything else stays exactly what RusticAI 1.4 wrote.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import redis

from rdebug_nb.ids import encode_id

TEMPLATE_KEY = "acme:support:echo:default_topic"


def template(capture: Path, key: str = TEMPLATE_KEY) -> dict[str, Any]:
    """The first member of a topic key of the capture, decoded."""
    with (capture / "keyspace.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if record["key"] == key:
                body: dict[str, Any] = json.loads(record["value"][0][0])
                return body
    raise LookupError(f"{key} is not in the capture")


def restamped(
    body: dict[str, Any],
    topic: str,
    timestamp_ms: int,
    sequence: int = 0,
    **fields: Any,
) -> dict[str, Any]:
    """A copy on ``topic`` with a fresh id and time (and ``fields`` replaced)."""
    priority = int(body["priority"])
    mid = int(encode_id(priority, timestamp_ms, machine_id=7, sequence=sequence % 4096))
    mid += (sequence // 4096) << 12  # more than 4096 in one ms: use machine bits
    return {
        **body,
        "topics": topic,
        "topic_published_to": topic,
        "thread": [mid],
        "message_history": [],
        "in_response_to": None,
        **fields,
        "id": mid,
        "timestamp": float(timestamp_ms),
    }


def encoded(body: dict[str, Any]) -> bytes:
    """Compact JSON with raw UTF-8, as RusticAI stores it."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def store(client: redis.Redis, guild_id: str, body: dict[str, Any]) -> bytes:
    """ZADD the message to its topic key (no PUBLISH); return the member."""
    member = encoded(body)
    client.zadd(f"{guild_id}:{body['topic_published_to']}", {member: body["timestamp"]})
    return member


def publish(client: redis.Redis, guild_id: str, body: dict[str, Any]) -> bytes:
    """What RusticAI does: ZADD to the topic key, then PUBLISH the same bytes."""
    member = store(client, guild_id, body)
    client.publish(f"{guild_id}:{body['topic_published_to']}", member)
    return member


def server_ms(client: redis.Redis) -> int:
    """The server's clock, Unix milliseconds (one value, also on a cluster)."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def copy_guild(
    client: redis.Redis, capture: Path, source: str, target: str | None = None
) -> int:
    """Write a capture guild's topic keys and ``msg:`` keys, under ``target``.

    The members stay byte for byte (they name topics, never their guild).
    Returns the number of keys written.
    """
    name = target if target is not None else source
    pipe = client.pipeline(transaction=False)
    written = 0
    with (capture / "keyspace.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            key = _renamed(record["key"], source, name)
            if key is None:
                continue
            if record["type"] == "zset":
                pipe.zadd(key, {m.encode(): s for m, s in record["value"]})
            else:
                pipe.set(key, record["value"].encode())
            written += 1
    pipe.execute()
    return written


def _renamed(key: str, source: str, target: str) -> str | None:
    for prefix in ("", "msg:"):
        if key.startswith(f"{prefix}{source}:"):
            return f"{prefix}{target}{key[len(prefix) + len(source) :]}"
    return None


def command(client: redis.Redis, *args: Any) -> Any:
    """Run a raw Redis command (``ACL``, ``DEBUG``, ``SHUTDOWN`` ...)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]

"""Discovery and loading never write: proved with the server's own command counters."""

from __future__ import annotations

import pytest
import redis

import rdebug_nb as rd


def command_calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def write_commands(client: redis.Redis, names: list[str]) -> set[str]:
    """Commands among ``names`` that the server flags as writes."""
    writes = set()
    for name in names:
        base = name.split("|")[0]
        docs = client.execute_command("COMMAND", "INFO", base)  # type: ignore[no-untyped-call]
        if "write" in docs[base]["flags"]:
            writes.add(name)
    return writes


def test_full_discovery_and_load_issue_no_write(capture_bus: rd.Bus) -> None:
    client = capture_bus.client
    before = command_calls(client)

    guilds = capture_bus.guilds()
    for guild in guilds["namespace"]:
        capture_bus.topics(guild)
        capture_bus.messages(guild)
        with pytest.warns(rd.TruncatedWarning):
            capture_bus.deliveries(guild, since="2026-12-03 12:29:00", limit=1)
    capture_bus.message("acme:support:echo", 7436657122877640704)

    after = command_calls(client)
    used = sorted(name for name, calls in after.items() if calls > before.get(name, 0))
    assert "scan" in used
    assert "zrange" in used
    assert "keys" not in used
    assert write_commands(client, used) == set()


def test_the_write_check_can_see_a_write(capture_bus: rd.Bus) -> None:
    assert write_commands(capture_bus.client, ["set", "zadd", "get"]) == {"set", "zadd"}

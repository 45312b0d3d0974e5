"""Shared fixtures: real Redis-protocol servers and the real RusticAI capture.

Two servers are started once per test session: the embedded Valkey (always) and
Debian's ``redis-server`` (when installed; required when the environment sets
``RDEBUG_REQUIRE_REDIS_SERVER=1``, as ``make test`` does). Each holds
the fixture capture in database 15; tests that write use :func:`fresh_bus`, an
empty database 1 flushed around each test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import rdebug_nb as rd
from rdebug_nb.server import EmbeddedServer
from tests.servers import RedisServerProcess, redis_server_available

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RDEBUG_SHARED", ROOT.parent / "shared"))
CAPTURE = SHARED / "fixtures" / "rusticai-1.4"
KEYSPACE = CAPTURE / "keyspace.jsonl"
SERVER_KINDS = ("valkey", "redis")


@pytest.fixture(scope="session")
def capture() -> Path:
    """The real RusticAI 1.4 capture directory."""
    if not KEYSPACE.exists():
        pytest.fail(f"the fixture capture is missing at {CAPTURE}; set RDEBUG_SHARED")
    return CAPTURE


@pytest.fixture(scope="session")
def valkey_url() -> Iterator[str]:
    with EmbeddedServer() as server:
        yield server.url


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not redis_server_available():
        pytest.skip("Debian's redis-server is not installed")
    server = RedisServerProcess(tmp_path_factory.mktemp("redis-server"))
    yield server.url
    server.stop()


@pytest.fixture(scope="session", params=SERVER_KINDS)
def server_url(request: pytest.FixtureRequest) -> str:
    """URL of database 0 of each server kind in turn."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture(scope="session")
def capture_bus(server_url: str, capture: Path) -> Iterator[rd.Bus]:
    """A Bus on database 15 of a server holding the whole capture.

    ``expiry="restart"`` gives every ``msg:`` key its recorded remaining time from
    now, so all 952 exist during the session, as right after the capture.
    """
    bus = rd.connect(server_url.replace("/0", "/15"), progress=False)
    bus.client.flushdb()
    report = bus.load_snapshot(capture / "keyspace.jsonl", expiry="restart", force=True)
    assert report.loaded == 1148
    yield bus
    bus.close()


@pytest.fixture
def fresh_bus(server_url: str) -> Iterator[rd.Bus]:
    """A Bus on an empty database (1), flushed before and after the test."""
    bus = rd.connect(server_url.replace("/0", "/1"), progress=False)
    bus.client.flushdb()
    yield bus
    bus.client.flushdb()
    bus.close()

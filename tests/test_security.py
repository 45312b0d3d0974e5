"""Least privilege, TLS and secrets, on real servers.

* Everything that reads works as an ACL user holding exactly the rules the Notes
  of :func:`rdebug_nb.connect` document, and the server's ACL log shows that not
  one command was refused; a write as that user fails with a message naming the
  permission it needs.
* ``rediss://`` with a private CA and client certificates (query options
  ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``).
* Passwords never appear in logs, warnings, exceptions, reprs, the report page
  or the outputs of the executed notebook.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import pytest
import redis

import rdebug_nb as rd
from rdebug_nb.report import build_report, run_notebook
from rdebug_nb.tail import Tail
from tests.members import command, publish, restamped, server_ms, template
from tests.servers import RedisServerProcess, redis_server_available
from tests.tls import Certificates, TlsRedisServer, make_certificates

pytestmark = pytest.mark.redis_server

ADMIN_PASSWORD = "adm1n-Pa55-n3ver-shown"
READER_PASSWORD = "r3ader-Pa55-n3ver-shown"
WRONG_PASSWORD = "wr0ng-Pa55-n3ver-shown"
SECRETS = (ADMIN_PASSWORD, READER_PASSWORD, WRONG_PASSWORD)
GUILD = "acme:support:echo"
WAIT = 30.0


def documented_rules() -> list[str]:
    """The ACL rules in the Notes of rdebug_nb.connect (doc and test agree)."""
    doc = rd.connect.__doc__ or ""
    start = doc.index("ACL SETUSER reader")
    words = doc[start : doc.index("\n\n", start)].split()[3:]
    return [f">{READER_PASSWORD}" if word == ">password" else word for word in words]


def url_of(server: RedisServerProcess, user: str = "", password: str = "") -> str:
    return f"redis://{user}:{password}@127.0.0.1:{server.port}/0"


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.01)


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory, capture: Path) -> Iterator[str]:
    """A redis-server with a password on ``default``, the capture and a reader."""
    if not redis_server_available():
        pytest.skip("Debian's redis-server is not installed")
    server = RedisServerProcess(tmp_path_factory.mktemp("locked"))
    redis.Redis(port=server.port).config_set("requirepass", ADMIN_PASSWORD)
    with rd.connect(url_of(server, password=ADMIN_PASSWORD), progress=False) as bus:
        bus.load_snapshot(capture / "keyspace.jsonl", expiry="restart", force=True)
        command(bus.client, "ACL", "SETUSER", "reader", *documented_rules())
    yield url_of(server)
    server.stop()


@pytest.fixture
def admin(locked: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(admin_url(locked))
    client.acl_log_reset()
    yield client
    client.close()


def reader_url(locked: str) -> str:
    return locked.replace("://:@", f"://reader:{READER_PASSWORD}@")


def admin_url(locked: str) -> str:
    return locked.replace("://:@", f"://:{ADMIN_PASSWORD}@")


# -- least privilege ----------------------------------------------------------


def test_the_documented_rules_grant_no_write(admin: redis.Redis) -> None:
    rules = documented_rules()

    assert rules[:3] == ["on", f">{READER_PASSWORD}", "~*"]
    assert "-@all" in rules
    assert not [rule for rule in rules if "write" in rule or rule == "+@all"]
    for refused in (["SET", "k", "v"], ["DEL", "k"], ["CONFIG", "GET", "*"]):
        answer = command(admin, "ACL", "DRYRUN", "reader", *refused)
        assert b"no permissions" in answer, refused
    allowed = command(admin, "ACL", "DRYRUN", "reader", "ZRANGE", "k", 0, 1)
    assert allowed == b"OK"


def test_everything_that_reads_works_as_the_reader(
    locked: str, admin: redis.Redis, capture: Path, tmp_path: Path
) -> None:
    with rd.connect(reader_url(locked), progress=False) as reader:
        guilds = reader.guilds()
        frames = {g: reader.messages(g) for g in guilds["namespace"]}
        topics = reader.topics(GUILD)
        found = reader.message(GUILD, frames[GUILD]["id"].iloc[0])
        with pytest.warns(rd.TruncatedWarning):
            reader.deliveries(GUILD, since="2026-12-03 12:29", limit=3)
        saved = reader.save_snapshot(tmp_path / "as-reader.jsonl", now_ms=1)
        received = tail_one_message(reader, admin, capture)

    assert int(guilds["deliveries"].sum()) == 1058
    assert sum(map(len, frames.values())) == 952
    assert len(topics) == 4
    assert found.has_message_key
    assert saved == 1148
    assert received.topic == "default_topic"
    assert admin.acl_log() == []  # no command was refused, not even an ignored one


def tail_one_message(bus: rd.Bus, admin: redis.Redis, capture: Path) -> Any:
    """Publish one message as the admin and receive it on a tail of ``bus``."""
    with Tail(bus, GUILD) as tail:
        wait_for(lambda: tail.state == "live", "the subscription")
        body = restamped(template(capture), "default_topic", server_ms(admin))
        publish(admin, GUILD, body)
        wait_for(lambda: tail.counts.received == 1, "the message")
        return tail.messages[0]


def test_a_write_as_the_reader_fails_and_names_the_permission(
    locked: str, admin: redis.Redis, capture: Path
) -> None:
    keys = admin.dbsize()

    with rd.connect(reader_url(locked), progress=False) as reader:
        with pytest.raises(rd.PermissionDenied) as snapshot:
            reader.load_snapshot(capture / "keyspace.jsonl", replace=True, force=True)
        with pytest.raises(rd.PermissionDenied) as demo:
            reader.load_demo(guild_id="never-written", force=True)

    for caught in (snapshot, demo):
        message = str(caught.value)
        assert "+@write" in message
        assert "no permissions to run the" in message
        assert "reader:***@" in message
    assert admin.dbsize() == keys
    assert admin.exists("never-written:orders.in") == 0


# -- TLS ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory, certs: Certificates, capture: Path
) -> Iterator[TlsRedisServer]:
    if not redis_server_available():
        pytest.skip("Debian's redis-server is not installed")
    server = TlsRedisServer(tmp_path_factory.mktemp("tls"), certs)
    with rd.connect(server.url, progress=False) as bus:
        bus.load_snapshot(capture / "keyspace.jsonl", expiry="restart", force=True)
    yield server
    server.stop()


def test_rediss_with_a_client_certificate_reads_like_plain_redis(
    tls_server: TlsRedisServer, capture_bus: rd.Bus
) -> None:
    with rd.connect(tls_server.url, progress=False) as bus:
        assert bus.url.startswith("rediss://")
        pd.testing.assert_frame_equal(bus.guilds(), capture_bus.guilds())
        pd.testing.assert_frame_equal(
            bus.messages("faulty-workers"), capture_bus.messages("faulty-workers")
        )


def test_the_tail_works_over_tls(tls_server: TlsRedisServer, capture: Path) -> None:
    with rd.connect(tls_server.url, progress=False) as bus:
        received = tail_one_message(bus, bus.client, capture)
        stored = bus.client.zrange(f"{GUILD}:default_topic", -1, -1)

    assert received.raw == stored[0]


def test_without_a_client_certificate_the_server_refuses(
    tls_server: TlsRedisServer,
) -> None:
    url = tls_server.url_with(None, None)

    with pytest.raises(rd.ConnectionFailed, match="TLS"):
        rd.connect(url, timeout=2, retries=0)


def test_a_certificate_of_another_ca_is_refused_both_ways(
    tls_server: TlsRedisServer, tmp_path: Path
) -> None:
    other = make_certificates(tmp_path / "other-ca")
    foreign_client = tls_server.url_with(other.client_cert, other.client_key)
    wrong_ca = tls_server.url.replace(str(tls_server.certs.ca), str(other.ca))

    with pytest.raises(rd.ConnectionFailed, match="cannot reach"):
        rd.connect(foreign_client, timeout=2, retries=0)
    with pytest.raises(rd.ConnectionFailed, match="certificate verify failed"):
        rd.connect(wrong_ca, timeout=2, retries=0)


def test_plain_redis_on_the_tls_port_fails_within_the_timeout(
    tls_server: TlsRedisServer,
) -> None:
    url = f"redis://127.0.0.1:{tls_server.port}/0"

    with pytest.raises(rd.ConnectionFailed, match="cannot reach"):
        rd.connect(url, timeout=1, retries=0)


def test_tls_options_on_a_redis_url_say_that_rediss_is_needed(
    tls_server: TlsRedisServer,
) -> None:
    url = tls_server.url.replace("rediss://", "redis://")

    with pytest.raises(rd.ConnectionFailed, match=r"rediss:// \(needed for ssl_"):
        rd.connect(url, retries=0)


# -- secrets ------------------------------------------------------------------


class Traces:
    """Every text a run showed, by channel."""

    def __init__(self) -> None:
        self.texts: dict[str, list[str]] = {}
        self.refused: Sequence[object] = ()

    def add(self, channel: str, text: str) -> None:
        self.texts.setdefault(channel, []).append(text)

    def failure(self, call: Callable[[], object]) -> None:
        """Run ``call``, which must raise an RdebugError; keep all its text."""
        with pytest.raises(rd.RdebugError) as caught:
            call()
        self.add("exceptions", "".join(traceback.format_exception(caught.value)))
        self.add("exceptions", repr(caught.value))


@pytest.fixture(scope="module")
def traces(
    locked: str, capture: Path, tmp_path_factory: pytest.TempPathFactory
) -> Traces:
    """One run of everything a user does, with passwords in the URLs."""
    found = Traces()
    folder = tmp_path_factory.mktemp("report")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with logged(found, "logs"):
            run_everything(found, locked, capture)
        admin = redis.Redis.from_url(admin_url(locked))
        admin.acl_log_reset()
        with logged(found, "report logs"):
            report_run(found, reader_url(locked), folder)
        found.refused = admin.acl_log()
        admin.close()
    found.texts["warnings"] = [str(w.message) for w in caught]
    return found


@contextmanager
def logged(found: Traces, channel: str) -> Iterator[None]:
    """Record every log line (all loggers, DEBUG and up) on ``channel``."""
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    level, root.level = root.level, logging.DEBUG
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        found.add(channel, log.getvalue())


def run_everything(found: Traces, locked: str, capture: Path) -> None:
    url = reader_url(locked)
    in_query = locked.replace("://:@", "://reader@") + f"?password={READER_PASSWORD}"
    admin = redis.Redis.from_url(admin_url(locked))
    admin.zadd(f"{GUILD}:heartbeat", {b"not a message": 1.0})
    for address in (url, in_query):
        with rd.connect(address, progress=False) as bus:
            use(bus, found, admin, capture)
    admin.zrem(f"{GUILD}:heartbeat", b"not a message")
    admin.close()
    unreachable = url.replace(f":{urlsplit(locked).port}/", ":1/")
    wrong = url.replace(READER_PASSWORD, WRONG_PASSWORD)
    found.failure(lambda: rd.connect(unreachable, retries=0, timeout=1))
    found.failure(lambda: rd.connect(wrong, retries=0))
    found.failure(lambda: rd.connect(in_query + "&bogus_option=1"))


def use(bus: rd.Bus, found: Traces, admin: redis.Redis, capture: Path) -> None:
    for guild in bus.guilds()["namespace"]:
        frame = bus.messages(guild)
        found.add("reprs", frame.to_string())
    with Tail(bus, GUILD) as tail:
        wait_for(lambda: tail.state == "live", "the subscription")
        publish(admin, GUILD, restamped(template(capture), "x", server_ms(admin)))
        wait_for(lambda: tail.counts.received == 1, "the message")
        found.add("reprs", f"{tail!r} {tail.status} {tail.messages!r}")
    found.add("reprs", f"{bus!r} {bus} {bus.url} {bus.client!r}")
    found.failure(lambda: bus.messages("no-such-guild"))
    found.failure(lambda: bus.message(GUILD, 2824971229302112256))
    found.failure(
        lambda: bus.load_snapshot(capture / "keyspace.jsonl", replace=True, force=True)
    )


def report_run(found: Traces, url: str, folder: Path) -> None:
    """build_report (which must leave no notebook behind), then one notebook kept
    on purpose, to read what an executed notebook file holds."""
    parameters = {"redis_url": url, "guild_id": GUILD}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(folder))
        report = build_report(
            ["01_guild_overview.ipynb"], folder / "r.html", parameters
        )
    found.add("report page", report.path.read_text(encoding="utf-8"))
    assert list(folder.rglob("*.ipynb")) == [], "build_report left a notebook behind"
    run_notebook("01_guild_overview.ipynb", parameters, out=folder / "kept.ipynb")
    for path in folder.rglob("*.ipynb"):
        notebook = json.loads(path.read_text(encoding="utf-8"))
        found.add("notebook file", json.dumps(notebook))
        for cell in notebook["cells"]:
            found.add("notebook outputs", json.dumps(cell.get("outputs", [])))


CHANNELS = (
    "logs",
    "warnings",
    "exceptions",
    "reprs",
    "report page",
    "notebook outputs",
    "report logs",
)


@pytest.mark.parametrize("channel", CHANNELS)
def test_no_password_is_shown(traces: Traces, channel: str) -> None:
    texts = traces.texts.get(channel, [])

    assert texts, f"nothing was recorded on {channel}"
    leaks = [s for s in SECRETS for text in texts if s in text]
    assert leaks == []


def test_the_report_builds_as_the_reader_with_nothing_refused(
    traces: Traces,
) -> None:
    assert "Guild overview" in traces.texts["report page"][0]
    assert traces.refused == []


def test_each_channel_saw_the_url_or_the_data(traces: Traces) -> None:
    assert "reader:***@" in " ".join(traces.texts["reprs"])
    assert "reader:***@" in " ".join(traces.texts["exceptions"])
    assert "password=***" in " ".join(traces.texts["exceptions"])
    assert any("skipped 1 unreadable" in text for text in traces.texts["warnings"])
    assert "reader:***@" in traces.texts["report page"][0]
    assert "acme:support:echo" in " ".join(traces.texts["notebook outputs"])


def test_the_executed_notebook_file_holds_no_password(traces: Traces) -> None:
    files = traces.texts["notebook file"]

    assert files
    assert [s for s in SECRETS for text in files if s in text] == []

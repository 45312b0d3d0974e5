"""Recording live traffic to a file, across a server restart, loses nothing."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

import rdebug_nb as rd
from rdebug_nb.cli import main
from rdebug_nb.recording import record
from tests.servers import RedisServerProcess, redis_server_available
from tests.test_tail import GUILD, batch, publish, publish_through_outages, restart

DURABLE = ("--appendonly", "yes", "--appendfsync", "always")


def ids_in(path: Path) -> list[int]:
    return [json.loads(line)["id"] for line in path.read_bytes().splitlines()]


@pytest.mark.redis_server
def test_a_recording_across_a_server_restart_holds_every_message_once(
    tmp_path: Path,
) -> None:
    if not redis_server_available():
        pytest.skip("Debian's redis-server is not installed")
    server = RedisServerProcess(tmp_path / "redis", *DURABLE)
    bus = rd.connect(server.url, progress=False)
    members = batch(bus.client, 2000)
    holder: dict[str, RedisServerProcess] = {"server": server}

    def traffic(seconds: float) -> None:
        """Publish through a restart while the recording runs."""
        publisher = threading.Thread(
            target=publish_through_outages, args=(server.url, members, 800)
        )
        publisher.start()
        time.sleep(0.8)
        holder["server"].stop()
        time.sleep(0.3)
        holder["server"] = restart(holder["server"], *DURABLE)
        publisher.join()
        time.sleep(seconds)

    out = tmp_path / "recorded.jsonl"
    done = record(bus, GUILD, out, duration=2.0, sleep=traffic)

    expected = {json.loads(member)["id"] for _, member in members}
    assert sorted(ids_in(out)) == sorted(expected)
    assert done.messages == 2000
    assert done.gaps
    assert sum(gap.count for gap in done.gaps) > 0
    assert done.reconciliation.ok
    assert rd.read_metadata(out).messages == 2000
    assert not (tmp_path / "recorded.jsonl.part").exists()
    bus.close()
    holder["server"].stop()


def test_the_record_command_prints_counts(
    fresh_bus: rd.Bus,
    server_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    members = batch(fresh_bus.client, 50)
    url = server_url.replace("/0", "/1")
    out = tmp_path / "not-yet-made" / "r.jsonl"  # the command makes the folder
    sender = threading.Timer(1.0, publish, args=(fresh_bus.client, GUILD, members))

    sender.start()
    status = main(
        [
            "record",
            "--redis-url",
            url,
            "--guild",
            GUILD,
            "--duration",
            "3s",
            "--out",
            str(out),
        ]
    )
    sender.join()

    printed = capsys.readouterr().out
    assert status == 0
    assert "50 messages (50 deliveries)" in printed
    assert "complete" in printed
    assert len(ids_in(out)) == 50
    back = rd.read_jsonl(out)
    assert [int(i) for i in back["id"]] == ids_in(out)


def test_an_interrupt_ends_the_recording_early_and_keeps_it(
    fresh_bus: rd.Bus, tmp_path: Path
) -> None:
    def interrupted(seconds: float) -> None:
        publish(fresh_bus.client, GUILD, batch(fresh_bus.client, 20))
        time.sleep(1.0)
        raise KeyboardInterrupt

    done = record(
        fresh_bus, GUILD, tmp_path / "early.jsonl", duration=60, sleep=interrupted
    )

    assert done.messages == 20
    assert len(ids_in(tmp_path / "early.jsonl")) == 20
    assert not (tmp_path / "early.jsonl.part").exists()


def test_recording_nothing_says_what_to_check(
    fresh_bus: rd.Bus,
    server_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = server_url.replace("/0", "/1")
    out = tmp_path / "r.jsonl"

    options = ["--guild", "nope", "--duration", "1s", "--out", str(out)]
    status = main(["record", "--redis-url", url, *options])

    printed = capsys.readouterr()
    assert status == 0
    assert "0 messages" in printed.out
    assert "nothing arrived on 'nope'; check --guild" in printed.err
    assert ids_in(out) == []

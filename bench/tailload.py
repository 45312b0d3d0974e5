"""The live tail under a publish-rate ramp, in two processes.

``python -m bench.tailload tail <url> <guild>``
    starts :class:`rdebug_nb.tail.Tail` on the guild, prints ``ready``, then
    waits for a line ``<published>`` on stdin, waits until that many deliveries
    arrived (or a time-out), and prints one JSON line: counts, gaps, the
    reconciliation against the topic keys and how long it took to catch up.
``python -m bench.tailload publish <url> <start> <top> <ramp_s> <hold_s>``
    publishes cycled real-shaped members the way RusticAI does (``ZADD`` into the
    topic key, then ``PUBLISH`` on the channel of the same name), at a rate that
    rises linearly from ``start`` to ``top`` messages/s over ``ramp_s`` seconds
    and stays at ``top`` for ``hold_s`` seconds; prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import redis

from bench.data import read_guild

_TICK = 0.01
_CATCH_UP_TIMEOUT = 60.0


def publish(
    url: str, start: float, top: float, ramp_s: float, hold_s: float
) -> dict[str, Any]:
    """Publish on the ramp; return how many were sent and the rates reached."""
    client = redis.Redis.from_url(url)
    guild = read_guild()
    now_ms = int(time.time() * 1000)
    members = guild.members(10**9, offset_ms=now_ms - guild.first_ms)
    sent = 0
    began = time.perf_counter()
    hold_began, hold_sent = began + ramp_s, 0
    while (now := time.perf_counter()) < began + ramp_s + hold_s:
        due = _due(now - began, start, top, ramp_s)
        batch = [next(members) for _ in range(max(0, due - sent))]
        if batch:
            _send(client, guild.name, batch)
            sent += len(batch)
            if now >= hold_began:
                hold_sent += len(batch)
        time.sleep(_TICK)
    elapsed = time.perf_counter() - began
    return {
        "published": sent,
        "seconds": elapsed,
        "hold_rate": hold_sent / hold_s if hold_s else 0.0,
        "top_rate": top,
    }


def _due(elapsed: float, start: float, top: float, ramp_s: float) -> int:
    """Messages that should have been sent after ``elapsed`` seconds."""
    if elapsed <= ramp_s:
        return int(start * elapsed + (top - start) * elapsed**2 / (2 * ramp_s))
    ramp_total = (start + top) / 2 * ramp_s
    return int(ramp_total + top * (elapsed - ramp_s))


def _send(client: redis.Redis, name: str, batch: list[tuple[str, bytes, int]]) -> None:
    pipe = client.pipeline(transaction=False)
    for topic, member, score in batch:
        key = f"{name}:{topic}"
        pipe.zadd(key, {member: score})
        pipe.publish(key, member)
    pipe.execute()


def tail(url: str, guild: str) -> dict[str, Any]:
    """Tail the guild until told how many were published; return what it saw."""
    from bench.probe import _reset_peak, _status_kb
    from rdebug_nb.tail import Tail

    _reset_peak()
    before = _status_kb("VmRSS")
    client = redis.Redis.from_url(url)
    with Tail(client, guild) as watcher:
        _wait_live(watcher)
        print("ready", flush=True)
        published = int(sys.stdin.readline())
        told = time.perf_counter()
        while watcher.counts.received < published:
            if time.perf_counter() - told > _CATCH_UP_TIMEOUT:
                break
            time.sleep(0.05)
        catch_up = time.perf_counter() - told
        counts = watcher.counts
        check = watcher.reconcile()
        gaps = watcher.gaps
    return {
        "published": published,
        "received": counts.received,
        "backfilled": counts.backfilled,
        "duplicates": counts.duplicates,
        "dropped": counts.dropped,
        "gaps": len(gaps),
        "gap_filled": sum(gap.count for gap in gaps),
        "not_fetched": sum(gap.not_fetched for gap in gaps),
        "reconciled": bool(check.ok),
        "reconciled_window": check.stored,
        "catch_up_seconds": catch_up,
        "peak_bytes": max(_status_kb("VmHWM") - before, 0) * 1024,
    }


def _wait_live(watcher: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while watcher.state != "live":
        if time.monotonic() > deadline:
            raise RuntimeError(f"tail did not go live: {watcher.status}")
        time.sleep(0.02)


def main(argv: list[str]) -> int:
    if argv[0] == "publish":
        url, start, top, ramp_s, hold_s = argv[1:6]
        result = publish(url, float(start), float(top), float(ramp_s), float(hold_s))
    else:
        result = tail(argv[1], argv[2])
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main(sys.argv[1:]))

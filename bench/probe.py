"""One measurement in a fresh process: ``python -m bench.probe '<json spec>'``.

Each measurement runs in its own interpreter so that its peak memory is its own:
the peak resident set size is reset (``/proc/self/clear_refs``) right before the
measured call and read (``VmHWM``) right after it. A warm-up call on a small
database first pays the one-time costs (imports, caches) outside the timing.
The result is one JSON line on stdout.
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import redis

import rdebug_nb as rd
from bench import reference
from bench.data import Guild, read_guild


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


LAST_CPU: list[float] = [0.0]


def measure(call: Callable[[], Any]) -> tuple[Any, float, int]:
    """Run ``call`` once; return its result, seconds and peak extra bytes.

    The CPU seconds of this process during the call go to ``LAST_CPU[0]``.
    """
    gc.collect()
    exact = _reset_peak()
    before = _status_kb("VmRSS")
    cpu = time.process_time()
    start = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - start
    LAST_CPU[0] = time.process_time() - cpu
    peak = _status_kb("VmHWM") if exact else _maxrss_kb()
    return result, seconds, max(peak - before, 0) * 1024


def _maxrss_kb() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _keys(client: redis.Redis, guild: str) -> list[str]:
    found = client.scan_iter(match=f"{guild}:*", _type="zset", count=1000)
    return sorted(key.decode() for key in found)


def _load(spec: dict[str, Any], url: str) -> Callable[[], Any]:
    op, guild = spec["op"], spec["guild"]
    if op in ("floor", "naive"):
        client = redis.Redis.from_url(url, socket_timeout=None)
        keys = _keys(client, guild)
        load = reference.floor_load if op == "floor" else reference.naive_load
        return lambda: load(client, keys)
    bus = rd.connect(url, progress=False)
    if op == "topic":
        return lambda: bus.messages(guild, topics=[spec["topic"]])
    if op == "window":
        since, until = spec["since"], spec["until"]
        return lambda: bus.messages(
            guild, topics=[spec["topic"]], since=since, until=until
        )
    return lambda: bus.messages(guild)


def run_load(spec: dict[str, Any]) -> dict[str, Any]:
    """Time a load (bus, floor, naive, topic, window) after a warm-up load."""
    _load(spec, spec["warm_url"])()
    frame, seconds, peak = measure(_load(spec, spec["url"]))
    return {
        "seconds": seconds,
        "peak_bytes": peak,
        "rows": len(frame),
        "cpu_seconds": LAST_CPU[0],
    }


def run_graph(spec: dict[str, Any]) -> dict[str, Any]:
    """Time ``flow_graph`` or ``lineage_graph`` on a loaded message frame."""
    try:
        from rdebug_nb import graph
    except ImportError as err:
        return {"missing": f"rdebug_nb.graph: {err}"}
    build = getattr(graph, spec["op"], None)
    if build is None:
        return {"missing": f"rdebug_nb.graph has no {spec['op']}"}
    build(rd.connect(spec["warm_url"], progress=False).messages(spec["guild"]))
    bus = rd.connect(spec["url"], progress=False)
    msgs, load_seconds, _ = measure(lambda: bus.messages(spec["guild"]))
    graph_, seconds, peak = measure(lambda: build(msgs))
    return {
        "seconds": seconds,
        "peak_bytes": peak,
        "rows": len(msgs),
        "load_seconds": load_seconds,
        "nodes": graph_.number_of_nodes(),
        "edges": graph_.number_of_edges(),
    }


def run_refresh(spec: dict[str, Any]) -> dict[str, Any]:
    """Load a guild, publish ``extra`` more members, time ``bus.refresh``."""
    bus = rd.connect(spec["url"], progress=False)
    refresh = getattr(bus, "refresh", None)
    if refresh is None:
        return {"missing": "Bus.refresh does not exist"}
    guild = read_guild()
    msgs, load_seconds, _ = measure(lambda: bus.messages(spec["guild"]))
    added = _publish(bus.client, guild, spec["count"], spec["extra"])
    try:
        fresh, seconds, peak = measure(lambda: refresh(msgs))
    finally:
        _unpublish(bus.client, guild, added)
    return {
        "seconds": seconds,
        "peak_bytes": peak,
        "rows": len(fresh),
        "new_rows": len(fresh) - len(msgs),
        "load_seconds": load_seconds,
    }


def _publish(
    client: redis.Redis, guild: Guild, count: int, extra: int
) -> list[tuple[str, bytes]]:
    members = list(guild.members(count + extra))[count:]
    pipe = client.pipeline(transaction=False)
    for topic, member, score in members:
        pipe.zadd(f"{guild.name}:{topic}", {member: score})
    pipe.execute()
    return [(f"{guild.name}:{topic}", member) for topic, member, _ in members]


def _unpublish(
    client: redis.Redis, guild: Guild, added: list[tuple[str, bytes]]
) -> None:
    pipe = client.pipeline(transaction=False)
    for key, member in added:
        pipe.zrem(key, member)
    pipe.execute()


def run_decode_ids(spec: dict[str, Any]) -> dict[str, Any]:
    """Time ``rd.decode_ids`` on ``count`` random RusticAI ids (numpy uint64).

    The warm-up decodes the same ids once, so the timed call measures decoding
    on memory the process already has (fresh memory is expensive in a VM and
    would dominate a single call).
    """
    ids = _random_ids(spec["count"])
    rd.decode_ids(ids)
    frame, seconds, peak = measure(lambda: rd.decode_ids(ids))
    return {"seconds": seconds, "peak_bytes": peak, "rows": len(frame)}


def _random_ids(count: int) -> np.ndarray[Any, np.dtype[np.uint64]]:
    rng = np.random.default_rng(0)
    priority = rng.integers(0, 8, count, dtype=np.uint64) << np.uint64(61)
    offset = rng.integers(0, 1 << 38, count, dtype=np.uint64) << np.uint64(22)
    machine = rng.integers(0, 256, count, dtype=np.uint64) << np.uint64(12)
    sequence = rng.integers(0, 4096, count, dtype=np.uint64)
    ids: np.ndarray[Any, np.dtype[np.uint64]] = priority | offset | machine | sequence
    return ids


OPS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "bus": run_load,
    "floor": run_load,
    "naive": run_load,
    "topic": run_load,
    "window": run_load,
    "flow_graph": run_graph,
    "lineage_graph": run_graph,
    "refresh": run_refresh,
    "decode_ids": run_decode_ids,
}


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    result = OPS[spec["op"]](spec)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

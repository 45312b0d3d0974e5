"""The result tables of a run, in Markdown."""

from __future__ import annotations

import math
from typing import Any

from bench.run import MB, Plan, Results, Sample, lines

LOADS = ("bus", "floor", "naive")
"""Load measurements, per size."""
NAMES = {"bus": "bus.messages()", "floor": "floor", "naive": "naive"}


def expected_rows(plan: Plan) -> list[str]:
    """The first cell of every row a complete table of ``plan`` has."""
    loads = [f"{NAMES[load]} @ {size:,}" for size in plan.sizes for load in LOADS]
    others = [
        f"{name} @ {size:,}"
        for size in plan.sizes
        for name in ("one-minute window", "whole topic", "refresh")
    ]
    others += [
        f"{name} @ {plan.graph_size:,}" for name in ("flow_graph", "lineage_graph")
    ]
    others += [f"decode_ids @ {plan.ids:,}", f"tail @ {plan.tail[1]:,.0f}/s"]
    return loads + others + [target for target, _ in TARGETS]


TARGETS = (
    ("load within 1.5x the floor", 1.5),
    ("load at least 10x faster than naive", 10.0),
    ("load peak memory at most 2.5x raw bytes", 2.5),
    ("cost linear: large at most 3.3x small", 3.3),
    ("one-minute window at least 20x cheaper than its topic", 20.0),
    ("decode_ids at least 50 million ids/s", 50e6),
    ("flow and lineage graphs under 3x the load (report only)", 3.0),
    ("tail keeps up, nothing lost (report only)", 0.0),
)


def render(results: Results) -> str:
    """Machine, loads, other measurements and targets, as Markdown."""
    parts = [
        _machine(results),
        "### Loads\n\n" + _loads(results),
        "### Other measurements\n\n" + _others(results),
        "### Targets\n\n" + _targets(results),
    ]
    if results.plan.name == "quick":
        parts.append(
            "Quick run: its sizes are far below the 100,000 and 300,000 messages the "
            "targets are about; `make bench` judges them."
        )
    if results.notes:
        parts.append("Notes: " + "; ".join(results.notes) + ".")
    if results.errors:
        parts.append("Failed measurements: " + "; ".join(results.errors) + ".")
    return "\n\n".join(parts) + "\n"


def _machine(results: Results) -> str:
    facts = ", ".join(f"{key}: {value}" for key, value in results.machine.items())
    return f"Run `{results.plan.name}` — {facts}."


def _loads(results: Results) -> str:
    head = [
        ("load @ stored messages", "raw MB", "median s", "rounds", "vs floor",
         "CPU s", "CPU vs floor", "peak MB", "peak / raw"),
        ("---",) + ("---:",) * 8,
    ]  # fmt: skip
    rows = []
    sizes = sorted({size for (op, size) in results.samples if op in LOADS})
    for size in sizes:
        floor = results.get("floor", size)
        floor_cpu = _cpu(floor)
        raw = results.raw_bytes.get(size, 0)
        for op in LOADS:
            sample = results.get(op, size)
            if sample is None:
                continue
            rows.append(
                (
                    f"{NAMES[op]} @ {size:,}",
                    f"{raw / MB:,.0f}",
                    _seconds(sample.median),
                    str(len(sample.seconds)),
                    _ratio(sample.median, floor.median if floor else math.nan),
                    _seconds(_cpu(sample)),
                    _ratio(_cpu(sample), floor_cpu),
                    f"{sample.peak / MB:,.0f}",
                    _ratio(sample.peak, raw),
                )
            )
    return lines(head + rows)


def _others(results: Results) -> str:
    head: list[tuple[str, ...]] = [
            ("measurement @ size", "median s", "rounds", "peak MB", "result"),
            ("---", "---:", "---:", "---:", "---")]  # fmt: skip
    rows: list[tuple[str, ...]] = []
    for size in results.plan.sizes:
        rows += _window_rows(results, size)
        rows += _refresh_rows(results, size)
    for op in ("flow_graph", "lineage_graph"):
        rows.append(_graph_row(results, op, results.plan.graph_size))
    rows.append(_ids_row(results))
    rows.append(_tail_row(results))
    return lines(head + rows)


def _row(label: str, sample: Sample | None, result: str) -> tuple[str, ...]:
    if sample is None or sample.missing:
        reason = sample.missing if sample else "not measured"
        return (label, "n/a", "", "", reason)
    return (
        label,
        _seconds(sample.median),
        str(len(sample.seconds)),
        f"{sample.peak / MB:,.0f}",
        result,
    )


def _window_rows(results: Results, size: int) -> list[tuple[str, ...]]:
    window, topic = results.get("window", size), results.get("topic", size)
    name = window.extra.get("topic", "?") if window else "?"
    ratio = _ratio(topic.median, window.median) if topic and window else "n/a"
    rows = _first(window, "rows")
    return [
        _row(f"one-minute window @ {size:,}", window, f"{rows} messages of `{name}`"),
        _row(
            f"whole topic @ {size:,}",
            topic,
            f"{_first(topic, 'rows')} messages; window is {ratio} cheaper",
        ),
    ]


def _refresh_rows(results: Results, size: int) -> list[tuple[str, ...]]:
    sample, load = results.get("refresh", size), results.get("bus", size)
    new = _first(sample, "new_rows")
    ratio = _ratio(load.median, sample.median) if sample and load else "n/a"
    text = f"{new} new messages merged; {ratio} cheaper than a full load"
    return [_row(f"refresh @ {size:,}", sample, text)]


def _graph_row(results: Results, op: str, size: int) -> tuple[str, ...]:
    sample = results.get(op, size)
    if sample is None or sample.missing or not sample.seconds:
        return _row(f"{op} @ {size:,}", sample, "")
    load = statistics_median(sample.extra.get("load_seconds", []))
    nodes, edges = _first(sample, "nodes"), _first(sample, "edges")
    text = f"{_ratio(sample.median, load)} the load; {nodes} nodes, {edges} edges"
    return _row(f"{op} @ {size:,}", sample, text)


def _ids_row(results: Results) -> tuple[str, ...]:
    count = results.plan.ids
    sample = results.get("decode_ids", count)
    rate = count / sample.median if sample and sample.seconds else math.nan
    return _row(f"decode_ids @ {count:,}", sample, f"{rate / 1e6:,.0f} million ids/s")


def _tail_row(results: Results) -> tuple[str, ...]:
    top = results.plan.tail[1]
    sample = results.get("tail", int(top))
    label = f"tail @ {top:,.0f}/s"
    if sample is None or sample.missing:
        return _row(label, sample, "")
    pub, seen = sample.extra["publisher"], sample.extra["tail"]
    lost = pub["published"] - seen["received"]
    text = (
        f"published {pub['published']:,} (held {pub['hold_rate']:,.0f}/s for "
        f"{results.plan.tail[3]:.0f} s), received {seen['received']:,}, lost {lost:,}, "
        f"{seen['gaps']} reconnects ({seen['gap_filled']:,} backfilled), "
        f"reconciled {'yes' if seen['reconciled'] else 'NO'}, "
        f"caught up {seen['catch_up_seconds']:.1f} s after the last publish"
    )
    return _row(label, sample, text)


def _targets(results: Results) -> str:
    head = [("target", "measured", "holds"), ("---", "---", "---")]
    rows = [(name, *_judge(results, name, limit)) for name, limit in TARGETS]
    return lines(head + rows)


def _judge(results: Results, name: str, limit: float) -> tuple[str, str]:
    small, large = results.plan.sizes[-2], results.plan.sizes[-1]
    pair = (small, large)
    if name.startswith("load within"):
        values = [_value(results, "bus", s) / _value(results, "floor", s) for s in pair]
        return _verdict(values, pair, limit, below=True)
    if name.startswith("load at least"):
        values = [_value(results, "naive", s) / _value(results, "bus", s) for s in pair]
        return _verdict(values, pair, limit, below=False)
    if name.startswith("load peak"):
        values = [_peak(results, "bus", s) / results.raw_bytes[s] for s in pair]
        return _verdict(values, pair, limit, below=True)
    if name.startswith("cost linear"):
        ratio = _value(results, "bus", large) / _value(results, "bus", small)
        scale = large / small
        allowed = limit * scale / 3
        text = f"{ratio:.2f}x for {scale:.0f}x the messages (limit {allowed:.1f}x)"
        return text, _yes(ratio <= allowed)
    if name.startswith("one-minute"):
        ratio = _value(results, "topic", large) / _value(results, "window", large)
        return f"{ratio:,.0f}x at {large:,}", _yes(ratio >= limit)
    if name.startswith("decode_ids"):
        rate = results.plan.ids / _value(results, "decode_ids", results.plan.ids)
        return f"{rate / 1e6:,.0f} million ids/s", _yes(rate >= limit)
    if name.startswith("flow and lineage"):
        return _graphs(results, limit)
    return _tail_verdict(results)


def _graphs(results: Results, limit: float) -> tuple[str, str]:
    size = results.plan.graph_size
    texts, ok = [], True
    for op in ("flow_graph", "lineage_graph"):
        sample = results.get(op, size)
        if sample is None or sample.missing or not sample.seconds:
            texts.append(f"{op} n/a")
            ok = False
            continue
        ratio = sample.median / statistics_median(sample.extra["load_seconds"])
        texts.append(f"{op} {ratio:.2f}x")
        ok = ok and ratio < limit
    return ", ".join(texts) + f" at {size:,}", _yes(ok)


def _tail_verdict(results: Results) -> tuple[str, str]:
    top = results.plan.tail[1]
    sample = results.get("tail", int(top))
    if sample is None or sample.missing:
        return "n/a", "n/a"
    pub, seen = sample.extra["publisher"], sample.extra["tail"]
    lost = pub["published"] - seen["received"]
    kept_rate = pub["hold_rate"] >= 0.95 * top
    rate, reconciled = pub["hold_rate"], seen["reconciled"]
    text = f"{rate:,.0f}/s held, {lost:,} lost, reconciled {reconciled}"
    return text, _yes(lost == 0 and seen["reconciled"] and kept_rate)


def _verdict(
    values: list[float], sizes: tuple[int, int], limit: float, *, below: bool
) -> tuple[str, str]:
    text = ", ".join(f"{v:.2f}x at {s:,}" for v, s in zip(values, sizes, strict=True))
    ok = all(v <= limit for v in values) if below else all(v >= limit for v in values)
    return text, _yes(ok)


def _cpu(sample: Sample | None) -> float:
    """Median CPU seconds of the measuring process (its own Python work)."""
    values = sample.extra.get("cpu_seconds", []) if sample else []
    return statistics_median(values)


def _value(results: Results, op: str, size: int) -> float:
    sample = results.get(op, size)
    return sample.median if sample and sample.seconds else math.nan


def _peak(results: Results, op: str, size: int) -> float:
    sample = results.get(op, size)
    return float(sample.peak) if sample else math.nan


def _first(sample: Sample | None, key: str) -> str:
    values = sample.extra.get(key) if sample else None
    if not values:
        return "?"
    value = values[0] if isinstance(values, list) else values
    return f"{value:,}" if isinstance(value, int) else str(value)


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _seconds(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _ratio(a: float, b: float) -> str:
    if not b or math.isnan(a) or math.isnan(b):
        return "n/a"
    return f"{a / b:.2f}x"


def statistics_median(values: list[Any]) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return float(ordered[middle - 1] + ordered[middle]) / 2

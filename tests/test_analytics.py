"""Latency, throughput, errors and backlog against the real capture.

Expected values come from the capture's README (parsed here) and from the raw
keyspace JSONL, never from the functions under test.
"""

from __future__ import annotations

import json
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import networkx as nx
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

import rdebug_nb as rd
from rdebug_nb.backlog import BACKLOG_COLUMNS, backlog_table, position_table
from rdebug_nb.failures import ERROR_COLUMNS, errors
from rdebug_nb.figures import (
    plot_error_rate,
    plot_flow,
    plot_heatmap,
    plot_latency,
    plot_sankey,
    plot_timeline,
    plot_volume,
    plot_waterfall,
)
from rdebug_nb.graph import agent_node, topic_node
from rdebug_nb.guilds import Position
from rdebug_nb.keys import parse_position_key
from rdebug_nb.latency import (
    HOP_COLUMNS,
    home_guilds,
    hop_table,
    latency,
    latency_summary,
)
from rdebug_nb.messages import JsonArray
from rdebug_nb.positions import load_backlog, read_positions
from rdebug_nb.traffic import THROUGHPUT_COLUMNS, busiest_guild, throughput
from tests.test_export import GUILDS

ERROR_LINE = re.compile(r"^- `(?P<key>[^`]+)` format `(?P<format>[^`]+)`: (?P<n>\d+)$")


def records(capture: Path) -> list[dict[str, Any]]:
    with (capture / "keyspace.jsonl").open() as handle:
        return [json.loads(line) for line in handle]


def readme(capture: Path) -> list[str]:
    return (capture / "README.md").read_text().splitlines()


@pytest.fixture(scope="module")
def keyspace(capture: Path) -> list[dict[str, Any]]:
    return records(capture)


@pytest.fixture(scope="module")
def members(keyspace: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (r["key"], json.loads(member))
        for r in keyspace
        if r["type"] == "zset"
        for member, _ in r["value"]
    ]


@pytest.fixture(scope="module")
def all_msgs(capture_bus: rd.Bus) -> pd.DataFrame:
    namespaces = capture_bus.guilds()["namespace"].tolist()
    return pd.concat([capture_bus.messages(g) for g in namespaces])


def test_every_recorded_hop_is_timed(
    all_msgs: pd.DataFrame, members: list[tuple[str, dict[str, Any]]]
) -> None:
    times = {body["id"]: int(body["timestamp"]) for _, body in members}
    entries = {e["result"]: e for _, b in members for e in b["message_history"]}

    hops = hop_table(all_msgs).set_index("result")

    assert list(hop_table(all_msgs).columns) == list(HOP_COLUMNS)
    assert set(hops.index) == set(entries)
    for result, entry in entries.items():
        row = hops.loc[result]
        assert row["agent_id"] == entry["agent"]["id"]
        assert row["origin"] == entry["origin"]
        if entry["origin"] in times:
            assert row["latency_ms"] == times[result] - times[entry["origin"]]
        else:
            assert entry["origin"] == 0
            assert pd.isna(row["latency_ms"])


def test_latency_percentiles_per_agent(
    all_msgs: pd.DataFrame, members: list[tuple[str, dict[str, Any]]]
) -> None:
    times = {body["id"]: int(body["timestamp"]) for _, body in members}
    hops = {
        e["result"]: e["origin"]
        for key, b in members
        if key.startswith("orders-pipeline-01:")
        for e in b["message_history"]
        if e["agent"]["id"] == "validator"
    }
    spent = [times[r] - times[o] for r, o in hops.items() if o in times]
    expected = np.percentile(spent, [50, 90, 95, 99])

    result = latency(all_msgs)

    agents = result.by_agent
    row = agents.loc[
        (agents["guild_id"] == "orders-pipeline-01")
        & (agents["agent_id"] == "validator")
    ].iloc[0]
    assert row["hops"] == len(hops)
    assert row[["p50_ms", "p90_ms", "p95_ms", "p99_ms"]].tolist() == pytest.approx(
        expected
    )
    assert result.by_edge["hops"].sum() == len(result.hops)


def test_latency_summary_of_nothing_has_the_columns() -> None:
    frame = pd.DataFrame({"agent_id": [], "latency_ms": [], "is_error": []})

    assert latency_summary(frame, ["agent_id"]).empty


def test_throughput_totals_match_the_readme(
    all_msgs: pd.DataFrame, capture: Path
) -> None:
    lines = readme(capture)
    start = lines.index("| namespace | topic | entries |")
    expected = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        namespace, topic, entries = (
            c.strip().strip("`") for c in line.strip("|").split("|")
        )
        expected[namespace, topic] = int(entries)

    counts = throughput(all_msgs, "1s")
    topics = counts.loc[counts["kind"] == "topic"]
    totals = topics.groupby(["guild_id", "name"])["messages"].sum()

    assert list(counts.columns) == list(THROUGHPUT_COLUMNS)
    assert totals.to_dict() == expected


def test_throughput_per_agent_counts_each_message_once(
    all_msgs: pd.DataFrame, members: list[tuple[str, dict[str, Any]]]
) -> None:
    sent: dict[str, set[int]] = defaultdict(set)
    for _, body in members:
        sent[body["sender"]["id"]].add(body["id"])

    counts = throughput(all_msgs, "10s", fill=True)
    agents = counts.loc[counts["kind"] == "agent"].groupby("name")["messages"].sum()

    assert agents.to_dict() == {agent: len(ids) for agent, ids in sent.items()}
    spans = counts.groupby(["guild_id", "kind", "name"])["time"].nunique()
    assert spans.nunique() == 1


def test_errors_match_the_readme_breakdown(
    all_msgs: pd.DataFrame, capture: Path, members: list[tuple[str, dict[str, Any]]]
) -> None:
    lines = readme(capture)
    total = int(
        next(
            re.findall(r"(\d+) stored messages have `is_error_message", ln)[0]
            for ln in lines
            if "stored messages have `is_error_message" in ln
        )
    )
    expected = {
        (m["key"], m["format"]): int(m["n"]) for m in map(ERROR_LINE.match, lines) if m
    }
    raw = Counter(
        (key, body["format"])
        for key, body in members
        if body["is_error_message"] or body["process_status"] == "error"
    )

    report = errors(all_msgs)

    found = Counter(
        zip(
            report.deliveries["guild_id"] + ":" + report.deliveries["topic"],
            report.deliveries["format"],
            strict=True,
        )
    )
    assert len(report.deliveries) == total == sum(expected.values())
    assert found == expected == raw
    assert list(report.deliveries.columns) == list(ERROR_COLUMNS)
    assert report.groups["deliveries"].sum() == total
    assert set(report.groups["example_id"]) <= set(report.deliveries["id"])


def test_errors_start_at_the_failing_agent(all_msgs: pd.DataFrame) -> None:
    groups = errors(all_msgs).groups
    origin = {
        (agent, topic): started
        for agent, topic, started in zip(
            groups["agent_id"], groups["topic"], groups["origin_topic"], strict=True
        )
    }

    assert origin["gate", "dead_letter_queue"] == "tickets"
    assert origin["validator", "orders.rejected"] == "orders.in"
    assert origin["worker", "tasks.rejected"] == "default_topic"


def test_dead_letters_unpack_the_failed_message(
    all_msgs: pd.DataFrame, members: list[tuple[str, dict[str, Any]]]
) -> None:
    stored = {(key, body["id"]): body for key, body in members}
    raw = [body for key, body in members if key.endswith(":dead_letter_queue")]

    letters = errors(all_msgs).dead_letters.set_index("id")

    assert len(letters) == len(raw) == 5
    for body in raw:
        row = letters.loc[body["id"]]
        payload = body["payload"]
        assert (
            row["original_id"]
            == payload["original_message_id"]
            == body["in_response_to"]
        )
        assert row["client_id"] == payload["client_id"]
        assert row["error_type"] == payload["error_type"]
        assert (
            f"{row['original_namespace']}:{row['original_topic']}"
            == payload["original_topic"]
        )
        failed = stored[payload["original_topic"], payload["original_message_id"]]
        assert row["original_message"]["payload"] == failed["payload"]
        assert row["original_sender"] == failed["sender"]["id"]


def test_positions_match_the_stored_keys(
    capture_bus: rd.Bus, keyspace: list[dict[str, Any]]
) -> None:
    expected = {
        r["key"]: int(r["value"]) for r in keyspace if r["key"].startswith("eo:pos:")
    }

    positions = read_positions(capture_bus.client)

    assert len(positions) == len(expected) == 121
    assert {p.name: p.message_id for p in positions} == expected


def test_backlog_of_every_guild(
    capture_bus: rd.Bus, keyspace: list[dict[str, Any]]
) -> None:
    stored: dict[str, list[tuple[int, float]]] = {}
    for r in keyspace:
        if r["type"] == "zset":
            stored[r["key"]] = [(json.loads(m)["id"], s) for m, s in r["value"]]
    guilds = capture_bus.guilds()
    tables = [
        load_backlog(capture_bus, g)
        for g in guilds.loc[guilds["kind"] == "guild", "namespace"]
    ]
    backlog = pd.concat(tables).set_index("key")

    assert len(backlog) == 121
    assert list(tables[0].columns) == list(BACKLOG_COLUMNS)
    for key, row in backlog.iterrows():
        entries = stored.get(f"{row['namespace']}:{row['topic']}", [])
        at = dict(entries).get(row["position_id"])
        assert row["position_stored"] == (at is not None), key
        assert row["entries"] == len(entries)
        assert row["pending_by_id"] == sum(i > row["position_id"] for i, _ in entries)
        if at is not None:
            assert row["pending_by_time"] == sum(s > at for _, s in entries)


def test_backlog_table_accepts_positions_and_message_frames() -> None:
    key = "eo:pos:g$a:g:t"
    parsed = parse_position_key(key)
    assert parsed is not None
    positions = [Position(key, parsed, None)]
    msgs = pd.DataFrame(
        {
            "guild_id": ["g"],
            "topics": [["t", "u"]],
            "id": pd.array([9742500132942774272], dtype="UInt64"),
            "timestamp_ms": [1796300983041],
        }
    )

    row = backlog_table(position_table(positions), msgs).iloc[0]

    assert pd.isna(row["position_id"])
    assert row["entries"] == 1
    assert row["pending_by_id"] == row["pending_by_time"] == 1


def test_every_guild_is_analysed_without_a_warning(capture_bus: rd.Bus) -> None:
    for guild in capture_bus.guilds()["namespace"]:
        msgs = capture_bus.messages(guild)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            rd.flow_graph(msgs)
            rd.lineage_graph(msgs)
            rd.latency(msgs)
            rd.errors(msgs)
            rd.throughput(msgs)


def test_hops_read_from_stored_history_texts_equal_hops_from_dicts(
    capture_bus: rd.Bus,
) -> None:
    msgs = pd.concat(
        [capture_bus.messages(g) for g in capture_bus.guilds()["namespace"]],
        ignore_index=True,
    )
    odd = msgs.iloc[:1].copy()
    entries = [b"7", b"null", b'{"origin":1,"result":true}', b'{"result":1}']
    pending = np.empty(1, dtype=object)
    pending[0] = tuple(map(msgspec.Raw, entries))  # as a load leaves a history
    odd["message_history"] = JsonArray(pending)
    texts = pd.concat([msgs, odd], ignore_index=True)
    assert str(texts["message_history"].dtype) == "json"
    histories = texts["message_history"].astype(object).tolist()
    histories[-1] = [msgspec.json.decode(entry) for entry in entries]
    dicts = texts.assign(message_history=pd.Series(histories, dtype=object))

    from_texts = hop_table(texts)

    assert from_texts["result"].is_unique
    assert len(from_texts) > 100
    pd.testing.assert_frame_equal(from_texts, hop_table(dicts))


# -- small, empty and windowed frames ------------------------------------------

SWEPT_GUILDS = GUILDS  # every namespace of the capture
FIGURES: dict[str, Callable[[pd.DataFrame], go.Figure]] = {
    "flow": plot_flow,
    "sankey": plot_sankey,
    "timeline": plot_timeline,
    "heatmap-agent": plot_heatmap,
    "heatmap-time": lambda msgs: plot_heatmap(msgs, "time"),
    "latency": plot_latency,
    "error-rate": plot_error_rate,
    "volume": plot_volume,
}


@pytest.fixture(scope="module")
def window_bus(valkey_url: str, capture: Path) -> Iterator[rd.Bus]:
    """The capture on the embedded server only: frames do not depend on the server."""
    bus = rd.connect(valkey_url.replace("/0", "/13"), progress=False, writable=True)
    bus.client.flushdb()
    bus.load_snapshot(capture / "keyspace.jsonl", expiry="restart")
    yield bus
    bus.client.flushdb()
    bus.close()


def windows(bus: rd.Bus, guild: str) -> dict[str, pd.DataFrame]:
    """The guild's frames as a trial user makes them, each distinct one once.

    Empty (a window after the data), its first message, its first five, and
    every one-second window from its first message to its last.
    """
    msgs = bus.messages(guild)
    found = {
        "empty": bus.messages(guild, since="2030-01-01"),
        "head(1)": msgs.head(1),
        "head(5)": msgs.head(5),
    }
    start = msgs["timestamp"].min().floor("1s")
    while start <= msgs["timestamp"].max():
        end = start + pd.Timedelta("1s")
        found[f"{start:%H:%M:%S}"] = bus.messages(guild, since=start, until=end)
        start = end
    distinct: dict[tuple[int, ...], str] = {}
    for name, frame in found.items():
        distinct.setdefault(tuple(sorted(map(int, frame["id"]))), name)
    return {name: found[name] for name in distinct.values()}


def check_analyses(msgs: pd.DataFrame) -> nx.DiGraph:
    """The data views of a frame agree with the frame; returns its lineage."""
    flow = rd.flow_graph(msgs)
    lineage = rd.lineage_graph(msgs)
    timing = latency(msgs)
    counts = throughput(msgs)
    report = errors(msgs)

    homes = home_guilds(msgs.reset_index(drop=True)).tolist()
    senders = {agent_node(g, a) for g, a in zip(homes, msgs["sender_id"], strict=True)}
    stored = [
        (g, t)
        for g, ts in zip(msgs["guild_id"], msgs["topics"], strict=True)
        for t in ts
    ]
    assert (flow.number_of_nodes() == 0) == msgs.empty
    assert senders | {topic_node(g, t) for g, t in stored} <= set(flow)
    assert {n for n, d in lineage.nodes(data=True) if d["stored"]} == set(
        map(int, msgs["id"])
    )
    assert timing.by_agent["hops"].sum() == len(timing.hops)
    assert counts.loc[counts["kind"] == "topic", "messages"].sum() == len(stored)
    failed = msgs["is_error"] | msgs["is_dead_letter"]
    assert len(report.deliveries) == sum(map(len, msgs.loc[failed, "topics"]))
    return lineage


def check_figures(msgs: pd.DataFrame) -> None:
    """Every figure draws; an empty frame's says so in the middle of the figure."""
    for name, plot in FIGURES.items():
        fig = plot(msgs)
        notes = [a.text for a in fig.layout.annotations if a.name == "empty note"]
        if msgs.empty:
            assert len(notes) == 1, name
            assert notes[0].startswith("no messages"), name
        elif name == "latency":
            measured = hop_table(msgs)["latency_ms"].notna().any()
            assert notes == ([] if measured else ["no hop with a measured latency"])
        else:
            assert notes == [], name
        if name == "flow":
            drawn = {
                k for t in fig.data if t.customdata is not None for k in t.customdata
            }
            assert drawn == set(rd.flow_graph(msgs))


def check_chains(msgs: pd.DataFrame, lineage: nx.DiGraph) -> None:
    """The trace, critical path and waterfall of the frame's last message."""
    if msgs.empty:
        with pytest.raises(rd.MessageNotFound):
            rd.trace(msgs, 9742500132942774272)
        return
    last = int(msgs["id"].iloc[-1])
    chain = rd.trace(msgs, last, graph=lineage)
    path = rd.critical_path(msgs, last, graph=lineage)
    fig = plot_waterfall(chain)

    assert chain.loc[chain["is_target"], "id"].tolist() == [last]
    assert len(path) >= 1
    assert set(path["id"]) <= set(lineage)
    assert len(fig.data[0].y) == len(chain)
    assert fig.layout.title.text == f"Trace of message {last}"


@pytest.mark.parametrize("guild", SWEPT_GUILDS)
def test_every_window_of_every_guild_is_analysed_and_drawn(
    window_bus: rd.Bus, guild: str
) -> None:
    frames = windows(window_bus, guild)

    assert {"empty", "head(1)"} <= set(frames)
    for name, msgs in frames.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                lineage = check_analyses(msgs)
                check_figures(msgs)
                check_chains(msgs, lineage)
        except AssertionError as err:
            raise AssertionError(f"{guild}, frame {name}: {err}") from err


def test_the_busiest_guild_is_the_one_with_most_messages(capture_bus: rd.Bus) -> None:
    assert busiest_guild(capture_bus.guilds()) == "orders-pipeline-01"


def test_a_server_without_guilds_has_no_busiest_guild(fresh_bus: rd.Bus) -> None:
    guilds = fresh_bus.guilds()

    with pytest.raises(rd.GuildNotFound, match="the server holds no guild"):
        busiest_guild(guilds)


def test_a_delivery_frame_is_analysed_as_its_messages(capture_bus: rd.Bus) -> None:
    deliveries = capture_bus.deliveries("faulty-workers")
    msgs = capture_bus.messages("faulty-workers")

    pd.testing.assert_frame_equal(latency(deliveries).by_edge, latency(msgs).by_edge)
    pd.testing.assert_frame_equal(throughput(deliveries), throughput(msgs))
    pd.testing.assert_frame_equal(errors(deliveries).groups, errors(msgs).groups)
    pd.testing.assert_frame_equal(
        errors(deliveries).dead_letters, errors(msgs).dead_letters
    )


@pytest.mark.parametrize(
    ("name", "missing"),
    [
        ("latency", "'topics', 'message_history'"),
        ("throughput", "'topics'"),
        ("errors", "'topics', 'payload', 'message_history'"),
        ("dead_letters", "'payload'"),
    ],
)
def test_a_frame_without_message_columns_is_refused(
    capture_bus: rd.Bus, name: str, missing: str
) -> None:
    columns = ["topics", "payload", "message_history"]
    msgs = capture_bus.messages("faulty-workers").drop(columns=columns)

    with pytest.raises(rd.InvalidQuery) as caught:
        getattr(rd, name)(msgs)

    text = str(caught.value)
    assert text.startswith(f"{name}() needs a message frame")
    assert f"lacks the column{'s' if ',' in missing else ''} {missing};" in text
    assert "pass a frame from bus.messages(guild_id)" in text


def test_something_else_than_a_frame_is_refused() -> None:
    with pytest.raises(rd.InvalidQuery, match=r"latency\(\) needs .* not list"):
        latency([1, 2])  # type: ignore[arg-type]


def test_missing_values_of_the_error_tables_show_one_way(
    all_msgs: pd.DataFrame,
) -> None:
    report = errors(all_msgs)

    shown = [report.deliveries, report.groups, report.dead_letters]
    cells = [re.findall(r"<td>(.*?)</td>", frame.to_html()) for frame in shown]
    assert "&lt;NA&gt;" in cells[0]  # process_status and error_type of some
    for found in cells:
        assert not {"None", "NaN", "nan"} & set(found)

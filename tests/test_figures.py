"""Figures built from the real capture and from hostile or huge synthetic data.

Checked on the figure data (traces, names, values, annotations), not on pixels.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import networkx as nx
import pandas as pd
import plotly.graph_objects as go
import pytest

import rdebug_nb as rd
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
from rdebug_nb.graph import TRACE_COLUMNS, chain_frame, flow_graph, trace
from rdebug_nb.latency import latency
from rdebug_nb.messages import decode_deliveries, to_messages

HOSTILE_AGENT = "<script>alert('agent')</script>"
HOSTILE_TOPIC = "<img src=x onerror=alert(1)>"
HOSTILE_FORMAT = "acme.<b onmouseover=alert(2)>Order"


def stored_counts(capture: Path) -> tuple[int, int]:
    """(zset members, distinct (namespace-free) failing message ids) of the capture."""
    members, failing = 0, set()
    with (capture / "keyspace.jsonl").open() as handle:
        for line in handle:
            record = json.loads(line)
            if record["type"] != "zset":
                continue
            for member, _ in record["value"]:
                members += 1
                body = json.loads(member)
                if body["is_error_message"] or body["process_status"] == "error":
                    failing.add(body["id"])
    return members, len(failing)


def member(mid: int, stamp: int, **fields: Any) -> bytes:
    """One stored message in RusticAI's field order, on the hostile topic."""
    body = {
        "sender": {"id": "probe", "name": "Probe"},
        "topics": HOSTILE_TOPIC,
        "recipient_list": [],
        "payload": {},
        "format": "generic_json",
        "in_response_to": None,
        "thread": [mid],
        "conversation_id": None,
        "forward_header": None,
        "routing_slip": None,
        "message_history": [],
        "ttl": None,
        "is_error_message": False,
        "traceparent": None,
        "session_state": None,
        "topic_published_to": HOSTILE_TOPIC,
        "enrich_with_history": 0,
        "process_status": None,
        "origin_guild_stack": [],
        "id": mid,
        "priority": 4,
        "timestamp": float(stamp),
    }
    body.update(fields)
    return json.dumps(body, separators=(",", ":")).encode()


def figure_text(fig: go.Figure) -> str:
    """Every string plotly.js may render, as it receives it (JSON escapes undone).

    ``customdata`` is left out: it carries raw node keys for click callbacks and
    plotly never renders it unless a hover template names it (none does).
    """
    data = json.loads(fig.to_json())
    for item in data["data"]:
        assert "%{customdata" not in str(item.get("hovertemplate", ""))
        item.pop("customdata", None)
    return json.dumps(data, ensure_ascii=False)


@pytest.fixture(scope="module")
def all_msgs(capture_bus: rd.Bus) -> pd.DataFrame:
    namespaces = capture_bus.guilds()["namespace"].tolist()
    return pd.concat([capture_bus.messages(g) for g in namespaces])


@pytest.fixture(scope="module")
def hostile() -> pd.DataFrame:
    """Two messages whose agent, topic and format names are HTML payloads."""
    root = int(rd.encode_id(4, 1796300983000))
    answer = int(rd.encode_id(4, 1796300983020))
    hop = {
        "agent": {"id": HOSTILE_AGENT, "name": HOSTILE_AGENT},
        "origin": root,
        "result": answer,
        "processor": "<i>p</i>",
        "from_topic": HOSTILE_TOPIC,
        "to_topics": [HOSTILE_TOPIC],
        "reason": None,
    }
    members = [
        member(root, 1796300983000, format=HOSTILE_FORMAT),
        member(
            answer,
            1796300983020,
            sender={"id": HOSTILE_AGENT, "name": HOSTILE_AGENT},
            format=HOSTILE_FORMAT,
            in_response_to=root,
            thread=[root],
            message_history=[hop],
            is_error_message=True,
        ),
    ]
    entry = (f"g:{HOSTILE_TOPIC}", HOSTILE_TOPIC, members)
    return to_messages(decode_deliveries("g", [entry]))


PLOTS: dict[str, Callable[[pd.DataFrame], go.Figure]] = {
    "flow": plot_flow,
    "sankey": plot_sankey,
    "timeline": plot_timeline,
    "heatmap-agent": plot_heatmap,
    "heatmap-time": lambda msgs: plot_heatmap(msgs, "time"),
    "latency": plot_latency,
    "error-rate": plot_error_rate,
    "volume": plot_volume,
}


@pytest.mark.parametrize("name", sorted(PLOTS))
def test_data_text_is_escaped(name: str, hostile: pd.DataFrame) -> None:
    text = figure_text(PLOTS[name](hostile))

    assert "<script" not in text
    assert "<img" not in text
    assert "<b onmouseover" not in text
    assert "<i>" not in text
    if name != "error-rate":  # the only figure that shows no names
        assert "&lt;" in text


def test_waterfall_text_is_escaped(hostile: pd.DataFrame) -> None:
    answer = int(hostile["id"].iloc[-1])

    text = figure_text(plot_waterfall(hostile, answer))

    assert "<script" not in text
    assert "&lt;script&gt;" in text


def test_flow_figure_shows_every_node(all_msgs: pd.DataFrame) -> None:
    graph = flow_graph(all_msgs)

    fig = plot_flow(graph)

    nodes = [t for t in fig.data if t.name in ("agents", "topics")]
    drawn = {key for t in nodes for key in t.customdata}
    assert drawn == set(graph.nodes)
    assert len(fig.data) <= 11
    hover = next(t for t in fig.data if t.name == "edge details")
    assert len(hover.x) == graph.number_of_edges()
    assert fig.layout.title.text == "Message flow"
    assert not fig.layout.annotations


def test_flow_of_two_thousand_nodes_stays_bounded() -> None:
    graph = nx.DiGraph(kind="flow")
    for i in range(1000):
        agent, topic = f"agent:g${i}", f"topic:g:t{i}"
        graph.add_node(agent, kind="agent", label=f"a{i}", messages=i)
        graph.add_node(topic, kind="topic", label=f"t{i}", messages=i + 1)
        graph.add_edge(agent, topic, relation="publish", count=i + 1, errors=i % 7 == 0)
        graph.add_edge(
            topic, f"agent:g${(i * 7 + 1) % 1000}", relation="deliver", count=1
        )

    full = plot_flow(graph)
    capped = plot_flow(graph, max_nodes=500)

    assert len(full.data) <= 11
    assert sum(len(t.customdata) for t in full.data if t.customdata is not None) == 2000
    assert not full.layout.annotations
    assert "showing 500 of 2,000 nodes" in capped.layout.annotations[0].text
    assert (
        sum(len(t.customdata) for t in capped.data if t.customdata is not None) == 500
    )


def test_sankey_carries_every_edge(all_msgs: pd.DataFrame) -> None:
    graph = flow_graph(all_msgs)

    sankey = plot_sankey(graph).data[0]

    assert sum(sankey.link.value) == sum(
        d["count"] for _, _, d in graph.edges(data=True)
    )
    assert len(sankey.link.value) == graph.number_of_edges()


def test_timeline_draws_each_message_once(
    all_msgs: pd.DataFrame, capture: Path
) -> None:
    failing = stored_counts(capture)[1]
    letters = int(all_msgs["is_dead_letter"].sum())

    fig = plot_timeline(all_msgs)

    drawn = {t.name: len(t.x) for t in fig.data}
    assert sum(drawn.values()) == all_msgs["id"].nunique()
    assert drawn["dead letters"] == letters == 5
    assert drawn["errors"] == failing - letters


def test_timeline_cap_is_noted(all_msgs: pd.DataFrame) -> None:
    fig = plot_timeline(all_msgs, max_points=100)

    assert sum(len(t.x) for t in fig.data) == 100
    assert "newest 100 of" in fig.layout.annotations[0].text


def test_waterfall_of_a_lookup(all_msgs: pd.DataFrame) -> None:
    request = int(
        all_msgs.loc[all_msgs["format"].str.endswith("LookupRequest"), "id"].iloc[0]
    )
    chain = trace(all_msgs, request)

    fig = plot_waterfall(chain)
    capped = plot_waterfall(chain, max_rows=3)

    bars = fig.data[0]
    assert len(bars.y) == len(chain)
    assert str(request) in fig.layout.title.text
    assert list(bars.base + bars.x)[1:] == pytest.approx(
        chain["elapsed_ms"].tolist()[1:]
    )
    assert len(capped.data[0].y) == 3
    assert f"first 3 of {len(chain)}" in capped.layout.annotations[0].text


def test_heatmaps_count_every_delivery(all_msgs: pd.DataFrame, capture: Path) -> None:
    members = stored_counts(capture)[0]

    by_agent = plot_heatmap(all_msgs, max_topics=1000, max_rows=1000).data[0]
    by_time = plot_heatmap(all_msgs, "time", freq="5s", max_topics=1000).data[0]

    assert by_agent.z.sum() == by_time.z.sum() == members


def test_volume_stacks_every_delivery(all_msgs: pd.DataFrame, capture: Path) -> None:
    fig = plot_volume(all_msgs, "5s", max_topics=5)

    assert len(fig.data) == 6
    assert fig.data[-1].name == "other topics"
    assert sum(sum(t.y) for t in fig.data) == stored_counts(capture)[0]


def test_error_rate_counts_each_failure(all_msgs: pd.DataFrame, capture: Path) -> None:
    fig = plot_error_rate(all_msgs, "1s")

    errors = next(t for t in fig.data if t.name == "errors")
    rate = next(t for t in fig.data if t.name == "error rate")
    assert sum(errors.y) == stored_counts(capture)[1]
    assert max(v for v in rate.y if v == v) <= 100
    low, high = fig.layout.yaxis2.range
    assert low == 0
    assert max(v for v in rate.y if v == v) <= high <= 100
    assert fig.layout.yaxis2.ticksuffix == "%"


def test_flow_labels_alternate_down_each_column(all_msgs: pd.DataFrame) -> None:
    fig = plot_flow(all_msgs)

    placed: dict[float, list[tuple[float, str]]] = {}
    for t in fig.data:
        if t.name in ("agents", "topics"):
            for x, y, side in zip(t.x, t.y, t.textposition, strict=True):
                placed.setdefault(x, []).append((y, side))
    for column in placed.values():
        sides = [side for _, side in sorted(column)]
        assert all(a != b for a, b in pairwise(sides))
    assert any(len(column) > 2 for column in placed.values())


def test_latency_boxes_per_agent(all_msgs: pd.DataFrame) -> None:
    result = latency(all_msgs)
    measured = result.by_agent.loc[result.by_agent["p50_ms"].notna()]

    fig = plot_latency(result)

    box = fig.data[0]
    assert len(box.x) == len(measured)
    assert sorted(box.median) == pytest.approx(sorted(measured["p50_ms"]))
    assert [t.name for t in fig.data] == ["latency", "p95", "p99"]


def empty_notes(fig: go.Figure) -> list[str]:
    return [a.text for a in fig.layout.annotations if a.name == "empty note"]


@pytest.mark.parametrize("name", sorted(PLOTS))
def test_a_figure_of_an_empty_window_says_so(name: str, capture_bus: rd.Bus) -> None:
    msgs = capture_bus.messages("faulty-workers", since="2030-01-01")

    fig = PLOTS[name](msgs)

    assert msgs.empty
    assert len(empty_notes(fig)) == 1
    assert empty_notes(fig)[0].startswith("no messages")
    assert fig.layout.xaxis.visible is False


def test_a_waterfall_of_an_empty_trace_says_so() -> None:
    chain = chain_frame(nx.DiGraph())

    fig = plot_waterfall(chain)

    assert list(chain.columns) == list(TRACE_COLUMNS)
    assert empty_notes(fig) == ["no messages in this trace"]
    assert fig.layout.title.text == "Trace of no message"


def test_a_one_message_window_is_drawn_without_notes(capture_bus: rd.Bus) -> None:
    msgs = capture_bus.messages("orders-pipeline-01").tail(1)

    figures = {name: plot(msgs) for name, plot in PLOTS.items()}

    assert len(msgs) == 1
    assert all(not empty_notes(figures[name]) for name in PLOTS if name != "latency")
    assert empty_notes(figures["latency"]) == ["no hop with a measured latency"]
    assert len(figures["timeline"].data[0].x) + len(figures["timeline"].data[2].x) == 1


def test_a_waterfall_needs_a_trace_or_a_message_id(all_msgs: pd.DataFrame) -> None:
    with pytest.raises(rd.InvalidQuery, match="a message frame but no message_id"):
        plot_waterfall(all_msgs)
    with pytest.raises(rd.InvalidQuery, match="without the columns 'depth'"):
        plot_waterfall(all_msgs[["id", "format"]])


def test_a_waterfall_of_a_trace_marks_its_target_and_root(
    all_msgs: pd.DataFrame,
) -> None:
    longest = int(all_msgs.sort_values(["hop_count", "timestamp"])["id"].iloc[-1])
    chain = trace(all_msgs, longest)

    fig = plot_waterfall(chain)

    assert fig.layout.title.text == f"Trace of message {longest}"
    head, link = fig.data[0].hovertext[0].split("<br>")[:2]
    assert head.endswith("</b> ")  # the root was processed by no one
    assert link.endswith("(root)")


@pytest.mark.parametrize("name", sorted(PLOTS))
def test_a_figure_of_a_frame_without_message_columns_is_refused(
    name: str, all_msgs: pd.DataFrame
) -> None:
    msgs = all_msgs.drop(columns=["topics"])

    with pytest.raises(rd.InvalidQuery, match=r"^plot_\w+\(\) needs a message frame"):
        PLOTS[name](msgs)


def test_a_delivery_frame_is_drawn_as_its_messages(capture_bus: rd.Bus) -> None:
    deliveries = capture_bus.deliveries("faulty-workers")
    msgs = capture_bus.messages("faulty-workers")

    for plot in (plot_flow, plot_timeline, plot_volume):
        assert plot(deliveries).to_json() == plot(msgs).to_json()

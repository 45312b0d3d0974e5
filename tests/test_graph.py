"""Flow and lineage graphs, traces and conversions, against the real capture.

Expected values are computed here from the raw keyspace JSONL (parsed with the
standard json module, which keeps 64-bit ids exact), never with the functions
under test.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import networkx as nx
import pandas as pd
import pytest

import rdebug_nb as rd
from rdebug_nb.errors import MessageNotFound
from rdebug_nb.graph import (
    AGENT,
    EDGE_COLUMNS,
    TOPIC,
    agent_node,
    critical_path,
    flow_graph,
    from_node_link,
    layered_layout,
    lineage_graph,
    read_graphml,
    to_dot,
    to_edge_table,
    to_graphml,
    to_node_link,
    topic_node,
    trace,
)

ORDERS = "orders-pipeline-01"
SOURCE, TARGET, ORG = "Qm3sYv7TzA9cXe2RkWpN5d", "Jd8LbR2hFv6KwZ4yMq9TxC", "acme-org"
PIPELINE = [
    "orders.in",
    "validator",
    "orders.validated",
    "pricing",
    "orders.priced",
    "inventory",
    "orders.reserved",
    "notifier",
    "orders.done",
]


def raw_members(capture: Path) -> list[tuple[str, dict[str, Any]]]:
    """(topic key, decoded member) of every sorted-set member of the capture."""
    found: list[tuple[str, dict[str, Any]]] = []
    with (capture / "keyspace.jsonl").open() as handle:
        for line in handle:
            record = json.loads(line)
            if record["type"] == "zset":
                found.extend((record["key"], json.loads(m)) for m, _ in record["value"])
    return found


def raw_hops(members: list[tuple[str, dict[str, Any]]], prefix: str) -> dict[int, Any]:
    """Distinct history entries, by result id, of members under ``prefix``."""
    hops = {}
    for key, body in members:
        if key.startswith(prefix):
            for entry in body["message_history"]:
                hops[entry["result"]] = entry
    return hops


@pytest.fixture(scope="module")
def members(capture: Path) -> list[tuple[str, dict[str, Any]]]:
    return raw_members(capture)


@pytest.fixture(scope="module")
def all_msgs(capture_bus: rd.Bus) -> pd.DataFrame:
    """Every namespace of the capture, concatenated as a user would."""
    namespaces = capture_bus.guilds()["namespace"].tolist()
    return pd.concat([capture_bus.messages(g) for g in namespaces])


@pytest.fixture(scope="module")
def lineage(all_msgs: pd.DataFrame) -> nx.DiGraph:
    return lineage_graph(all_msgs)


def test_orders_flow_has_exactly_the_hops_of_the_histories(
    capture_bus: rd.Bus, members: list[tuple[str, dict[str, Any]]]
) -> None:
    hops = raw_hops(members, ORDERS + ":")
    delivered: dict[tuple[str, str], list[int]] = defaultdict(list)
    published: dict[tuple[str, str], set[int]] = defaultdict(set)
    for result, entry in hops.items():
        agent = agent_node(ORDERS, entry["agent"]["id"])
        if (entry["from_topic"] or "").startswith("orders."):
            delivered[topic_node(ORDERS, entry["from_topic"]), agent].append(
                entry["origin"]
            )
        for topic in entry["to_topics"]:
            if topic.startswith("orders."):
                published[agent, topic_node(ORDERS, topic)].add(result)

    graph = flow_graph(capture_bus.messages(ORDERS))

    touching = {
        (u, v): d
        for u, v, d in graph.edges(data=True)
        if d["hops"] and ":orders." in (u if d["relation"] == "deliver" else v)
    }
    assert set(touching) == set(delivered) | set(published)
    for edge, origins in delivered.items():
        assert touching[edge]["relation"] == "deliver"
        assert touching[edge]["hops"] == len(origins), edge
        assert touching[edge]["count"] == len(set(origins)), edge
    for edge, results in published.items():
        assert touching[edge]["relation"] == "publish"
        assert touching[edge]["hops"] == touching[edge]["count"] == len(results)


def test_orders_flow_follows_the_pipeline(capture_bus: rd.Bus) -> None:
    graph = flow_graph(capture_bus.messages(ORDERS))
    nodes = [
        topic_node(ORDERS, name) if "." in name else agent_node(ORDERS, name)
        for name in PIPELINE
    ]

    assert all(graph.has_edge(u, v) for u, v in itertools.pairwise(nodes))
    x = {node: layered_layout(graph)[node][0] for node in nodes}
    assert [x[node] for node in nodes] == sorted(x[node] for node in nodes)
    assert graph.nodes[nodes[1]]["kind"] == AGENT
    assert graph.nodes[nodes[0]]["kind"] == TOPIC


def test_flow_counts_outside_publishers_from_the_stored_senders(
    capture_bus: rd.Bus, members: list[tuple[str, dict[str, Any]]]
) -> None:
    sent = {
        body["id"]
        for key, body in members
        if key == f"{ORDERS}:orders.in" and body["sender"]["id"] == "orders_client"
    }

    graph = flow_graph(capture_bus.messages(ORDERS))

    edge = graph.edges[
        agent_node(ORDERS, "orders_client"), topic_node(ORDERS, "orders.in")
    ]
    assert (edge["count"], edge["hops"]) == (len(sent), 0)
    assert "p50_ms" not in edge


def test_dead_letters_are_failed_deliveries(
    all_msgs: pd.DataFrame, members: list[tuple[str, dict[str, Any]]]
) -> None:
    failed = defaultdict(set)
    for key, body in members:
        if key.endswith(":dead_letter_queue"):
            payload = body["payload"]
            guild, _, agent = payload["client_id"].partition("$")
            topic = "topic:" + payload["original_topic"]
            failed[topic, agent_node(guild, agent)].add(payload["original_message_id"])

    graph = flow_graph(all_msgs)

    for (u, v), originals in failed.items():
        assert graph.edges[u, v]["errors"] >= len(originals)
        assert graph.edges[u, v]["relation"] == "deliver"


def test_six_hop_chains_are_traced_whole(
    all_msgs: pd.DataFrame,
    lineage: nx.DiGraph,
    members: list[tuple[str, dict[str, Any]]],
) -> None:
    longest = {b["id"]: b for _, b in members if len(b["message_history"]) == 6}
    assert longest, "the capture records chains of six hops"

    for mid, body in longest.items():
        chain = [body["message_history"][0]["origin"]]
        chain += [entry["result"] for entry in body["message_history"]]
        found = trace(all_msgs, mid, graph=lineage).set_index("id")

        assert set(chain) <= set(found.index)
        depths = [found.loc[node, "depth"] for node in chain]
        assert depths == list(range(depths[0], depths[0] + 7))
        assert found.loc[mid, "is_target"]
        positions = [int(found.index.get_loc(node)) for node in chain]  # type: ignore[arg-type]
        assert positions == sorted(positions)
        times = [found.loc[node, "timestamp"] for node in chain]
        assert found.loc[chain[1:], "latency_ms"].tolist() == [
            int((b - a) / pd.Timedelta(milliseconds=1))
            for a, b in itertools.pairwise(times)
        ]


def test_lookups_are_single_chains_across_guilds(
    all_msgs: pd.DataFrame,
    lineage: nx.DiGraph,
    members: list[tuple[str, dict[str, Any]]],
) -> None:
    requests = [body for key, body in members if key == f"{ORG}:guild_inbox:{TARGET}"]
    replies = {
        body["thread"][0]: body["id"]
        for key, body in members
        if key == f"{ORG}:guild_inbox:{SOURCE}"
    }
    assert len(requests) == len(replies) == 10

    for request in requests:
        chain = trace(all_msgs, request["id"], graph=lineage)
        spaces = set().union(*chain["namespaces"])

        assert {SOURCE, TARGET, ORG} <= spaces
        assert replies[request["id"]] in set(chain["id"])
        assert set(chain["guild_id"]) == {SOURCE, TARGET}
        assert "LookupSummary" in " ".join(chain["format"])
        assert lineage.nodes[request["id"]]["namespaces"] == sorted([SOURCE, ORG])


def test_critical_path_of_a_lookup_ends_at_its_last_message(
    all_msgs: pd.DataFrame,
    lineage: nx.DiGraph,
    members: list[tuple[str, dict[str, Any]]],
) -> None:
    request = next(b for k, b in members if k == f"{ORG}:guild_inbox:{TARGET}")
    thread = [b for _, b in members if b["thread"] == [request["id"]]]
    last = max(b["timestamp"] for b in thread)

    path = critical_path(all_msgs, request["id"], graph=lineage)

    assert path["id"].iloc[0] == request["id"]
    assert path["elapsed_ms"].iloc[-1] == last - request["timestamp"]
    assert path["depth"].tolist() == list(range(len(path)))


def test_unknown_message_is_reported(
    all_msgs: pd.DataFrame, lineage: nx.DiGraph
) -> None:
    with pytest.raises(MessageNotFound, match="not in the frame"):
        trace(all_msgs, 12345, graph=lineage)


def test_node_link_json_keeps_ids_exact(lineage: nx.DiGraph) -> None:
    for as_text in (False, True):
        text = json.dumps(to_node_link(lineage, ids_as_str=as_text))
        back = from_node_link(json.loads(text))

        assert set(back.nodes) == set(lineage.nodes)
        assert set(back.edges) == set(lineage.edges)
        big = max(lineage.nodes)
        assert big > 2**63
        assert back.nodes[big] == lineage.nodes[big]


def test_graphml_round_trip(
    tmp_path: Path, lineage: nx.DiGraph, all_msgs: pd.DataFrame
) -> None:
    flow = flow_graph(all_msgs)
    for graph in (lineage, flow):
        to_graphml(graph, tmp_path / "g.graphml")
        back = read_graphml(tmp_path / "g.graphml")

        assert dict(back.nodes(data=True)) == dict(graph.nodes(data=True))
        assert {(u, v): d for u, v, d in back.edges(data=True)} == {
            (u, v): d for u, v, d in graph.edges(data=True)
        }


def test_dot_text_is_escaped() -> None:
    graph = nx.DiGraph(kind="flow")
    graph.add_node('topic:g:say "hi"\\now', label='say "hi"\nthen')
    graph.add_edge("agent:g$a", 'topic:g:say "hi"\\now', count=3, errors=1)

    text = to_dot(graph)

    assert '"topic:g:say \\"hi\\"\\\\now" [label="say \\"hi\\"\\nthen"];' in text
    assert '[label="3 (1 errors)"]' in text
    assert text.count("\n") == 5


def test_dot_of_the_capture_names_every_node(lineage: nx.DiGraph) -> None:
    text = to_dot(lineage)

    assert all(f'"{node}" [label=' in text for node in lineage)
    assert text.count(" -> ") == lineage.number_of_edges()


@pytest.mark.parametrize("count", [1, 5])
def test_the_first_messages_make_a_small_flow_graph(
    capture_bus: rd.Bus, members: list[tuple[str, dict[str, Any]]], count: int
) -> None:
    msgs = capture_bus.messages(ORDERS).head(count)
    ids = set(map(int, msgs["id"]))
    stored = [
        (k, b) for k, b in members if k.startswith(f"{ORDERS}:") and b["id"] in ids
    ]
    published = {
        (
            agent_node(ORDERS, b["sender"]["id"]),
            topic_node(ORDERS, k[len(ORDERS) + 1 :]),
        )
        for k, b in stored
    }
    delivered = {
        (topic_node(ORDERS, e["from_topic"]), agent_node(ORDERS, e["agent"]["id"]))
        for _, b in stored
        for e in b["message_history"]
        if e["from_topic"]
    }

    graph = flow_graph(msgs)

    relation = {(u, v): d["relation"] for u, v, d in graph.edges(data=True)}
    assert published <= {e for e, r in relation.items() if r == "publish"}
    assert delivered == {e for e, r in relation.items() if r == "deliver"}
    for node, data in graph.nodes(data=True):
        if data["kind"] == AGENT:
            assert data["messages"] == data["published"] + data["processed"] >= 1
        else:
            held = {b["id"] for k, b in stored if k == node.removeprefix("topic:")}
            assert data["messages"] >= len(held)


def test_an_empty_window_gives_empty_graphs(capture_bus: rd.Bus) -> None:
    msgs = capture_bus.messages(ORDERS, since="2030-01-01")

    assert msgs.empty
    assert flow_graph(msgs).number_of_nodes() == 0
    assert lineage_graph(msgs).number_of_nodes() == 0
    assert to_edge_table(flow_graph(msgs)).columns.tolist() == list(EDGE_COLUMNS)
    with pytest.raises(MessageNotFound):
        critical_path(msgs, 9742500132942774272)


def test_a_delivery_frame_is_read_as_its_messages(capture_bus: rd.Bus) -> None:
    deliveries = capture_bus.deliveries(ORDERS)
    msgs = capture_bus.messages(ORDERS)
    last = int(msgs.sort_values(["hop_count", "timestamp"])["id"].iloc[-1])

    by_delivery, by_message = flow_graph(deliveries), flow_graph(msgs)

    assert len(deliveries) > len(msgs)
    assert dict(by_delivery.nodes(data=True)) == dict(by_message.nodes(data=True))
    assert sorted(by_delivery.edges(data=True)) == sorted(by_message.edges(data=True))
    pd.testing.assert_frame_equal(trace(deliveries, last), trace(msgs, last))


@pytest.mark.parametrize(
    "name", ["flow_graph", "lineage_graph", "trace", "critical_path"]
)
def test_a_frame_without_message_columns_is_refused(
    capture_bus: rd.Bus, name: str
) -> None:
    msgs = capture_bus.messages(ORDERS).drop(columns=["topics", "message_history"])
    args = (msgs,) if name.endswith("graph") else (msgs, int(msgs["id"].iloc[0]))

    with pytest.raises(rd.InvalidQuery) as caught:
        getattr(rd, name)(*args)

    text = str(caught.value)
    assert text.startswith(f"{name}() needs a message frame")
    assert "'topics', 'message_history'" in text
    assert "bus.messages(" in text


def test_edge_table_lists_every_flow_edge_busiest_first(capture_bus: rd.Bus) -> None:
    graph = flow_graph(capture_bus.messages(ORDERS))
    entry = graph.edges[
        topic_node(ORDERS, "orders.in"), agent_node(ORDERS, "validator")
    ]

    table = to_edge_table(graph)

    assert table.columns.tolist() == list(EDGE_COLUMNS)
    assert set(zip(table["source"], table["target"], strict=True)) == set(graph.edges)
    assert table["count"].is_monotonic_decreasing
    row = table.loc[(table["from"] == "orders.in") & (table["to"] == "validator")]
    assert row[["count", "hops", "errors"]].iloc[0].tolist() == [
        entry["count"],
        entry["hops"],
        entry["errors"],
    ]
    assert row["p95_ms"].iloc[0] == entry["p95_ms"]


def test_missing_values_of_a_chain_table_show_one_way(
    all_msgs: pd.DataFrame, lineage: nx.DiGraph
) -> None:
    longest = int(all_msgs.sort_values(["hop_count", "timestamp"])["id"].iloc[-1])

    for chain in (
        trace(all_msgs, longest, graph=lineage),
        critical_path(all_msgs, longest, graph=lineage),
    ):
        cells = re.findall(r"<td>(.*?)</td>", chain.to_html())
        assert "&lt;NA&gt;" in cells  # the root has no parent, relation, processor
        assert not {"None", "NaN", "nan", ""} & set(cells)

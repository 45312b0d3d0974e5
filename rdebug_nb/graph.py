"""Graphs of a guild's traffic: message flow between agents and topics, and lineage.

Two graphs are built from a message frame (one guild, or several concatenated):

*flow graph* (:func:`flow_graph`)
    the aggregated picture. Nodes are agents and topics, keyed by strings:
    ``"agent:<guild_id>$<agent_id>"`` (the agent's RusticAI client id) and
    ``"topic:<namespace>:<topic>"`` (the topic key); see :func:`agent_node` and
    :func:`topic_node`. Edges are ``publish`` (agent -> topic: the agent stored
    messages there) and ``deliver`` (topic -> agent: the agent processed messages
    taken from that topic, as recorded by hops and dead letters).
*lineage graph* (:func:`lineage_graph`)
    one node per message id (exact Python ``int``), one edge per causal link:
    ``hop`` (a ``message_history`` entry, origin -> result), ``in_response_to``
    and ``forward`` (``forward_header.origin_message_id``). A message copied into
    the organisation namespace keeps its id, so a cross-guild chain is one
    connected graph.

:func:`trace` and :func:`critical_path` read one chain out of the lineage graph;
:func:`layered_layout` places a graph's nodes for drawing; ``to_*`` / ``from_*`` /
``read_*`` convert graphs to node-link JSON, GraphML and DOT, and
:func:`to_edge_table` lists a flow graph's edges.

Every function taking a frame wants a message frame (``bus.messages()``); a
delivery frame (``bus.deliveries()``) is collapsed to one row per message, and a
frame lacking a column they read raises :class:`~rdebug_nb.errors.InvalidQuery`.

Examples
--------
>>> from rdebug_nb.latency import _example_messages
>>> msgs = _example_messages()  # a probe's message and the echo agent's answer
>>> graph = flow_graph(msgs)
>>> for edge in sorted(graph.edges):
...     print(edge)
('agent:g$echo', 'topic:g:t')
('agent:g$probe', 'topic:g:t')
('topic:g:t', 'agent:g$echo')
>>> graph.edges["topic:g:t", "agent:g$echo"]["p50_ms"]
21.0
>>> chain = trace(msgs, 7436657122944753664)
>>> print(chain[["id", "depth", "agent_id", "latency_ms"]].to_string())
                    id  depth agent_id  latency_ms
0  7436657122856673280      0    probe        <NA>
1  7436657122944753664      1     echo          21
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any, Final

import networkx as nx
import pandas as pd

from rdebug_nb.errors import MessageNotFound
from rdebug_nb.failures import dead_letters
from rdebug_nb.ids import decode_id, decode_ids
from rdebug_nb.keys import ORG_INBOX_PREFIX
from rdebug_nb.latency import (
    HOP_INPUT,
    PERCENTILES,
    home_guilds,
    hop_table,
    is_org_copy,
    latency_summary,
)
from rdebug_nb.messages import require_messages

AGENT: Final = "agent"
"""``kind`` of an agent node in a flow graph."""

TOPIC: Final = "topic"
"""``kind`` of a topic node in a flow graph."""

RELATIONS: Final = ("hop", "in_response_to", "forward")
"""Lineage edge relations, strongest first."""

TRACE_COLUMNS: Final = (
    "id",
    "depth",
    "parent_id",
    "relation",
    "agent_id",
    "processor",
    "guild_id",
    "namespaces",
    "sender_id",
    "format",
    "topics",
    "timestamp",
    "latency_ms",
    "elapsed_ms",
    "is_error",
    "stored",
    "is_target",
)
"""Columns of :func:`trace` and :func:`critical_path`, in order."""

EDGE_COLUMNS: Final = (
    "from",
    "to",
    "relation",
    "count",
    "hops",
    "errors",
    "mean_ms",
    *(f"p{p}_ms" for p in PERCENTILES),
    "max_ms",
    "source",
    "target",
)
"""Columns of :func:`to_edge_table`, in order."""

FLOW_INPUT: Final = (
    *HOP_INPUT,
    "sender_id",
    "sender_name",
    "is_dead_letter",
    "timestamp",
    "payload",
)
"""Message-frame columns :func:`flow_graph` reads."""

LINEAGE_INPUT: Final = (
    *HOP_INPUT,
    "sender_id",
    "sender_name",
    "format",
    "priority",
    "is_dead_letter",
    "hop_count",
    "thread_root",
    "process_status",
    "in_response_to",
    "forward_header",
)
"""Message-frame columns :func:`lineage_graph`, :func:`trace` and
:func:`critical_path` read."""

ID_ATTRIBUTES: Final = ("id", "thread_root")
"""Lineage node attributes holding message ids (written as text where needed)."""

_NODE_FIELDS: Final = {
    "id": "id",
    "guild_id": "home",
    "topics": "topics",
    "sender_id": "sender_id",
    "sender_name": "sender_name",
    "format": "format",
    "timestamp_ms": "timestamp_ms",
    "priority": "priority",
    "is_error": "is_error",
    "is_dead_letter": "is_dead_letter",
    "hop_count": "hop_count",
    "thread_root": "thread_root",
    "process_status": "process_status",
}
_LINK_FIELDS: Final = (
    "parent",
    "child",
    "relation",
    "agent_id",
    "processor",
    "from_topic",
)
_LATENCY_KEYS: Final = ("mean_ms", *(f"p{p}_ms" for p in PERCENTILES), "max_ms")
_EDGE_KEYS: Final = ["u", "v"]
_JSON_SAFE_INT: Final = 2**53
_CHAIN_TEXTS: Final = (
    "relation",
    "agent_id",
    "processor",
    "guild_id",
    "sender_id",
    "format",
)
_EDGE_COUNTS: Final = ("count", "hops", "errors")
_TEXT: Final = pd.StringDtype(na_value=pd.NA)


def agent_node(guild_id: str, agent_id: str) -> str:
    """Flow-graph key of an agent: ``"agent:"`` + its RusticAI client id.

    >>> agent_node("orders-pipeline-01", "validator")
    'agent:orders-pipeline-01$validator'
    """
    return f"agent:{guild_id}${agent_id}"


def topic_node(namespace: str, topic: str) -> str:
    """Flow-graph key of a topic: ``"topic:"`` + its topic key.

    >>> topic_node("acme-org", "guild_inbox:Jd8LbR2hFv6KwZ4yMq9TxC")
    'topic:acme-org:guild_inbox:Jd8LbR2hFv6KwZ4yMq9TxC'
    """
    return f"topic:{namespace}:{topic}"


# -- flow graph ----------------------------------------------------------------


def flow_graph(msgs: pd.DataFrame) -> nx.DiGraph:
    """Aggregate a message frame into a graph of agents and topics.

    Parameters
    ----------
    msgs : pandas.DataFrame
        A message frame (:data:`rdebug_nb.messages.MESSAGE_COLUMNS`), possibly
        concatenated from several guilds.

    Returns
    -------
    networkx.DiGraph
        ``G.graph["kind"] == "flow"``. Node keys are :func:`agent_node` /
        :func:`topic_node` strings.

        Node attributes: ``kind`` (``"agent"`` or ``"topic"``), ``label``,
        ``guild_id`` (the agent's guild / the topic's namespace), ``agent_id``
        or ``topic`` and ``key``, ``messages`` (agent: published + processed;
        topic: published into it), ``published`` and ``processed`` (agents),
        ``delivered`` (topics: messages agents processed from it), ``errors``.

        Edge attributes: ``relation`` (``"publish"`` or ``"deliver"``),
        ``count`` (distinct messages), ``hops`` (of them, recorded by a hop),
        ``errors`` (publish: error messages; deliver: deliveries whose result
        was an error message or that were dead-lettered), and, where hops were
        measured, ``mean_ms``, ``p50_ms``, ``p90_ms``, ``p95_ms``, ``p99_ms``,
        ``max_ms``: the latency of those hops (result minus origin time; both
        edges of a hop carry it). Cycles are kept. An empty frame gives an
        empty graph.

    Raises
    ------
    InvalidQuery
        If ``msgs`` is not a message frame (a delivery frame is collapsed to
        one row per message first); the message names the missing columns.

    Notes
    -----
    Publish edges come from each stored message's sender and stored topics, plus
    the recorded ``to_topics`` of hop results that are not in the frame. The
    sender of a copy in the organisation namespace is the original sender (the
    relaying envoy or gateway is not recorded), placed in its home guild. Work
    is done with explode and groupby; building the graph costs one Python call
    per node and edge, so it stays fast for frames of a million messages, whose
    graph has at most a few thousand nodes.

    Examples
    --------
    >>> from rdebug_nb.latency import _example_messages
    >>> graph = flow_graph(_example_messages())
    >>> graph.nodes["agent:g$echo"]["processed"], graph.nodes["topic:g:t"]["messages"]
    (1, 2)
    >>> graph.edges["agent:g$echo", "topic:g:t"]["relation"]
    'publish'
    """
    msgs = require_messages(msgs, FLOW_INPUT, "flow_graph").reset_index(drop=True)
    hops = hop_table(msgs)
    published = _publications(msgs, hops)
    processed = _consumptions(msgs, hops)
    graph = nx.DiGraph(kind="flow")
    graph.add_nodes_from(_agent_nodes(msgs, published, processed))
    graph.add_nodes_from(_topic_nodes(published, processed))
    graph.add_edges_from(_edges(published, "publish"))
    graph.add_edges_from(_edges(processed, "deliver"))
    return graph


def _publications(msgs: pd.DataFrame, hops: pd.DataFrame) -> pd.DataFrame:
    stored = msgs[["id", "guild_id", "topics", "sender_id", "is_error"]].assign(
        agent_guild=home_guilds(msgs)
    )
    stored = stored.explode("topics").dropna(subset=["topics"])
    stored = stored.rename(columns={"guild_id": "namespace", "topics": "topic"})
    stored = stored.rename(columns={"sender_id": "agent_id"})
    timing = hops[["result", "latency_ms"]].drop_duplicates("result")
    stored = stored.merge(
        timing.rename(columns={"result": "id"}), on="id", how="left", indicator=True
    )
    stored["is_hop"] = stored.pop("_merge").eq("both")
    frame = pd.concat([stored, _unstored_results(msgs, hops)], ignore_index=True)
    frame = _with_keys(frame)
    return frame.drop_duplicates(["u", "v", "id"]).reset_index(drop=True)


def _unstored_results(msgs: pd.DataFrame, hops: pd.DataFrame) -> pd.DataFrame:
    missing = hops.loc[~hops["result_stored"]]
    frame = pd.DataFrame(
        {
            "id": missing["result"],
            "agent_guild": missing["guild_id"],
            "agent_id": missing["agent_id"],
            "topic": missing["to_topics"],
            "is_error": False,
            "latency_ms": missing["latency_ms"],
            "is_hop": True,
        }
    ).explode("topic")
    frame = frame.dropna(subset=["topic"])
    inbox = _inbox_namespaces(msgs)
    # object first: with no inbox found the mapped column is all-NaN floats
    namespaces = frame["topic"].map(inbox).astype(object)
    frame["namespace"] = namespaces.fillna(frame["agent_guild"])
    return frame


def _consumptions(msgs: pd.DataFrame, hops: pd.DataFrame) -> pd.DataFrame:
    recorded = hops.loc[hops["from_topic"].notna()]
    frame = pd.DataFrame(
        {
            "id": recorded["origin"],
            "agent_guild": recorded["guild_id"],
            "agent_id": recorded["agent_id"],
            "namespace": recorded["from_namespace"],
            "topic": recorded["from_topic"],
            "is_error": recorded["is_error"],
            "latency_ms": recorded["latency_ms"],
            "is_hop": True,
        }
    )
    letters = dead_letters(msgs)
    failed = pd.DataFrame(
        {
            "id": letters["original_id"],
            "agent_guild": letters["agent_guild"],
            "agent_id": letters["agent_id"],
            "namespace": letters["original_namespace"].fillna(letters["agent_guild"]),
            "topic": letters["original_topic"],
            "is_error": True,
            "latency_ms": pd.array([pd.NA] * len(letters), dtype="Int64"),
            "is_hop": False,
        }
    ).dropna(subset=["topic"])
    frame = pd.concat([frame, failed], ignore_index=True)
    return _with_keys(frame, reverse=True)


def _with_keys(frame: pd.DataFrame, *, reverse: bool = False) -> pd.DataFrame:
    frame = frame.astype({"agent_guild": object, "agent_id": object})
    agents = "agent:" + frame["agent_guild"].astype(str) + "$" + frame["agent_id"]
    topics = "topic:" + frame["namespace"].astype(str) + ":" + frame["topic"]
    frame["u"], frame["v"] = (topics, agents) if reverse else (agents, topics)
    frame["error_id"] = frame["id"].where(frame["is_error"].astype(bool))
    return frame


def _edges(
    records: pd.DataFrame, relation: str
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    if records.empty:
        return
    grouped = records.groupby(_EDGE_KEYS, sort=True)
    frame = grouped.agg(
        count=("id", "nunique"),
        hops=("is_hop", "sum"),
        errors=("error_id", "nunique"),
    )
    measured = records.loc[records["is_hop"] & records["latency_ms"].notna()]
    timing = latency_summary(measured.assign(is_error=False), _EDGE_KEYS)
    frame = frame.join(timing.set_index(_EDGE_KEYS)[list(_LATENCY_KEYS)])
    for (u, v), row in zip(frame.index, frame.to_dict("records"), strict=True):
        yield u, v, {"relation": relation, **_present(row)}


def _present(row: dict[Hashable, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in row.items():
        if pd.isna(value):
            continue
        found[str(key)] = float(value) if key in _LATENCY_KEYS else int(value)
    return found


def _agent_nodes(
    msgs: pd.DataFrame, published: pd.DataFrame, processed: pd.DataFrame
) -> Iterator[tuple[str, dict[str, Any]]]:
    out = published.groupby("u").agg(
        guild_id=("agent_guild", "first"),
        agent_id=("agent_id", "first"),
        published=("id", "nunique"),
        sent_errors=("error_id", "nunique"),
    )
    failed = processed.loc[~processed["is_hop"]]
    into = processed.groupby("v").agg(
        guild_id=("agent_guild", "first"),
        agent_id=("agent_id", "first"),
        processed=("id", "nunique"),
    )
    frame = _merged(out, into)
    frame["dead_letters"] = failed.groupby("v")["id"].size()
    counts = ["published", "processed", "sent_errors", "dead_letters"]
    frame[counts] = frame[counts].fillna(0).astype("int64")
    names = _agent_names(msgs)
    for key, row in zip(frame.index, frame.to_dict("records"), strict=True):
        yield key, _agent_attributes(row, names)


def _merged(first: pd.DataFrame, second: pd.DataFrame) -> pd.DataFrame:
    """The rows of both frames by key, values of ``first`` where both have one.

    ``combine_first`` casts the result to the dtypes of ``second``, which fails
    on the counts it leaves missing when ``second`` is empty (a window with
    publishers but no processed hop).
    """
    return pd.concat([first, second]).groupby(level=0, sort=True).first()


def _agent_attributes(
    row: dict[Hashable, Any], names: dict[tuple[str, str], str]
) -> dict[str, Any]:
    guild, agent = str(row["guild_id"]), str(row["agent_id"])
    return {
        "kind": AGENT,
        "label": names.get((guild, agent)) or agent,
        "guild_id": guild,
        "agent_id": agent,
        "messages": row["published"] + row["processed"],
        "published": row["published"],
        "processed": row["processed"],
        "errors": row["sent_errors"] + row["dead_letters"],
    }


def _agent_names(msgs: pd.DataFrame) -> dict[tuple[str, str], str]:
    frame = msgs[["sender_id", "sender_name"]].assign(guild=home_guilds(msgs))
    frame = frame.dropna().drop_duplicates(["guild", "sender_id"])
    return {
        (guild, agent): name
        for guild, agent, name in zip(
            frame["guild"].tolist(),
            frame["sender_id"].tolist(),
            frame["sender_name"].tolist(),
            strict=True,
        )
    }


def _topic_nodes(
    published: pd.DataFrame, processed: pd.DataFrame
) -> Iterator[tuple[str, dict[str, Any]]]:
    into = published.groupby("v").agg(
        guild_id=("namespace", "first"),
        topic=("topic", "first"),
        messages=("id", "nunique"),
        errors=("error_id", "nunique"),
    )
    out = processed.groupby("u").agg(
        guild_id=("namespace", "first"),
        topic=("topic", "first"),
        delivered=("id", "nunique"),
    )
    frame = _merged(into, out)
    counts = ["messages", "errors", "delivered"]
    frame[counts] = frame[counts].fillna(0).astype("int64")
    for key, row in zip(frame.index, frame.to_dict("records"), strict=True):
        namespace, topic = str(row["guild_id"]), str(row["topic"])
        yield (
            key,
            {
                "kind": TOPIC,
                "label": topic,
                "guild_id": namespace,
                "topic": topic,
                "key": f"{namespace}:{topic}",
                "messages": int(row["messages"]),
                "delivered": int(row["delivered"]),
                "errors": int(row["errors"]),
            },
        )


def to_edge_table(graph: nx.DiGraph) -> pd.DataFrame:
    """The edges of a flow graph as a table, busiest first.

    Parameters
    ----------
    graph : networkx.DiGraph
        A graph from :func:`flow_graph`.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`EDGE_COLUMNS`: ``from`` and ``to`` (the agent id or topic
        at each end), ``relation``, ``count``, ``hops`` and ``errors``, the hop
        latency in milliseconds (missing where no hop was measured), and the
        node keys ``source`` and ``target``. Sorted by ``count``, descending; an
        empty graph gives an empty table with these columns.

    Examples
    --------
    >>> from rdebug_nb.latency import _example_messages
    >>> table = to_edge_table(flow_graph(_example_messages()))
    >>> print(table[["from", "to", "relation", "count", "p50_ms"]].to_string())
        from    to relation  count  p50_ms
    0   echo     t  publish      1    21.0
    1  probe     t  publish      1     NaN
    2      t  echo  deliver      1    21.0
    """
    rows = [
        {**data, "from": _end(graph, u), "to": _end(graph, v), "source": u, "target": v}
        for u, v, data in graph.edges(data=True)
    ]
    frame = pd.DataFrame(rows, columns=list(EDGE_COLUMNS))
    frame = frame.astype(dict.fromkeys(_EDGE_COUNTS, "Int64"))
    frame = frame.astype(dict.fromkeys(_LATENCY_KEYS, "float64"))
    frame = frame.sort_values("count", ascending=False, kind="stable")
    return frame.reset_index(drop=True)


def _end(graph: nx.DiGraph, node: Hashable) -> str:
    data = graph.nodes[node]
    return str(data.get("agent_id") or data.get("topic") or node)


def _inbox_namespaces(msgs: pd.DataFrame) -> dict[str, str]:
    keys = msgs[["guild_id", "topics"]].explode("topics").dropna()
    inbox = keys.loc[keys["topics"].astype(str).str.startswith(ORG_INBOX_PREFIX)]
    first = inbox.drop_duplicates("topics")
    return dict(zip(first["topics"].tolist(), first["guild_id"].tolist(), strict=True))


# -- lineage graph ---------------------------------------------------------------


def lineage_graph(msgs: pd.DataFrame) -> nx.DiGraph:
    """One node per message, one edge per causal link between two messages.

    Parameters
    ----------
    msgs : pandas.DataFrame
        A message frame, possibly concatenated from several guilds.

    Returns
    -------
    networkx.DiGraph
        ``G.graph["kind"] == "lineage"``; node keys are message ids as Python
        ``int``.

        Node attributes: ``id``, ``stored`` (the frame holds the message),
        ``timestamp_ms``, ``priority``, ``label``, and for stored messages
        ``guild_id`` (home guild), ``namespaces`` (every namespace holding a
        copy), ``topics``, ``sender_id``, ``sender_name``, ``format``,
        ``is_error``, ``is_dead_letter``, ``hop_count``, ``thread_root`` and
        ``process_status`` when set. A message known only from a hop or a
        reference has ``stored=False``, its GemstoneID time, and the hop's agent
        as ``sender_id`` when it is a hop result.

        Edge attributes (parent -> child): ``relation`` (the strongest of
        :data:`RELATIONS` linking the pair), ``relations`` (all of them joined
        by ``|``), ``agent_id`` (hop agent, else the child's sender),
        ``processor`` and ``from_topic`` (hops only).

    Raises
    ------
    InvalidQuery
        If ``msgs`` is not a message frame (a delivery frame is collapsed to
        one row per message first); the message names the missing columns.

    Notes
    -----
    The same id in two namespaces (a cross-guild copy) is one node. Origin 0
    (an agent's start-up hop) and self references are left out. Memory grows
    with the number of messages (roughly 1-2 KB per node); select a time window
    before building the lineage of millions of messages.

    Examples
    --------
    >>> from rdebug_nb.latency import _example_messages
    >>> graph = lineage_graph(_example_messages())
    >>> graph.edges[7436657122856673280, 7436657122944753664]["relations"]
    'hop|in_response_to'
    """
    msgs = require_messages(msgs, LINEAGE_INPUT, "lineage_graph")
    msgs = msgs.reset_index(drop=True)
    hops = hop_table(msgs)
    graph = nx.DiGraph(kind="lineage")
    graph.add_nodes_from(_message_nodes(msgs))
    links = _links(msgs, hops)
    graph.add_nodes_from(_missing_nodes(graph, links, hops))
    graph.add_edges_from(_link_edges(links))
    return graph


def _message_nodes(msgs: pd.DataFrame) -> Iterator[tuple[int, dict[str, Any]]]:
    order = msgs.assign(_org=is_org_copy(msgs), home=home_guilds(msgs))
    order = order.sort_values("_org", kind="stable")
    spaces = _namespaces(order)
    first = order.drop_duplicates("id")
    columns = {name: first[source] for name, source in _NODE_FIELDS.items()}
    # Only columns with missing values need a test per value.
    full = [name for name, column in columns.items() if not column.isna().any()]
    sparse = [name for name in columns if name not in full]
    rows = _rows([columns[name] for name in full], len(first))
    gaps = _rows([columns[name] for name in sparse], len(first))
    for values, maybe in zip(rows, gaps, strict=True):
        data = dict(zip(full, values, strict=True))
        data.update((k, v) for k, v in zip(sparse, maybe, strict=True) if _is_set(v))
        data["namespaces"] = spaces.get(data["id"]) or [data["guild_id"]]
        data["stored"] = True
        data["label"] = _message_label(data)
        yield data["id"], data


def _rows(columns: list[pd.Series], count: int) -> Iterator[tuple[Any, ...]]:
    """The values of ``columns`` row by row (``count`` empty rows if none)."""
    if not columns:
        return itertools.repeat((), count)
    return zip(*(column.tolist() for column in columns), strict=True)


def _namespaces(order: pd.DataFrame) -> dict[int, list[str]]:
    """Namespaces of the ids stored in more than one (the others have their own)."""
    copies = order.loc[order["id"].duplicated(keep=False), ["id", "guild_id"]]
    spaces: dict[int, list[str]] = {}
    for mid, guild in zip(
        copies["id"].tolist(), copies["guild_id"].tolist(), strict=True
    ):
        spaces.setdefault(mid, []).append(guild)
    return {mid: sorted(set(guilds)) for mid, guilds in spaces.items()}


def _is_set(value: Any) -> bool:
    return value is not None and value is not pd.NA and value == value


def _message_label(data: dict[str, Any]) -> str:
    kind = str(data.get("format") or "").rsplit(".", 1)[-1]
    return f"{data.get('sender_id', '?')}: {kind}" if kind else str(data["id"])


def _links(msgs: pd.DataFrame, hops: pd.DataFrame) -> pd.DataFrame:
    real = hops.loc[hops["origin"].ne(0)]
    by_hop = pd.DataFrame(
        {
            "parent": real["origin"],
            "child": real["result"],
            "relation": "hop",
            "agent_id": real["agent_id"],
            "processor": real["processor"],
            "from_topic": real["from_topic"],
        }
    )
    answers = msgs.loc[msgs["in_response_to"].notna()]
    by_answer = pd.DataFrame(
        {
            "parent": answers["in_response_to"],
            "child": answers["id"],
            "relation": "in_response_to",
            "agent_id": answers["sender_id"],
        }
    )
    frame = pd.concat([by_hop, by_answer, _forward_links(msgs)], ignore_index=True)
    frame = frame.astype({"parent": "UInt64", "child": "UInt64"})
    return frame.loc[frame["parent"] != frame["child"]].reset_index(drop=True)


def _forward_links(rows: pd.DataFrame) -> pd.DataFrame:
    found = [
        (header.get("origin_message_id"), mid, sender)
        for header, mid, sender in zip(
            rows["forward_header"].tolist(),
            rows["id"].tolist(),
            rows["sender_id"].tolist(),
            strict=True,
        )
        if isinstance(header, dict) and _is_id(header.get("origin_message_id"))
    ]
    frame = pd.DataFrame(found, columns=["parent", "child", "agent_id"])
    frame["relation"] = "forward"
    return frame.astype({"parent": "UInt64", "child": "UInt64"})


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64


def _link_edges(links: pd.DataFrame) -> Iterator[tuple[int, int, dict[str, Any]]]:
    rank = {relation: i for i, relation in enumerate(RELATIONS)}
    links = links.assign(rank=links["relation"].map(rank))
    links = links.sort_values(["parent", "child", "rank"], kind="stable")
    columns = [links[name].tolist() for name in _LINK_FIELDS]
    edges: dict[tuple[int, int], dict[str, Any]] = {}
    for parent, child, *values in zip(*columns, strict=True):
        data = edges.get((parent, child))
        if data is None:
            fields = zip(_LINK_FIELDS[2:], values, strict=True)
            data = {k: v for k, v in fields if _is_set(v)}
            edges[parent, child] = data | {"relations": values[0]}
        elif values[0] not in data["relations"].split("|"):
            data["relations"] += "|" + values[0]
    for (parent, child), data in edges.items():
        yield parent, child, data


def _missing_nodes(
    graph: nx.DiGraph, links: pd.DataFrame, hops: pd.DataFrame
) -> Iterator[tuple[int, dict[str, Any]]]:
    ids = pd.unique(pd.concat([links["parent"], links["child"]]).dropna())
    missing = [int(i) for i in ids if int(i) not in graph]
    if not missing:
        return
    stamps = decode_ids(missing)["timestamp_ms"].tolist()
    makers = dict(
        zip(
            hops["result"].tolist(),
            zip(hops["agent_id"], hops["guild_id"], strict=True),
            strict=True,
        )
    )
    for mid, stamp in zip(missing, stamps, strict=True):
        data: dict[str, Any] = {"id": mid, "stored": False, "timestamp_ms": stamp}
        data["priority"] = mid >> 61
        if mid in makers:
            data["sender_id"], data["guild_id"] = makers[mid]
        data["label"] = f"{data.get('sender_id', '?')}: (not in frame)"
        yield mid, data


# -- chains --------------------------------------------------------------------


def trace(
    msgs: pd.DataFrame, message_id: int | str, *, graph: nx.DiGraph | None = None
) -> pd.DataFrame:
    """Every ancestor and descendant of one message, in causal order.

    Parameters
    ----------
    msgs : pandas.DataFrame
        A message frame.
    message_id : int or str
        The message (decimal id).
    graph : networkx.DiGraph, optional
        ``lineage_graph(msgs)``, when already built (saves rebuilding it for
        each trace).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TRACE_COLUMNS`, in topological order, ties by time:
        ``depth`` (longest link count from a root of the trace), ``parent_id``
        and ``relation`` (the strongest link to an earlier message of the trace,
        the latest one on ties), ``latency_ms`` (time minus the parent's time),
        ``elapsed_ms`` (since the trace's first message), ``is_target``. Text
        columns have pandas' ``string`` dtype: a missing value shows as
        ``<NA>``, like the root's ``parent_id``.

    Raises
    ------
    MessageNotFound
        If the id is neither in the frame nor referenced by it.
    InvalidId
        If ``message_id`` is not a GemstoneID.
    InvalidQuery
        If ``msgs`` is not a message frame (a delivery frame is collapsed to
        one row per message first); the message names the missing columns.

    Examples
    --------
    >>> from rdebug_nb.latency import _example_messages
    >>> chain = trace(_example_messages(), "7436657122856673280")
    >>> chain["agent_id"].tolist(), chain["is_target"].tolist()
    (['probe', 'echo'], [True, False])
    """
    msgs = require_messages(msgs, LINEAGE_INPUT, "trace")
    graph = lineage_graph(msgs) if graph is None else graph
    target = _node_of(graph, message_id)
    nodes = nx.ancestors(graph, target) | nx.descendants(graph, target) | {target}
    return chain_frame(graph.subgraph(nodes), target)


def critical_path(
    msgs: pd.DataFrame, message_id: int | str, *, graph: nx.DiGraph | None = None
) -> pd.DataFrame:
    """The slowest chain of the conversation a message belongs to.

    The conversation is the message's ancestors and descendants, plus every
    message whose thread starts at ``message_id`` and their descendants (pass
    a thread id to get a whole thread). Of all chains in it, the one from its
    first to its last message that took the longest is returned.

    Parameters
    ----------
    msgs : pandas.DataFrame
        A message frame.
    message_id : int or str
        A message id or a thread id (``thread_root``).
    graph : networkx.DiGraph, optional
        ``lineage_graph(msgs)``, when already built.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TRACE_COLUMNS`, one row per message of the chain, first
        to last. ``elapsed_ms`` of the last row is the chain's duration.

    Raises
    ------
    MessageNotFound
        If the id is neither a message, a reference nor a thread of the frame.
    InvalidQuery
        If ``msgs`` is not a message frame (a delivery frame is collapsed to
        one row per message first); the message names the missing columns.

    Examples
    --------
    >>> from rdebug_nb.latency import _example_messages
    >>> path = critical_path(_example_messages(), 7436657122856673280)
    >>> int(path["elapsed_ms"].iloc[-1])
    21
    """
    msgs = require_messages(msgs, LINEAGE_INPUT, "critical_path")
    graph = lineage_graph(msgs) if graph is None else graph
    members = _conversation(graph, msgs, message_id)
    sub = graph.subgraph(members)
    path = _slowest_chain(sub)
    chain = nx.DiGraph()
    chain.add_nodes_from((node, sub.nodes[node]) for node in path)
    chain.add_edges_from((u, v, sub.edges[u, v]) for u, v in itertools.pairwise(path))
    return chain_frame(chain, decode_id(message_id).id)


def chain_frame(sub: nx.DiGraph, target: int | None = None) -> pd.DataFrame:
    """Tabulate a lineage (sub)graph in causal order (see :func:`trace`).

    Examples
    --------
    >>> chain_frame(nx.DiGraph()).columns.tolist() == list(TRACE_COLUMNS)
    True
    """
    dag = _acyclic(sub)
    order = list(
        nx.lexicographical_topological_sort(dag, key=lambda n: (_time(sub, n), n))
    )
    depth: dict[Hashable, int] = {}
    rows = []
    for node in order:
        parents = list(dag.predecessors(node))
        depth[node] = max((depth[p] + 1 for p in parents), default=0)
        parent = _primary_parent(sub, node, parents)
        rows.append(_chain_row(sub, node, parent, depth[node], target))
    return _chain_table(rows)


def _node_of(graph: nx.DiGraph, message_id: int | str) -> int:
    node = decode_id(message_id).id
    if node not in graph:
        raise MessageNotFound(
            f"message {node} is not in the frame nor referenced by it; load a "
            "wider time window or the guild it was published in"
        )
    return node


def _conversation(
    graph: nx.DiGraph, msgs: pd.DataFrame, message_id: int | str
) -> set[int]:
    node = decode_id(message_id).id
    roots = msgs.loc[msgs["thread_root"].eq(node).fillna(False), "id"].tolist()
    members: set[int] = set()
    if node in graph:
        members |= nx.ancestors(graph, node) | nx.descendants(graph, node) | {node}
    for root in map(int, roots):
        if root not in members:
            members |= nx.descendants(graph, root) | {root}
    if not members:
        raise MessageNotFound(
            f"{node} is neither a message, a reference nor a thread of the frame"
        )
    return members


def _slowest_chain(sub: nx.DiGraph) -> list[int]:
    dag = _acyclic(sub)
    start: dict[Hashable, tuple[int, int]] = {}
    came: dict[Hashable, Hashable | None] = {}
    for node in nx.topological_sort(dag):
        options = [(start[p][0], -start[p][1] - 1, p) for p in dag.predecessors(node)]
        best = min(options, key=lambda o: (o[0], o[1]), default=None)
        if best is None:
            start[node], came[node] = (_time(sub, node), 0), None
        else:
            start[node], came[node] = (best[0], -best[1]), best[2]
    end = max(
        start, key=lambda n: (_time(sub, n) - start[n][0], start[n][1], _time(sub, n))
    )
    path = [end]
    while came[path[-1]] is not None:
        path.append(came[path[-1]])
    return [node for node in reversed(path) if isinstance(node, int)]


def _primary_parent(
    sub: nx.DiGraph, node: Hashable, parents: list[Hashable]
) -> Hashable | None:
    if not parents:
        return None
    rank = {relation: i for i, relation in enumerate(RELATIONS)}

    def strength(parent: Hashable) -> tuple[int, int]:
        link = sub.edges[parent, node] if sub.has_edge(parent, node) else {}
        return rank.get(str(link.get("relation")), len(rank)), -_time(sub, parent)

    return min(parents, key=strength)


def _chain_row(
    sub: nx.DiGraph,
    node: Hashable,
    parent: Hashable | None,
    depth: int,
    target: int | None,
) -> dict[str, Any]:
    data = sub.nodes[node]
    link = (
        sub.edges[parent, node]
        if parent is not None and sub.has_edge(parent, node)
        else {}
    )
    stamp = _time(sub, node)
    return {
        "id": node,
        "depth": depth,
        "parent_id": parent,
        "relation": link.get("relation"),
        "agent_id": link.get("agent_id", data.get("sender_id")),
        "processor": link.get("processor"),
        "guild_id": data.get("guild_id"),
        "namespaces": list(data.get("namespaces", [])),
        "sender_id": data.get("sender_id"),
        "format": data.get("format"),
        "topics": list(data.get("topics", [])),
        "timestamp": stamp,
        "latency_ms": None if parent is None else stamp - _time(sub, parent),
        "is_error": bool(data.get("is_error", False)),
        "stored": bool(data.get("stored", False)),
        "is_target": node == target,
    }


def _chain_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(TRACE_COLUMNS))
    stamps = frame["timestamp"].astype("int64")
    frame["elapsed_ms"] = stamps - (stamps.min() if len(frame) else 0)
    frame["timestamp"] = pd.to_datetime(stamps, unit="ms", utc=True)
    for column in ("id", "parent_id"):
        frame[column] = pd.array(frame[column].tolist(), dtype="UInt64")
    frame["latency_ms"] = pd.array(frame["latency_ms"].tolist(), dtype="Int64")
    frame["depth"] = frame["depth"].astype("int64")
    frame = frame.astype(dict.fromkeys(_CHAIN_TEXTS, _TEXT))
    return frame.astype({"is_error": bool, "stored": bool, "is_target": bool})


def _time(sub: nx.DiGraph, node: Hashable) -> int:
    return int(sub.nodes[node].get("timestamp_ms", 0))


# -- layout --------------------------------------------------------------------


def layered_layout(
    graph: nx.DiGraph, *, sweeps: int = 4
) -> dict[Hashable, tuple[float, float]]:
    """Place nodes in layers so that edges point left to right.

    Cycles are broken by reversing the back edges of a depth-first search
    started at the sources; each node's layer is its longest path from a
    source; nodes within a layer are ordered by the barycenter of their
    neighbours (``sweeps`` passes down and up).

    Returns
    -------
    dict
        Node -> (x, y): x is the layer, y the rank in the layer, centred on 0.

    Examples
    --------
    >>> layered_layout(nx.DiGraph([("a", "b"), ("b", "c"), ("c", "a")]))
    {'a': (0.0, 0.0), 'b': (1.0, 0.0), 'c': (2.0, 0.0)}
    """
    dag = _acyclic(graph)
    layer: dict[Hashable, int] = {}
    for node in nx.topological_sort(dag):
        layer[node] = max((layer[p] + 1 for p in dag.predecessors(node)), default=0)
    layers: dict[int, list[Hashable]] = defaultdict(list)
    for node in graph:
        layers[layer[node]].append(node)
    rank = _order_layers(dag, [layers[i] for i in sorted(layers)], sweeps)
    return {
        node: (float(layer[node]), rank[node] - (len(layers[layer[node]]) - 1) / 2)
        for node in graph
    }


def _order_layers(
    dag: nx.DiGraph, layers: list[list[Hashable]], sweeps: int
) -> dict[Hashable, float]:
    rank = {node: float(i) for nodes in layers for i, node in enumerate(nodes)}
    for sweep in range(2 * sweeps):
        down = sweep % 2 == 0
        for nodes in layers if down else reversed(layers):
            near = dag.predecessors if down else dag.successors
            key = {n: _barycenter([rank[m] for m in near(n)], rank[n]) for n in nodes}
            nodes.sort(key=lambda n: key[n])
            rank.update((node, float(i)) for i, node in enumerate(nodes))
    return rank


def _barycenter(values: list[float], default: float) -> float:
    return sum(values) / len(values) if values else default


def _acyclic(graph: nx.DiGraph) -> nx.DiGraph:
    back = _back_edges(graph)
    dag = nx.DiGraph()
    dag.add_nodes_from(graph)
    dag.add_edges_from(
        (v, u) if (u, v) in back else (u, v) for u, v in graph.edges() if u != v
    )
    return dag


def _back_edges(graph: nx.DiGraph) -> set[tuple[Hashable, Hashable]]:
    state: dict[Hashable, bool] = {}  # True while on the DFS stack
    back: set[tuple[Hashable, Hashable]] = set()
    roots = [n for n in graph if graph.in_degree(n) == 0] + list(graph)
    for root in roots:
        if root in state:
            continue
        state[root] = True
        stack = [(root, iter(graph.successors(root)))]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = False
                stack.pop()
            elif state.get(child) is True:
                back.add((node, child))
            elif child not in state:
                state[child] = True
                stack.append((child, iter(graph.successors(child))))
    return back


# -- conversions ----------------------------------------------------------------


def to_node_link(graph: nx.DiGraph, *, ids_as_str: bool = False) -> dict[str, Any]:
    """Convert a graph to networkx node-link data (JSON-ready).

    Parameters
    ----------
    graph : networkx.DiGraph
        A flow or lineage graph.
    ids_as_str : bool, default False
        Write message ids (lineage node keys, ``source`` / ``target`` and
        :data:`ID_ATTRIBUTES`) and any integer above 2**53 as decimal strings,
        for JSON readers that hold numbers as doubles (JavaScript). Python's
        ``json`` keeps ints exact either way. The result records the choice in
        ``graph["ids_as_str"]``.

    Returns
    -------
    dict
        ``{"directed", "multigraph", "graph", "nodes", "edges"}``.

    Examples
    --------
    >>> graph = nx.DiGraph(kind="lineage")
    >>> graph.add_edge(9742500132921819136, 9742500132942774272, relation="forward")
    >>> data = to_node_link(graph, ids_as_str=True)
    >>> data["edges"][0]["source"]
    '9742500132921819136'
    >>> sorted(from_node_link(data).edges) == sorted(graph.edges)
    True
    """
    data: dict[str, Any] = nx.node_link_data(graph, edges="edges")
    data["graph"] = dict(data["graph"], ids_as_str=ids_as_str)
    if ids_as_str:
        data["nodes"] = [_texts(node) for node in data["nodes"]]
        data["edges"] = [_texts(edge) for edge in data["edges"]]
    return data


def from_node_link(data: dict[str, Any]) -> nx.DiGraph:
    """Rebuild a graph written by :func:`to_node_link` (ids exact again).

    Examples
    --------
    >>> lineage = nx.DiGraph([(2**64 - 1, 1)], kind="lineage")
    >>> graph = from_node_link(to_node_link(lineage, ids_as_str=True))
    >>> list(graph.edges)
    [(18446744073709551615, 1)]
    """
    lineage = data.get("graph", {}).get("kind") == "lineage"
    if data.get("graph", {}).get("ids_as_str"):
        data = dict(data, nodes=[_ints(n, lineage) for n in data["nodes"]])
        data["edges"] = [_ints(e, lineage) for e in data["edges"]]
    graph: nx.DiGraph = nx.node_link_graph(
        data, directed=True, multigraph=False, edges="edges"
    )
    graph.graph.pop("ids_as_str", None)
    if lineage:
        for node, attributes in graph.nodes(data=True):
            attributes["id"] = node
    return graph


def _texts(item: dict[str, Any]) -> dict[str, Any]:
    return {
        k: str(v)
        if _is_big_int(v)
        or (k in ("source", "target", *ID_ATTRIBUTES) and isinstance(v, int))
        else v
        for k, v in item.items()
    }


def _ints(item: dict[str, Any], lineage: bool) -> dict[str, Any]:
    keys = ("source", "target", *ID_ATTRIBUTES) if lineage else ()
    return {
        k: int(v) if k in keys and isinstance(v, str) and v.isdigit() else v
        for k, v in item.items()
    }


def _is_big_int(value: Any) -> bool:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and abs(value) >= _JSON_SAFE_INT
    )


def to_graphml(graph: nx.DiGraph, path: str | Path) -> None:
    """Write a graph as GraphML.

    GraphML has no list type and its ``long`` is signed 64-bit, so lists and
    dicts are written as JSON text, message ids (node keys of a lineage graph
    and :data:`ID_ATTRIBUTES`) as decimal text, and missing values are left
    out. :func:`read_graphml` undoes all of this; other tools see text.

    Examples
    --------
    >>> import tempfile
    >>> graph = nx.DiGraph(kind="lineage")
    >>> graph.add_node(9742500132942774272, id=9742500132942774272, topics=["a", "b"])
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     to_graphml(graph, f"{folder}/g.graphml")
    ...     back = read_graphml(f"{folder}/g.graphml")
    >>> dict(back.nodes[9742500132942774272])
    {'id': 9742500132942774272, 'topics': ['a', 'b']}
    """
    encoded: set[str] = set()
    sub = nx.DiGraph()
    for node, data in graph.nodes(data=True):
        sub.add_node(str(node), **_graphml_values(data, encoded))
    for u, v, data in graph.edges(data=True):
        sub.add_edge(str(u), str(v), **_graphml_values(data, encoded))
    sub.graph.update(_graphml_values(graph.graph, encoded))
    sub.graph["json_attributes"] = ",".join(sorted(encoded))
    nx.write_graphml(sub, str(path))


def read_graphml(path: str | Path) -> nx.DiGraph:
    """Read a graph written by :func:`to_graphml`."""
    sub = nx.read_graphml(str(path), node_type=str)
    encoded = set(filter(None, str(sub.graph.pop("json_attributes", "")).split(",")))
    lineage = sub.graph.get("kind") == "lineage"
    graph = nx.DiGraph(**sub.graph)
    rename = (lambda n: int(n)) if lineage else (lambda n: n)
    for node, data in sub.nodes(data=True):
        graph.add_node(rename(node), **_decoded(data, encoded))
    for u, v, data in sub.edges(data=True):
        graph.add_edge(rename(u), rename(v), **_decoded(data, encoded))
    return graph


def _graphml_values(data: dict[str, Any], encoded: set[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in data.items():
        if value is None or (isinstance(value, float) and value != value):
            continue
        if (
            isinstance(value, list | tuple | dict)
            or key in ID_ATTRIBUTES
            or _is_big_int(value)
        ):
            encoded.add(key)
            value = json.dumps(value, ensure_ascii=False)
        found[key] = value
    return found


def _decoded(data: dict[str, Any], encoded: set[str]) -> dict[str, Any]:
    return {
        k: json.loads(v) if k in encoded and isinstance(v, str) else v
        for k, v in data.items()
    }


def to_dot(graph: nx.DiGraph, *, name: str | None = None) -> str:
    """Write a graph as Graphviz DOT text (no Graphviz needed to produce it).

    Node labels are the ``label`` attribute (else the key); edge labels are the
    message count of a flow edge, or the relation and agent of a lineage edge.
    Every id and label is a quoted, escaped DOT string.

    Examples
    --------
    >>> graph = nx.DiGraph(kind="flow")
    >>> graph.add_edge("agent:g$a", 'topic:g:say "hi"', count=2)
    >>> print(to_dot(graph))
    digraph "flow" {
      rankdir=LR;
      "agent:g$a" [label="agent:g$a"];
      "topic:g:say \\"hi\\"" [label="topic:g:say \\"hi\\""];
      "agent:g$a" -> "topic:g:say \\"hi\\"" [label="2"];
    }
    """
    lines = [
        f"digraph {_dot_text(name or graph.graph.get('kind', 'graph'))} {{",
        "  rankdir=LR;",
    ]
    for node, data in graph.nodes(data=True):
        label = data.get("label", node)
        lines.append(f"  {_dot_text(node)} [label={_dot_text(label)}];")
    for u, v, data in graph.edges(data=True):
        label = _dot_edge_label(data)
        lines.append(f"  {_dot_text(u)} -> {_dot_text(v)} [label={_dot_text(label)}];")
    lines.append("}")
    return "\n".join(lines)


def _dot_edge_label(data: dict[str, Any]) -> str:
    if "count" in data:
        errors = data.get("errors", 0)
        return f"{data['count']}" + (f" ({errors} errors)" if errors else "")
    return " ".join(str(data[k]) for k in ("relation", "agent_id") if data.get(k))


def _dot_text(value: Any) -> str:
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\r", "").replace("\n", "\\n") + '"'

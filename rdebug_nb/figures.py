"""Figures: plotly views of a message frame's flow, timing and failures.

Every function returns a :class:`plotly.graph_objects.Figure` built from one pure
data view (:mod:`rdebug_nb.graph`, :mod:`rdebug_nb.latency`,
:mod:`rdebug_nb.traffic`, :mod:`rdebug_nb.failures`). Text taken from the data
(agent and topic names, formats, errors) is HTML-escaped before it reaches a
label, a legend or a hover box, because plotly renders those as HTML.

Large inputs stay usable: the number of traces of each figure is bounded (edges
are drawn as a few traces by width bucket, nodes as one trace per kind), and
views that cap what they draw say so in a note at the top of the figure. Small
ones too: a figure with nothing to draw (an empty time window, a frame without
hops for the latency view) says so in a note in its middle.

Examples
--------
>>> from rdebug_nb.latency import _example_messages
>>> msgs = _example_messages()  # a probe's message and the echo agent's answer
>>> fig = plot_flow(msgs)
>>> fig.layout.title.text
'Message flow'
>>> [trace.name for trace in fig.data if trace.name in ("agents", "topics")]
['agents', 'topics']
"""

from __future__ import annotations

import html
import math
from collections.abc import Hashable
from typing import Any, Final, Literal

import networkx as nx
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from rdebug_nb.errors import InvalidQuery
from rdebug_nb.failures import dead_letters
from rdebug_nb.graph import (
    AGENT,
    FLOW_INPUT,
    TOPIC,
    flow_graph,
    layered_layout,
    trace,
)
from rdebug_nb.latency import (
    HOP_INPUT,
    Latency,
    home_guilds,
    hop_table,
    is_org_copy,
)
from rdebug_nb.messages import require_messages
from rdebug_nb.traffic import THROUGHPUT_INPUT, throughput

ERROR_COLOR: Final = "#d62728"
"""Colour of errors in every figure."""

AGENT_COLOR: Final = "#1f77b4"
TOPIC_COLOR: Final = "#7f7f7f"
_EDGE_COLOR: Final = "rgba(90, 90, 90, 0.55)"
_ERROR_EDGE_COLOR: Final = "rgba(214, 39, 40, 0.6)"
_MISSING_COLOR: Final = "#bbbbbb"
_WIDTHS: Final = (1.0, 2.0, 3.5, 5.5)
_WEBGL_POINTS: Final = 5000
_TEMPLATE: Final = "plotly_white"
_NO_MESSAGES: Final = "no messages in this frame"
_TIMELINE_INPUT: Final = (
    "id",
    "guild_id",
    "topics",
    "timestamp",
    "sender_id",
    "format",
    "is_error",
    "is_dead_letter",
    "process_status",
    "payload",
)
_HEATMAP_INPUT: Final = ("id", "guild_id", "topics", "sender_id")
_WATERFALL_INPUT: Final = (
    "id",
    "depth",
    "agent_id",
    "format",
    "latency_ms",
    "elapsed_ms",
    "is_error",
    "stored",
)


def escape(value: Any) -> str:
    """Text from the data, safe inside plotly labels and hover boxes.

    >>> escape('<img src=x onerror="alert(1)">')
    '&lt;img src=x onerror="alert(1)"&gt;'
    """
    return html.escape(_plain(value), quote=False)


def _plain(value: Any, default: str = "") -> str:
    """Text of a data value; ``default`` for a missing one (None, NaN, <NA>)."""
    missing = value is None or value is pd.NA
    missing = missing or (isinstance(value, float) and math.isnan(value))
    return default if missing else str(value)


# -- flow ------------------------------------------------------------------------


def plot_flow(
    data: pd.DataFrame | nx.DiGraph,
    *,
    max_nodes: int = 2000,
    labels: int = 150,
    title: str | None = None,
) -> go.Figure:
    """Draw the flow graph: agents and topics in layers, flow left to right.

    Parameters
    ----------
    data : DataFrame or networkx.DiGraph
        A message frame, or a graph from :func:`rdebug_nb.graph.flow_graph`.
    max_nodes : int, default 2000
        Draw at most this many nodes, the largest by ``messages``; a note says
        how many were left out.
    labels : int, default 150
        Write node names next to the nodes when there are at most this many
        (hover always shows them).
    title : str, optional
        Figure title (default "Message flow").

    Returns
    -------
    plotly.graph_objects.Figure
        Traces: up to eight edge traces (four width buckets, plain and with
        errors) with arrowheads, one invisible hover trace at edge midpoints
        (``"edge details"``), and one node trace per kind (``"agents"``,
        ``"topics"``) whose ``customdata`` holds the node keys. Node size
        follows volume, edge width message count.

    Examples
    --------
    >>> from rdebug_nb.latency import _example_messages
    >>> fig = plot_flow(_example_messages())
    >>> sorted(k for t in fig.data if t.customdata is not None for k in t.customdata)
    ['agent:g$echo', 'agent:g$probe', 'topic:g:t']
    """
    graph = _flow_of(data, "plot_flow")
    shown = _largest_nodes(graph, max_nodes)
    pos = layered_layout(shown)
    fig = go.Figure(layout=_layout(title or "Message flow"))
    fig.add_traces(_edge_traces(shown, pos))
    fig.add_trace(_edge_hover_trace(shown, pos))
    text = shown.number_of_nodes() <= labels
    fig.add_traces([_node_trace(shown, pos, kind, text) for kind in (AGENT, TOPIC)])
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(height=_flow_height(pos), hovermode="closest")
    if shown.number_of_nodes() < graph.number_of_nodes():
        _note(
            fig,
            f"showing {shown.number_of_nodes():,} of "
            f"{graph.number_of_nodes():,} nodes (largest by volume)",
        )
    if graph.number_of_nodes() == 0:
        _empty_note(fig, "no messages: the flow graph is empty")
    return fig


def _flow_of(data: pd.DataFrame | nx.DiGraph, caller: str) -> nx.DiGraph:
    if isinstance(data, nx.DiGraph):
        return data
    return flow_graph(require_messages(data, FLOW_INPUT, caller))


def _largest_nodes(graph: nx.DiGraph, limit: int) -> nx.DiGraph:
    if graph.number_of_nodes() <= limit:
        return graph
    ranked = sorted(graph, key=lambda n: -int(graph.nodes[n].get("messages", 0)))
    return graph.subgraph(ranked[:limit])


def _edge_traces(
    graph: nx.DiGraph, pos: dict[Hashable, tuple[float, float]]
) -> list[go.Scatter]:
    counts = [int(d.get("count", 1)) for _, _, d in graph.edges(data=True)]
    bounds = _bucket_bounds(counts)
    groups: dict[tuple[int, bool], list[tuple[Hashable, Hashable]]] = {}
    for u, v, d in graph.edges(data=True):
        bucket = int(np.searchsorted(bounds, int(d.get("count", 1)), side="left"))
        groups.setdefault((bucket, bool(d.get("errors"))), []).append((u, v))
    return [
        _edge_trace(edges, pos, bucket, failed, bounds)
        for (bucket, failed), edges in sorted(groups.items())
    ]


def _bucket_bounds(counts: list[int]) -> list[int]:
    if not counts:
        return []
    cuts = np.quantile(np.asarray(counts, dtype=float), [0.5, 0.8, 0.95])
    bounds = sorted({int(cut) for cut in cuts if cut < max(counts)})
    return bounds[: len(_WIDTHS) - 1]


def _edge_trace(
    edges: list[tuple[Hashable, Hashable]],
    pos: dict[Hashable, tuple[float, float]],
    bucket: int,
    failed: bool,
    bounds: list[int],
) -> go.Scatter:
    xs: list[float | None] = []
    ys: list[float | None] = []
    for u, v in edges:
        xs += [pos[u][0], pos[v][0], None]
        ys += [pos[u][1], pos[v][1], None]
    width = _WIDTHS[min(bucket, len(_WIDTHS) - 1)]
    color = _ERROR_EDGE_COLOR if failed else _EDGE_COLOR
    return go.Scatter(
        x=xs,
        y=ys,
        mode="lines+markers",
        line={"width": width, "color": color},
        marker={
            "symbol": "arrow",
            "angleref": "previous",
            "size": [0, 8 + 2 * width, 0] * len(edges),
            "color": color,
        },
        hoverinfo="skip",
        name=_bucket_name(bucket, bounds, failed),
        legendgroup="edges",
    )


def _bucket_name(bucket: int, bounds: list[int], failed: bool) -> str:
    if not bounds:
        size = "all"
    elif bucket == 0:
        size = f"1 to {bounds[0]}"
    elif bucket < len(bounds):
        size = f"{bounds[bucket - 1] + 1} to {bounds[bucket]}"
    else:
        size = f"over {bounds[-1]}"
    return f"edges, {size} msgs" + (", with errors" if failed else "")


def _edge_hover_trace(
    graph: nx.DiGraph, pos: dict[Hashable, tuple[float, float]]
) -> go.Scatter:
    xs, ys, texts = [], [], []
    for u, v, d in graph.edges(data=True):
        xs.append((pos[u][0] + pos[v][0]) / 2)
        ys.append((pos[u][1] + pos[v][1]) / 2)
        texts.append(_edge_text(graph, u, v, d))
    return go.Scatter(
        x=xs,
        y=ys,
        mode="markers",
        marker={"size": 10, "color": "rgba(0, 0, 0, 0)"},
        hovertext=texts,
        hoverinfo="text",
        name="edge details",
        showlegend=False,
    )


def _edge_text(graph: nx.DiGraph, u: Hashable, v: Hashable, d: dict[str, Any]) -> str:
    head = f"{_node_name(graph, u)} → {_node_name(graph, v)}"
    counts = f"{escape(d.get('relation'))}: {d.get('count', 0)} messages"
    counts += f", {d.get('errors', 0)} errors"
    lines = [head, counts]
    if "p50_ms" in d:
        lines.append(
            f"latency p50 {d['p50_ms']:.0f} · p90 {d['p90_ms']:.0f} · "
            f"p95 {d['p95_ms']:.0f} · p99 {d['p99_ms']:.0f} ms ({d['hops']} hops)"
        )
    return "<br>".join(lines)


def _node_name(graph: nx.DiGraph, node: Hashable) -> str:
    return escape(graph.nodes[node].get("label", node))


def _node_trace(
    graph: nx.DiGraph, pos: dict[Hashable, tuple[float, float]], kind: str, text: bool
) -> go.Scatter:
    nodes = [n for n in graph if graph.nodes[n].get("kind") == kind]
    volume = [int(graph.nodes[n].get("messages", 0)) for n in nodes]
    peak = max([*volume, 1])
    failed = [bool(graph.nodes[n].get("errors")) for n in nodes]
    base = AGENT_COLOR if kind == AGENT else TOPIC_COLOR
    return go.Scatter(
        x=[pos[n][0] for n in nodes],
        y=[pos[n][1] for n in nodes],
        mode="markers+text" if text else "markers",
        text=[_short_label(_node_name(graph, n)) for n in nodes],
        textposition=_label_sides(pos, nodes),
        hovertext=[_node_text(graph, n) for n in nodes],
        hoverinfo="text",
        customdata=nodes,
        marker={
            "size": [10 + 26 * math.sqrt(v / peak) for v in volume],
            "symbol": "circle" if kind == AGENT else "square",
            "color": base,
            "line": {
                "width": [3 if f else 1 for f in failed],
                "color": [ERROR_COLOR if f else "white" for f in failed],
            },
        },
        name="agents" if kind == AGENT else "topics",
    )


def _short_label(name: str) -> str:
    """A long ``prefix:rest`` topic name on two lines, so labels stay narrow."""
    head, colon, rest = name.partition(":")
    return f"{head}:<br>{rest}" if colon and len(name) > 16 else name


def _label_sides(
    pos: dict[Hashable, tuple[float, float]], nodes: list[Hashable]
) -> list[str]:
    """Above or below each node, alternating down each column of the layout.

    Neighbours in a column are one row apart, so alternating keeps their labels
    from running into each other.
    """
    columns: dict[float, list[float]] = {}
    for x, y in pos.values():
        columns.setdefault(x, []).append(y)
    ranks = {x: {y: i for i, y in enumerate(sorted(ys))} for x, ys in columns.items()}
    sides = ("top center", "bottom center")
    return [sides[ranks[pos[n][0]][pos[n][1]] % 2] for n in nodes]


def _node_text(graph: nx.DiGraph, node: Hashable) -> str:
    d = graph.nodes[node]
    head = f"<b>{escape(d.get('label', node))}</b> ({escape(d.get('kind'))})"
    where = f"guild {escape(d.get('guild_id'))}"
    if d.get("kind") == AGENT:
        counts = f"published {d.get('published', 0)}, processed {d.get('processed', 0)}"
    else:
        counts = f"messages {d.get('messages', 0)}, delivered {d.get('delivered', 0)}"
    return "<br>".join([head, where, counts, f"errors {d.get('errors', 0)}"])


def _flow_height(pos: dict[Hashable, tuple[float, float]]) -> int:
    spread = max((abs(y) for _, y in pos.values()), default=0.0)
    return int(min(2400, max(450, 160 + 220 * spread)))


# -- sankey ------------------------------------------------------------------------


def plot_sankey(
    data: pd.DataFrame | nx.DiGraph, *, max_links: int = 300, title: str | None = None
) -> go.Figure:
    """Volumes from publishing agents through topics to processing agents.

    Each agent appears twice: on the left as a publisher (``"name ▸"``) and on
    the right as a processor (``"▸ name"``), so loops in the flow stay readable.

    Parameters
    ----------
    data : DataFrame or networkx.DiGraph
        A message frame or a flow graph.
    max_links : int, default 300
        Keep the largest links; a note says how many were left out.
    title : str, optional
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        One ``Sankey`` trace; link values are message counts.

    Examples
    --------
    >>> from rdebug_nb.latency import _example_messages
    >>> plot_sankey(_example_messages()).data[0].node.label
    ('Echo ▸', 't', 'Probe ▸', '▸ Echo')
    """
    graph = _flow_of(data, "plot_sankey")
    links = sorted(graph.edges(data=True), key=lambda e: -int(e[2].get("count", 0)))
    kept = links[:max_links]
    nodes, link = _sankey_links(graph, kept)
    fig = go.Figure(
        go.Sankey(arrangement="snap", node=nodes, link=link),
        layout=_layout(title or "Agent → topic → agent volumes"),
    )
    fig.update_layout(height=max(450, 9 * len(nodes["label"])))
    if len(kept) < len(links):
        _note(fig, f"showing the {len(kept):,} largest of {len(links):,} links")
    if not links:
        _empty_note(fig, "no messages: the flow graph is empty")
    return fig


def _sankey_links(
    graph: nx.DiGraph, edges: list[tuple[Hashable, Hashable, dict[str, Any]]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sankey node and link specs: publishers left, topics middle, readers right."""
    index: dict[tuple[str, Hashable], int] = {}

    def slot(side: str, node: Hashable) -> int:
        return index.setdefault((side, node), len(index))

    ends = [
        (slot("out", u), slot("topic", v))
        if graph.nodes[u].get("kind") == AGENT
        else (slot("topic", u), slot("in", v))
        for u, v, _ in edges
    ]
    link = {
        "source": [source for source, _ in ends],
        "target": [target for _, target in ends],
        "value": [int(d.get("count", 0)) for _, _, d in edges],
        "color": [
            _ERROR_EDGE_COLOR if d.get("errors") else "rgba(0,0,0,0.2)"
            for _, _, d in edges
        ],
        "hovertemplate": "%{source.label} → %{target.label}<br>"
        "%{value} messages<extra></extra>",
    }
    nodes = {
        "label": [_sankey_label(graph, side, node) for side, node in index],
        "color": [TOPIC_COLOR if side == "topic" else AGENT_COLOR for side, _ in index],
        "pad": 12,
    }
    return nodes, link


def _sankey_label(graph: nx.DiGraph, side: str, node: Hashable) -> str:
    name = _node_name(graph, node)
    return {"out": f"{name} ▸", "in": f"▸ {name}"}.get(side, name)


# -- timeline ------------------------------------------------------------------------


def plot_timeline(
    msgs: pd.DataFrame, *, max_points: int = 20_000, title: str | None = None
) -> go.Figure:
    """One swimlane per agent, one marker per message it sent; errors marked.

    Dead letters are drawn in the lane of the agent that failed. A message
    copied into the organisation namespace is drawn once.

    Parameters
    ----------
    msgs : pandas.DataFrame
        A message frame.
    max_points : int, default 20000
        Draw at most the newest ``max_points`` messages; a note says so.
    title : str, optional
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        Traces ``"messages"``, ``"errors"`` and ``"dead letters"`` (WebGL above
        5,000 points).

    Examples
    --------
    >>> from rdebug_nb.latency import _example_messages
    >>> [(t.name, len(t.x)) for t in plot_timeline(_example_messages()).data]
    [('messages', 2), ('errors', 0), ('dead letters', 0)]
    """
    msgs = require_messages(msgs, _TIMELINE_INPUT, "plot_timeline")
    rows = _timeline_rows(msgs)
    shown = rows.iloc[-max_points:] if len(rows) > max_points else rows
    fig = go.Figure(layout=_layout(title or "Timeline by agent"))
    for name, part, symbol, color in (
        ("messages", shown.loc[shown["state"] == "ok"], "circle", AGENT_COLOR),
        ("errors", shown.loc[shown["state"] == "error"], "x", ERROR_COLOR),
        ("dead letters", shown.loc[shown["state"] == "dead"], "diamond", ERROR_COLOR),
    ):
        fig.add_trace(_lane_trace(name, part, symbol, color, len(shown)))
    lanes = list(dict.fromkeys(rows.sort_values(["guild", "lane"])["lane"]))
    fig.update_yaxes(categoryorder="array", categoryarray=lanes[::-1], type="category")
    fig.update_layout(height=int(min(2400, 160 + 26 * len(lanes))))
    if len(shown) < len(rows):
        _note(fig, f"showing the newest {len(shown):,} of {len(rows):,} messages")
    if rows.empty:
        _empty_note(fig, _NO_MESSAGES)
    return fig


def _timeline_rows(msgs: pd.DataFrame) -> pd.DataFrame:
    msgs = msgs.reset_index(drop=True)
    frame = msgs.assign(home=home_guilds(msgs), _org=is_org_copy(msgs))
    frame = frame.sort_values("_org", kind="stable").drop_duplicates("id")
    senders = frame["sender_id"].astype(object).tolist()
    letters = dead_letters(frame)
    failed_by = dict(
        zip(letters["id"].tolist(), letters["agent_id"].tolist(), strict=True)
    )
    ids = frame["id"].tolist()
    agents = [failed_by.get(mid, a) for mid, a in zip(ids, senders, strict=True)]
    several = frame["home"].nunique() > 1
    lanes = [
        escape(f"{agent} · {guild}" if several else agent)
        for agent, guild in zip(agents, frame["home"].tolist(), strict=True)
    ]
    status = frame["process_status"].astype(object).eq("error").fillna(False)
    state = np.where(
        frame["is_dead_letter"],
        "dead",
        np.where(frame["is_error"] | status, "error", "ok"),
    )
    out = pd.DataFrame(
        {
            "timestamp": frame["timestamp"],
            "lane": lanes,
            "guild": frame["home"].tolist(),
            "state": state,
            "hover": _message_texts(frame),
        }
    )
    return out.sort_values("timestamp", kind="stable").reset_index(drop=True)


def _message_texts(frame: pd.DataFrame) -> list[str]:
    return [
        "<br>".join(
            [
                f"<b>{escape(_short(fmt))}</b>",
                f"id {mid}",
                f"from {escape(sender)}",
                f"topics {escape(', '.join(map(str, topics)))}",
                f"{stamp:%H:%M:%S.%f}"[:-3],
            ]
        )
        for mid, fmt, sender, topics, stamp in zip(
            frame["id"].tolist(),
            frame["format"].tolist(),
            frame["sender_id"].tolist(),
            frame["topics"].tolist(),
            frame["timestamp"].tolist(),
            strict=True,
        )
    ]


def _lane_trace(
    name: str, part: pd.DataFrame, symbol: str, color: str, total: int
) -> go.Scatter | go.Scattergl:
    kind = go.Scattergl if total > _WEBGL_POINTS else go.Scatter
    return kind(
        x=part["timestamp"],
        y=part["lane"],
        mode="markers",
        marker={
            "symbol": symbol,
            "color": color,
            "size": 8 if name == "messages" else 11,
        },
        hovertext=part["hover"].tolist(),
        hoverinfo="text",
        name=name,
    )


# -- waterfall ---------------------------------------------------------------------


def plot_waterfall(
    data: pd.DataFrame,
    message_id: int | str | None = None,
    *,
    max_rows: int = 300,
    title: str | None = None,
) -> go.Figure:
    """Waterfall of one trace: a bar per message from its parent's time to its own.

    Parameters
    ----------
    data : pandas.DataFrame
        A frame from :func:`rdebug_nb.graph.trace` or
        :func:`~rdebug_nb.graph.critical_path`, or a message frame together
        with ``message_id``.
    message_id : int or str, optional
        Trace this message of the message frame ``data``.
    max_rows : int, default 300
        Draw the first ``max_rows`` messages in causal order; a note says how
        many were left out.
    title : str, optional
        Figure title (default names the traced message).

    Returns
    -------
    plotly.graph_objects.Figure
        One horizontal ``Bar`` trace (``"messages"``): base = parent's elapsed
        time, length = hop latency; errors in red, messages not in the frame in
        grey.

    Raises
    ------
    InvalidQuery
        If ``message_id`` is not given and ``data`` is not a trace frame.
    MessageNotFound
        If ``message_id`` is neither in the frame nor referenced by it.

    Examples
    --------
    >>> from rdebug_nb.latency import _example_messages
    >>> fig = plot_waterfall(_example_messages(), 7436657122944753664)
    >>> list(fig.data[0].base + fig.data[0].x)
    [0.5, 21.0]
    """
    chain = trace(data, message_id) if message_id is not None else _chain_of(data)
    shown = chain.iloc[:max_rows]
    target = _target_of(chain, message_id)
    fig = go.Figure(layout=_layout(title or f"Trace of {escape(target)}"))
    fig.add_trace(_waterfall_bars(shown))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(title_text="ms since the first message")
    fig.update_layout(height=int(min(2400, 160 + 24 * len(shown))), showlegend=False)
    if len(shown) < len(chain):
        _note(fig, f"showing the first {len(shown):,} of {len(chain):,} messages")
    if chain.empty:
        _empty_note(fig, "no messages in this trace")
    return fig


def _chain_of(data: pd.DataFrame) -> pd.DataFrame:
    """``data`` if it is a trace frame; else say what plot_waterfall needs."""
    columns = getattr(data, "columns", ())
    missing = [name for name in _WATERFALL_INPUT if name not in columns]
    if not missing:
        return data
    given = (
        "a message frame but no message_id"
        if "message_history" in columns
        else f"a frame without the columns {', '.join(map(repr, missing))}"
    )
    raise InvalidQuery(
        "plot_waterfall() draws one trace: pass rd.trace(msgs, message_id) or "
        "rd.critical_path(msgs, message_id), or a message frame and message_id; "
        f"it was given {given}"
    )


def _target_of(chain: pd.DataFrame, message_id: int | str | None) -> str:
    if message_id is not None:
        return f"message {message_id}"
    if chain.empty:
        return "no message"
    marked = chain["id"]
    if "is_target" in chain:
        marked = marked.loc[chain["is_target"].astype(bool)]
    return f"message {(marked if len(marked) else chain['id']).iloc[0]}"


def _waterfall_bars(chain: pd.DataFrame) -> go.Bar:
    latency = chain["latency_ms"].astype("Float64").fillna(0).to_numpy(dtype=float)
    elapsed = chain["elapsed_ms"].to_numpy(dtype=float)
    colors = [
        ERROR_COLOR if err else (AGENT_COLOR if stored else _MISSING_COLOR)
        for err, stored in zip(chain["is_error"], chain["stored"], strict=True)
    ]
    labels = [
        escape(f"{i}. {'  ' * int(depth)}{_plain(agent, '?')}: {_short(fmt)}")
        for i, (depth, agent, fmt) in enumerate(
            zip(chain["depth"], chain["agent_id"], chain["format"], strict=True), 1
        )
    ]
    return go.Bar(
        y=labels,
        x=np.maximum(latency, 0.5),
        base=elapsed - latency,
        orientation="h",
        marker={"color": colors},
        hovertext=_step_texts(chain),
        hoverinfo="text",
        name="messages",
    )


def _step_texts(chain: pd.DataFrame) -> list[str]:
    texts = []
    for row in chain.to_dict("records"):
        latency = row["latency_ms"]
        lines = [
            f"<b>{escape(row['agent_id'])}</b> {escape(row.get('processor'))}",
            f"id {row['id']} ({escape(_plain(row.get('relation'), 'root'))})",
            escape(row.get("format")),
            f"+{'?' if pd.isna(latency) else latency} ms, at {row['elapsed_ms']} ms",
        ]
        texts.append("<br>".join(lines))
    return texts


# -- heatmaps ----------------------------------------------------------------------


def plot_heatmap(
    msgs: pd.DataFrame,
    by: Literal["agent", "time"] = "agent",
    *,
    freq: str = "1s",
    max_topics: int = 40,
    max_rows: int = 60,
    title: str | None = None,
) -> go.Figure:
    """Heatmap of message counts: agent x topic, or time x topic.

    Parameters
    ----------
    msgs : pandas.DataFrame
        A message frame.
    by : {"agent", "time"}, default "agent"
        Rows are the sending agents, or time intervals of length ``freq``.
    freq : str, default "1s"
        Interval for ``by="time"``.
    max_topics, max_rows : int
        Keep the busiest topics (columns) and agents (rows); a note says how
        many were left out. Time rows are never cut.
    title : str, optional
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        One ``Heatmap`` trace; x are topics, y agents or interval starts.

    Examples
    --------
    >>> from rdebug_nb.latency import _example_messages
    >>> plot_heatmap(_example_messages()).data[0].y
    ('echo', 'probe')
    """
    needs = _HEATMAP_INPUT if by == "agent" else THROUGHPUT_INPUT
    msgs = require_messages(msgs, needs, "plot_heatmap")
    table = _agent_topic_table(msgs) if by == "agent" else _time_topic_table(msgs, freq)
    topics = table.sum(axis=0).sort_values(ascending=False).index[:max_topics]
    rows = table.index
    if by == "agent":
        rows = table.sum(axis=1).sort_values(ascending=False).index[:max_rows]
    shown = table.loc[rows, topics]
    default = (
        "Messages per agent and topic"
        if by == "agent"
        else "Messages per topic over time"
    )
    fig = go.Figure(
        go.Heatmap(
            z=shown.to_numpy(),
            x=[escape(t) for t in shown.columns],
            y=[escape(r) for r in shown.index] if by == "agent" else list(shown.index),
            colorscale="Blues",
            hovertemplate="%{y} · %{x}: %{z} messages<extra></extra>",
        ),
        layout=_layout(title or default),
    )
    fig.update_layout(height=int(min(2400, max(400, 140 + 22 * len(shown)))))
    if len(topics) < table.shape[1] or len(rows) < table.shape[0]:
        _note(
            fig,
            f"showing {len(rows):,} of {table.shape[0]:,} rows and "
            f"{len(topics):,} of {table.shape[1]:,} topics (the busiest)",
        )
    if msgs.empty:
        _empty_note(fig, _NO_MESSAGES)
    return fig


def _agent_topic_table(msgs: pd.DataFrame) -> pd.DataFrame:
    msgs = msgs.reset_index(drop=True)
    frame = pd.DataFrame(
        {"agent": msgs["sender_id"], "topic": _topic_labels(msgs), "id": msgs["id"]}
    ).explode("topic")
    return pd.crosstab(frame["agent"], frame["topic"])


def _time_topic_table(msgs: pd.DataFrame, freq: str) -> pd.DataFrame:
    counts = throughput(msgs, freq, fill=True)
    counts = counts.loc[counts["kind"] == "topic"]
    counts = counts.assign(name=_series_labels(counts))
    return counts.pivot_table(
        index="time", columns="name", values="messages", aggfunc="sum", fill_value=0
    )


def _topic_labels(msgs: pd.DataFrame) -> list[list[str]]:
    several = msgs["guild_id"].nunique() > 1
    return [
        [f"{t} · {g}" if several else str(t) for t in topics]
        for topics, g in zip(
            msgs["topics"].tolist(), msgs["guild_id"].tolist(), strict=True
        )
    ]


def _series_labels(counts: pd.DataFrame) -> list[str]:
    several = counts["guild_id"].nunique() > 1
    return [
        f"{name} · {guild}" if several else str(name)
        for name, guild in zip(
            counts["name"].tolist(), counts["guild_id"].tolist(), strict=True
        )
    ]


# -- latency, errors and volume -----------------------------------------------------


def plot_latency(
    data: pd.DataFrame | Latency, *, max_agents: int = 40, title: str | None = None
) -> go.Figure:
    """Hop latency distribution per agent (box: min, p25, p50, p75, max).

    The boxes are computed here from the hops, so the figure's size does not
    grow with the number of hops. p95 and p99 are drawn as markers.

    Parameters
    ----------
    data : DataFrame or Latency
        A message frame, or :func:`rdebug_nb.latency.latency`'s result.
    max_agents : int, default 40
        Keep the agents with the most hops; a note says how many were left out.
    title : str, optional
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        Traces ``"latency"`` (a ``Box``), ``"p95"`` and ``"p99"``.

    Examples
    --------
    >>> from rdebug_nb.latency import _example_messages
    >>> plot_latency(_example_messages()).data[0].median.tolist()
    [21.0]
    """
    if isinstance(data, Latency):
        hops = data.hops
    else:
        hops = hop_table(require_messages(data, HOP_INPUT, "plot_latency"))
    stats = _latency_stats(hops)
    shown = stats.iloc[:max_agents]
    fig = go.Figure(layout=_layout(title or "Hop latency per agent"))
    fig.add_traces(_latency_traces(shown))
    fig.update_yaxes(title_text="ms (result time minus origin time)")
    if len(shown) < len(stats):
        _note(fig, f"showing {len(shown):,} of {len(stats):,} agents (most hops)")
    if stats.empty:
        empty = isinstance(data, pd.DataFrame) and data.empty
        _empty_note(fig, _NO_MESSAGES if empty else "no hop with a measured latency")
    return fig


def _latency_traces(stats: pd.DataFrame) -> list[go.Box | go.Scatter]:
    labels = [escape(label) for label in stats["label"]]
    box = go.Box(
        x=labels,
        lowerfence=stats["min"],
        q1=stats["p25"],
        median=stats["p50"],
        q3=stats["p75"],
        upperfence=stats["max"],
        mean=stats["mean"],
        name="latency",
        marker_color=AGENT_COLOR,
    )
    marks = [
        go.Scatter(
            x=labels,
            y=stats[p],
            mode="markers",
            marker={"symbol": symbol, "size": 9, "color": ERROR_COLOR},
            name=p,
            hovertext=[
                f"{lab}: {p} {v:.0f} ms"
                for lab, v in zip(labels, stats[p], strict=True)
            ],
            hoverinfo="text",
        )
        for p, symbol in (("p95", "triangle-up"), ("p99", "star"))
    ]
    return [box, *marks]


def _latency_stats(hops: pd.DataFrame) -> pd.DataFrame:
    measured = hops.loc[hops["latency_ms"].notna()]
    measured = measured.assign(latency=measured["latency_ms"].astype("float64"))
    several = measured["guild_id"].nunique() > 1
    label = measured["agent_id"].astype(str)
    if several:
        label = label + " · " + measured["guild_id"].astype(str)
    grouped = measured.assign(label=label).groupby("label")["latency"]
    stats = pd.DataFrame(
        {
            "hops": grouped.size(),
            "min": grouped.min(),
            "max": grouped.max(),
            "mean": grouped.mean(),
            **{f"p{q}": grouped.quantile(q / 100) for q in (25, 50, 75, 95, 99)},
        }
    )
    return stats.sort_values("hops", ascending=False).reset_index()


def plot_error_rate(
    msgs: pd.DataFrame, freq: str = "1s", *, title: str | None = None
) -> go.Figure:
    """Failures per interval (bars) and their share of all messages (line).

    Failures are error messages, error statuses and dead letters; a message
    copied into the organisation namespace counts once.

    Returns
    -------
    plotly.graph_objects.Figure
        Traces ``"errors"`` (bars, left axis) and ``"error rate"`` (line, right
        axis, percent).

    Examples
    --------
    >>> from rdebug_nb.latency import _example_messages
    >>> [t.name for t in plot_error_rate(_example_messages()).data]
    ['errors', 'error rate']
    """
    msgs = require_messages(msgs, THROUGHPUT_INPUT, "plot_error_rate")
    counts = throughput(msgs, freq, fill=True)
    totals = (
        counts.loc[counts["kind"] == "agent"]
        .groupby("time")[["messages", "errors"]]
        .sum()
    )
    rate = 100 * totals["errors"] / totals["messages"].where(totals["messages"] > 0)
    fig = go.Figure(layout=_layout(title or f"Errors per {freq}"))
    fig.add_trace(
        go.Bar(
            x=totals.index, y=totals["errors"], name="errors", marker_color=ERROR_COLOR
        )
    )
    fig.add_trace(
        go.Scatter(
            x=totals.index,
            y=rate,
            mode="lines+markers",
            name="error rate",
            yaxis="y2",
            line={"color": "#444444"},
        )
    )
    top = float(rate.max()) if rate.notna().any() else 0.0
    fig.update_layout(
        yaxis={"title": {"text": "errors"}, "rangemode": "tozero"},
        yaxis2={
            "title": {"text": "% of messages"},
            "overlaying": "y",
            "side": "right",
            "range": [0, min(100.0, max(top * 1.1, 1.0))],
            "ticksuffix": "%",
            "tickmode": "auto",
            "nticks": 6,
            "showgrid": False,
        },
    )
    if msgs.empty:
        _empty_note(fig, _NO_MESSAGES)
    return fig


def plot_volume(
    msgs: pd.DataFrame,
    freq: str = "1s",
    *,
    max_topics: int = 12,
    title: str | None = None,
) -> go.Figure:
    """Messages per interval, stacked by topic.

    Parameters
    ----------
    msgs : pandas.DataFrame
        A message frame; a message stored under several topics counts in each.
    freq : str, default "1s"
        Interval length.
    max_topics : int, default 12
        Topics drawn on their own, the busiest; the rest are stacked as
        ``"other topics"``.
    title : str, optional
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        One ``Bar`` trace per topic (at most ``max_topics`` + 1).

    Examples
    --------
    >>> from rdebug_nb.latency import _example_messages
    >>> [(t.name, int(sum(t.y))) for t in plot_volume(_example_messages()).data]
    [('t', 2)]
    """
    msgs = require_messages(msgs, THROUGHPUT_INPUT, "plot_volume")
    counts = throughput(msgs, freq)
    counts = counts.loc[counts["kind"] == "topic"]
    counts = counts.assign(label=_series_labels(counts))
    table = counts.pivot_table(
        index="time", columns="label", values="messages", aggfunc="sum", fill_value=0
    )
    order = table.sum().sort_values(ascending=False).index
    fig = go.Figure(layout=_layout(title or f"Messages per topic every {freq}"))
    for label in order[:max_topics]:
        fig.add_trace(go.Bar(x=table.index, y=table[label], name=escape(label)))
    rest = list(order[max_topics:])
    if rest:
        fig.add_trace(
            go.Bar(x=table.index, y=table[rest].sum(axis=1), name="other topics")
        )
    fig.update_layout(barmode="stack", yaxis={"title": {"text": "messages"}})
    if msgs.empty:
        _empty_note(fig, _NO_MESSAGES)
    return fig


# -- shared ------------------------------------------------------------------------


def _annotate(
    fig: go.Figure, text: str, *, name: str, x: float, y: float, size: int, xanchor: str
) -> None:
    """Grey text placed on the paper (not the data), escaped."""
    fig.add_annotation(
        text=escape(text),
        xref="paper",
        yref="paper",
        x=x,
        y=y,
        showarrow=False,
        xanchor=xanchor,
        font={"size": size, "color": "#555555"},
        name=name,
    )


def _layout(title: str) -> go.Layout:
    return go.Layout(
        title={"text": title},
        template=_TEMPLATE,
        margin={"l": 40, "r": 40, "t": 70, "b": 40},
    )


def _note(fig: go.Figure, text: str) -> None:
    _annotate(fig, text, name="cap note", x=0, y=1.06, size=12, xanchor="left")


def _empty_note(fig: go.Figure, text: str) -> None:
    """Say in the middle of an empty figure why it is empty; hide its axes."""
    _annotate(fig, text, name="empty note", x=0.5, y=0.5, size=16, xanchor="center")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(height=300)


def _short(fmt: Any) -> str:
    return _plain(fmt).rsplit(".", 1)[-1]

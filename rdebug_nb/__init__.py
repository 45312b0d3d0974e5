"""rdebug_nb: debug RusticAI guilds whose message bus lives in Redis, from a notebook.

The package root re-exports the public API. Display names (figures, widgets) are
imported on first use, so ``import rdebug_nb`` and every data module work where
plotly, ipywidgets or IPython are not installed.

>>> import rdebug_nb as rd
>>> rd.decode_id(2824971229302112256).priority_name
'IMPORTANT'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rdebug_nb._keyspace_io import LoadReport
from rdebug_nb.backlog import BACKLOG_COLUMNS, backlog_table
from rdebug_nb.bus import Bus, connect, open_bus, redact_url
from rdebug_nb.errors import (
    CommandTimeout,
    ConnectionFailed,
    GuildNotFound,
    InvalidId,
    InvalidQuery,
    LoadIncomplete,
    MalformedMessage,
    MessageNotFound,
    PermissionDenied,
    RdebugError,
    RdebugWarning,
    SkippedEntriesWarning,
    SnapshotError,
    TruncatedWarning,
    WriteRefused,
)
from rdebug_nb.export import (
    ExportMetadata,
    read_jsonl,
    read_metadata,
    read_parquet,
    to_csv,
    to_jsonl,
    to_parquet,
)
from rdebug_nb.failures import ErrorReport, dead_letters, errors
from rdebug_nb.graph import (
    TRACE_COLUMNS,
    critical_path,
    flow_graph,
    from_node_link,
    lineage_graph,
    read_graphml,
    to_dot,
    to_edge_table,
    to_graphml,
    to_node_link,
    trace,
)
from rdebug_nb.guilds import GUILD_COLUMNS, TOPIC_COLUMNS
from rdebug_nb.ids import IdParts, decode_id, decode_ids, encode_id, try_decode_id
from rdebug_nb.latency import Latency, latency
from rdebug_nb.messages import (
    DELIVERY_COLUMNS,
    MESSAGE_COLUMNS,
    Skip,
    StoredMessage,
    skips,
    summarize,
    to_messages,
)
from rdebug_nb.offline import open_snapshot
from rdebug_nb.replay import ReplayPlan, replay
from rdebug_nb.server import EmbeddedServer
from rdebug_nb.tail import Tail
from rdebug_nb.traffic import busiest_guild, throughput

if TYPE_CHECKING:
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
    from rdebug_nb.widgets import explore, inspect, tail_view

__version__ = "0.1.0"

_LAZY = {
    "explore": "rdebug_nb.widgets",
    "inspect": "rdebug_nb.widgets",
    "plot_error_rate": "rdebug_nb.figures",
    "plot_flow": "rdebug_nb.figures",
    "plot_heatmap": "rdebug_nb.figures",
    "plot_latency": "rdebug_nb.figures",
    "plot_sankey": "rdebug_nb.figures",
    "plot_timeline": "rdebug_nb.figures",
    "plot_volume": "rdebug_nb.figures",
    "plot_waterfall": "rdebug_nb.figures",
    "tail_view": "rdebug_nb.widgets",
}


def __getattr__(name: str) -> Any:
    """Import display names (figures, widgets) on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rdebug_nb' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "BACKLOG_COLUMNS",
    "DELIVERY_COLUMNS",
    "GUILD_COLUMNS",
    "MESSAGE_COLUMNS",
    "TOPIC_COLUMNS",
    "TRACE_COLUMNS",
    "Bus",
    "CommandTimeout",
    "ConnectionFailed",
    "EmbeddedServer",
    "ErrorReport",
    "ExportMetadata",
    "GuildNotFound",
    "IdParts",
    "InvalidId",
    "InvalidQuery",
    "Latency",
    "LoadIncomplete",
    "LoadReport",
    "MalformedMessage",
    "MessageNotFound",
    "PermissionDenied",
    "RdebugError",
    "RdebugWarning",
    "ReplayPlan",
    "Skip",
    "SkippedEntriesWarning",
    "SnapshotError",
    "StoredMessage",
    "Tail",
    "TruncatedWarning",
    "WriteRefused",
    "backlog_table",
    "busiest_guild",
    "connect",
    "critical_path",
    "dead_letters",
    "decode_id",
    "decode_ids",
    "encode_id",
    "errors",
    "explore",
    "flow_graph",
    "from_node_link",
    "inspect",
    "latency",
    "lineage_graph",
    "open_bus",
    "open_snapshot",
    "plot_error_rate",
    "plot_flow",
    "plot_heatmap",
    "plot_latency",
    "plot_sankey",
    "plot_timeline",
    "plot_volume",
    "plot_waterfall",
    "read_graphml",
    "read_jsonl",
    "read_metadata",
    "read_parquet",
    "redact_url",
    "replay",
    "skips",
    "summarize",
    "tail_view",
    "throughput",
    "to_csv",
    "to_dot",
    "to_edge_table",
    "to_graphml",
    "to_jsonl",
    "to_messages",
    "to_node_link",
    "to_parquet",
    "trace",
    "try_decode_id",
]

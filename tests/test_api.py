"""The public surface: a sorted, pinned ``__all__`` that all resolves."""

from __future__ import annotations

import subprocess
import sys

import rdebug_nb as rd

PUBLIC = {
    "busiest_guild",
    "to_edge_table",
    "BACKLOG_COLUMNS",
    "Bus",
    "CommandTimeout",
    "ConnectionFailed",
    "DELIVERY_COLUMNS",
    "EmbeddedServer",
    "ErrorReport",
    "ExportMetadata",
    "GUILD_COLUMNS",
    "GuildNotFound",
    "IdParts",
    "InvalidId",
    "InvalidQuery",
    "Latency",
    "LoadIncomplete",
    "LoadReport",
    "MESSAGE_COLUMNS",
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
    "TOPIC_COLUMNS",
    "TRACE_COLUMNS",
    "Tail",
    "TruncatedWarning",
    "WriteRefused",
    "backlog_table",
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
    "to_graphml",
    "to_jsonl",
    "to_messages",
    "to_node_link",
    "to_parquet",
    "trace",
    "try_decode_id",
}


def isort_order(name: str) -> tuple[int, str]:
    """Constants, then classes, then functions, each alphabetical (ruff's RUF022)."""
    kind = 0 if name.isupper() else 1 if name[0].isupper() else 2
    return kind, name


def test_all_is_pinned_and_sorted() -> None:
    assert set(rd.__all__) == PUBLIC
    assert rd.__all__ == sorted(rd.__all__, key=isort_order)
    assert len(rd.__all__) == len(set(rd.__all__))


def test_every_public_name_resolves() -> None:
    missing = [name for name in rd.__all__ if not hasattr(rd, name)]

    assert missing == []


def test_display_names_load_lazily() -> None:
    code = (
        "import sys, rdebug_nb as rd; "
        "assert 'plotly' not in sys.modules and 'ipywidgets' not in sys.modules; "
        "rd.plot_flow; assert 'plotly' in sys.modules"
    )

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)

    assert done.returncode == 0, done.stderr
    assert "plot_flow" in dir(rd)


def test_exceptions_share_one_root() -> None:
    errors = [getattr(rd, n) for n in rd.__all__ if isinstance(getattr(rd, n), type)]
    exceptions = [e for e in errors if issubclass(e, BaseException)]

    assert all(
        issubclass(e, rd.RdebugError) or issubclass(e, rd.RdebugWarning)
        for e in exceptions
    )

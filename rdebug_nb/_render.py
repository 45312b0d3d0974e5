"""HTML of the inspector, explorer and tail views (static, escaped, no JavaScript).

Each function turns a pure view value (from :mod:`rdebug_nb._views` or a tail
snapshot) into an HTML fragment; the widgets and their ``_repr_html_`` fallbacks
share them. Every value from the data passes through :func:`html.escape`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import TYPE_CHECKING, Any, Final, cast

import msgspec
import pandas as pd

from rdebug_nb._jsontree import json_tree_html
from rdebug_nb._views import (
    HOP_FIELDS,
    STEP_FIELDS,
    TABLE_COLUMNS,
    MessageView,
    format_time,
    short_format,
)

if TYPE_CHECKING:
    from rdebug_nb.tail import TailMessage

STYLE: Final = """<style>
.rdebug-table{border-collapse:collapse;font-family:var(--jp-code-font-family,monospace);
font-size:12px;margin:2px 0}
.rdebug-table th,.rdebug-table td{border-bottom:1px solid rgba(128,128,128,.3);
padding:1px 6px!important;text-align:left!important;vertical-align:top!important;
white-space:nowrap!important}
.rdebug-table tr.rdebug-selected td{background:rgba(66,133,244,.18)}
.rdebug-message{font-size:12px;margin-top:4px}
.rdebug-message,.rdebug-table,.rdebug-json,.rdebug-status{line-height:1.45!important}
.rdebug-message h4{margin:6px 0 2px 0;font-size:13px}
.rdebug-json{font-family:var(--jp-code-font-family,monospace);font-size:12px}
.rdebug-json ul{list-style:none!important;margin:0!important;
padding-left:16px!important}
.rdebug-json summary{cursor:pointer}
.rdebug-key{font-weight:600}
.rdebug-meta,.rdebug-more,.rdebug-caption{opacity:.65}
.rdebug-str{color:#a31515}.rdebug-num{color:#098658}
.rdebug-bool,.rdebug-null{color:#0000ff}
.rdebug-status{font-size:12px}
.rdebug-error{color:#c62828}
.rdebug-rows select,.rdebug-rows-head{font-family:var(--jp-code-font-family,monospace);
font-size:12px}
.rdebug-rows-head{opacity:.7;padding-left:6px;white-space:pre}
</style>"""
"""CSS scoped to rdebug classes, shipped once with each widget and fallback."""

_CELL: Final = 160
_PREVIEW: Final = 120
_LABEL_WIDTHS: Final = (
    ("time", 13),
    ("id", 20),
    ("topics", 24),
    ("agent", 16),
    ("format", 24),
    ("status", 18),
)


def table_html(
    table: pd.DataFrame, *, selected: str | None = None, total: int | None = None
) -> str:
    """An HTML table of :func:`rdebug_nb._views.message_table` rows.

    The row whose ``id`` is ``selected`` is marked ``rdebug-selected``.

    Examples
    --------
    >>> frame = pd.DataFrame([dict.fromkeys(TABLE_COLUMNS, "<b>")])
    >>> "&lt;b&gt;" in table_html(frame) and "<b>" not in table_html(frame)
    True
    """
    head = "".join(f"<th>{escape(name)}</th>" for name in TABLE_COLUMNS)
    records = cast("list[dict[str, Any]]", table.to_dict("records"))
    rows = [_table_row(row, selected) for row in records]
    shown = len(table) if total is None else total
    caption = f"{len(table):,} of {shown:,} messages"
    return (
        f'<table class="rdebug-table"><caption class="rdebug-caption">{caption}'
        f"</caption><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def row_label(row: Mapping[str, Any]) -> str:
    """One table row as fixed-width text, for a list box option.

    Spaces are non-breaking so the columns stay aligned.

    >>> row_label({"time": "2026-12-03 12:30:12.605", "id": "1", "topics": "t",
    ...            "agent": "a", "format": "F", "status": ""}).split(chr(160))[0]
    '12:30:12.605'
    """
    cells = []
    for name, width in _LABEL_WIDTHS:
        text = str(row.get(name, ""))
        text = text[-12:] if name == "time" else text
        if len(text) > width - 1:
            text = text[: width - 2] + "…"
        cells.append(text.ljust(width))
    return "".join(cells).rstrip().replace(" ", "\u00a0")


def label_header() -> str:
    """The column names of :func:`row_label`, aligned the same way."""
    text = "".join(name.ljust(width) for name, width in _LABEL_WIDTHS).rstrip()
    return escape(text).replace(" ", "&nbsp;")


def message_html(view: MessageView) -> str:
    """One message: decoded id, header, payload tree, routing slip, history, links.

    Examples
    --------
    >>> from rdebug_nb.ids import decode_id
    >>> view = MessageView(9742500132942774272, decode_id(9742500132942774272),
    ...                    (("format", "<x>"),), {"a": 1}, 7, (), (), None, False,
    ...                    (), (9742500132942774272,))
    >>> html = message_html(view)
    >>> "9742500132942774272" in html, "&lt;x&gt;" in html
    (True, True)
    """
    parts = view.id_parts
    decoded = (
        f"priority {parts.priority} {parts.priority_name} · "
        f"{format_time(parts.timestamp)} UTC · machine {parts.machine_id} · "
        f"sequence {parts.sequence}"
    )
    payload = json_tree_html(view.payload, size=view.payload_size, open_levels=3)
    return (
        f'<div class="rdebug-message" data-message-id="{view.id}">'
        f"<h4>Message {view.id}</h4>"
        f'<div class="rdebug-meta">id parts: {escape(decoded)}</div>'
        f"{_links_html(view)}"
        f"<h4>Header</h4>{_fields_table(view.header)}"
        f"<h4>Payload</h4>{payload}"
        f"<h4>Routing slip ({len(view.routing_steps)} steps)</h4>"
        f"{_records_table(view.routing_steps, STEP_FIELDS)}"
        f"<h4>History ({len(view.hops)} hops)</h4>"
        f"{_records_table(view.hops, HOP_FIELDS)}"
        "</div>"
    )


def inspector_html(
    table: pd.DataFrame,
    view: MessageView | None,
    *,
    total: int,
    matching: int,
    limit: int = 50,
) -> str:
    """The static inspector: ``limit`` table rows around the selection, and it.

    Without a selection (or when it is not in ``table``) the first rows are
    listed.
    """
    selected = None if view is None else str(view.id)
    start = _window_start(table, selected, limit)
    shown = table.iloc[start : start + limit]
    where = "the first" if start == 0 else f"rows {start + 1:,} to"
    note = (
        f"{matching:,} of {total:,} messages match the filter; "
        f"{where} {start + len(shown):,} are listed"
    )
    body = message_html(view) if view is not None else "<p>No message selected.</p>"
    return (
        f'{STYLE}<div class="rdebug-inspector-static">'
        f'<div class="rdebug-status">{escape(note)}</div>'
        f"{table_html(shown, selected=selected, total=matching)}{body}</div>"
    )


def _window_start(table: pd.DataFrame, selected: str | None, limit: int) -> int:
    """The first row of a ``limit``-row window that holds the selected row."""
    if selected is None:
        return 0
    found = (table["id"] == selected).to_numpy().nonzero()[0]
    if not len(found) or found[0] < limit:
        return 0
    return int(min(found[0] - limit // 2, len(table) - limit))


def tail_rows_html(messages: Sequence[TailMessage], *, total: int) -> str:
    """The newest tail deliveries, newest first, as an HTML table."""
    head = "".join(
        f"<th>{name}</th>"
        for name in ("time", "topic", "agent", "format", "id", "source", "payload")
    )
    rows = "".join(_tail_row(message) for message in reversed(messages))
    caption = f"newest {len(messages):,} of {total:,} held"
    return (
        '<table class="rdebug-table rdebug-tail-table">'
        f'<caption class="rdebug-caption">{caption}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    )


def status_html(text: str, *, error: bool = False) -> str:
    """A status line; errors are marked ``rdebug-error``."""
    kind = "rdebug-status rdebug-error" if error else "rdebug-status"
    return f'<div class="{kind}">{escape(text)}</div>'


def topics_html(topics: pd.DataFrame) -> str:
    """A guild's topics table (topic, entries, first and last time)."""
    rows = "".join(
        f"<tr><td>{escape(str(topic))}</td><td>{int(entries):,}</td>"
        f"<td>{escape(_time_text(first))}</td><td>{escape(_time_text(last))}</td></tr>"
        for topic, entries, first, last in zip(
            topics["topic"].tolist(),
            topics["entries"].tolist(),
            topics["first_time"].tolist(),
            topics["last_time"].tolist(),
            strict=True,
        )
    )
    head = "<tr><th>topic</th><th>entries</th><th>first</th><th>last</th></tr>"
    return (
        f'<table class="rdebug-table"><thead>{head}</thead>'
        f"<tbody>{rows}</tbody></table>"
    )


def compact(value: Any, limit: int = _CELL) -> str:
    """Short text of a JSON value for a table cell (ids exact), unescaped.

    >>> compact({"topics": "a", "priority": None}), compact(None), compact("x" * 5, 3)
    ('{"topics":"a","priority":null}', '', 'xx…')
    """
    if value is None:
        return ""
    text = value if isinstance(value, str) else _json(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json(value: Any) -> str:
    return msgspec.json.encode(value, enc_hook=str).decode()


def _table_row(row: Mapping[str, Any], selected: str | None) -> str:
    mark = ' class="rdebug-selected"' if selected and row["id"] == selected else ""
    cells = "".join(f"<td>{escape(str(row[name]))}</td>" for name in TABLE_COLUMNS)
    return f'<tr{mark} data-message-id="{escape(str(row["id"]))}">{cells}</tr>'


def _tail_row(message: TailMessage) -> str:
    data = message.data
    sender = data.get("sender") or {}
    cells = (
        format_time(message.timestamp_ms)[-12:],
        message.topic,
        str(sender.get("id", "")),
        short_format(data.get("format", "")),
        str(message.id),
        message.source,
        compact(data.get("payload"), _PREVIEW),
    )
    body = "".join(f"<td>{escape(cell)}</td>" for cell in cells)
    return f'<tr data-message-id="{message.id}">{body}</tr>'


def _links_html(view: MessageView) -> str:
    parent = "none"
    if view.parent_id is not None:
        where = "" if view.parent_in_frame else " (not in this frame)"
        parent = f"{view.parent_id}{where}"
    children = ", ".join(str(c) for c in view.child_ids[:20]) or "none"
    if len(view.child_ids) > 20:
        children += f" … ({len(view.child_ids):,} in all)"
    return (
        '<div class="rdebug-links">'
        f"parent: {escape(parent)} · children: {escape(children)} · "
        f"trace: {len(view.trace_ids):,} messages</div>"
    )


def _fields_table(fields: Sequence[tuple[str, str]]) -> str:
    rows = "".join(
        f"<tr><th>{escape(name)}</th><td>{escape(compact(text, 400))}</td></tr>"
        for name, text in fields
    )
    return f'<table class="rdebug-table">{rows}</table>'


def _records_table(records: Sequence[Mapping[str, Any]], names: Sequence[str]) -> str:
    if not records:
        return '<div class="rdebug-meta">none</div>'
    head = "".join(f"<th>{escape(name)}</th>" for name in ("#", *names))
    rows = "".join(
        f"<tr><td>{index}</td>"
        + "".join(f"<td>{escape(compact(record.get(n)))}</td>" for n in names)
        + "</tr>"
        for index, record in enumerate(records)
    )
    return f'<table class="rdebug-table"><thead><tr>{head}</tr></thead>{rows}</table>'


def _time_text(value: Any) -> str:
    if isinstance(value, pd.Timestamp):
        return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return "" if value is None else str(value)

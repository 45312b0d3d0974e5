"""Widgets a guild developer keeps open: explorer, inspector and live tail.

All three are stock ipywidgets 8 containers (JupyterLab 4, VS Code), with no
iframes and no custom JavaScript. Each is a thin adapter over a pure builder
(:mod:`rdebug_nb._views`, :mod:`rdebug_nb._query`) and the HTML of
:mod:`rdebug_nb._render`; each display bundle carries ``text/plain``, a static
``text/html`` fallback (the table and the selected message, as they were when
displayed) and the widget view, so a notebook exported to HTML without widget
state still shows the data.

Callbacks never swallow exceptions: the error is shown in the widget's status
line and logged with :func:`logging.Logger.exception` (a query the user mistyped
is only shown, and logged at DEBUG).

Examples
--------
>>> from rdebug_nb.messages import empty_deliveries, to_messages
>>> ins = inspect(to_messages(empty_deliveries()))
>>> ins.selected_id is None, sorted(ins._repr_mimebundle_())[:2]
(True, ['application/vnd.jupyter.widget-view+json', 'text/html'])
"""

from __future__ import annotations

import functools
import logging
import threading
import warnings
from collections.abc import Callable, Sequence
from html import escape
from typing import TYPE_CHECKING, Any, Concatenate, Final, ParamSpec, TypeVar, cast

import ipywidgets as widgets
import pandas as pd

from rdebug_nb import _render
from rdebug_nb._query import (
    MessageFilter,
    filter_messages,
    parse_query,
    statuses_of,
    to_ms,
)
from rdebug_nb._views import (
    MessageView,
    build_links,
    choice_options,
    guild_options,
    message_table,
    message_view,
    short_format,
    topic_options,
)
from rdebug_nb.errors import InvalidQuery
from rdebug_nb.messages import require_messages

if TYPE_CHECKING:
    from rdebug_nb.bus import Bus
    from rdebug_nb.tail import Tail

logger = logging.getLogger(__name__)

P = ParamSpec("P")
V = TypeVar("V", bound="_View")

PAGE_SIZE: Final = 200
"""Rows per page of the inspector's list."""

_ERROR_CHOICES: Final = (
    ("all messages", "all"),
    ("error messages only", "errors"),
    ("no error messages", "no errors"),
)
_TIME_HINT: Final = "2026-12-03T12:30 (UTC)"
_QUERY_HINT: Final = 'payload.order_id == "ORD-0001"  or free text'


def explore(
    bus: Bus,
    guild_id: str | None = None,
    topics: Sequence[str] | None = None,
    *,
    limit: int = 10_000,
) -> Explorer:
    """Pick a guild, its topics and a time window, and load its messages.

    The loaded frame is ``explorer.messages`` (None before the first load);
    below the controls an :class:`Inspector` shows it.

    Parameters
    ----------
    bus : Bus
    guild_id : str, optional
        The guild selected at first (default the one with the most deliveries,
        as the notebooks and the report pick).
    topics : sequence of str, optional
        Topics selected at first (default none = all).
    limit : int, default 10000
        Most messages one load reads (the newest); 0 reads all.
    """
    return Explorer(bus, guild_id=guild_id, topics=topics, limit=limit)


def inspect(
    msgs: pd.DataFrame,
    *,
    selected: int | str | None = None,
    where: MessageFilter | None = None,
    page_size: int = PAGE_SIZE,
) -> Inspector:
    """A filterable table of a message frame and the selected message in full.

    Parameters
    ----------
    msgs : pandas.DataFrame
        A message frame (a delivery frame is collapsed with ``to_messages``).
    selected : int or str, optional
        The message selected at first (default the first row).
    where : MessageFilter, optional
        The filter set at first.
    page_size : int, default 200
        Rows listed per page.
    """
    return Inspector(msgs, selected=selected, where=where, page_size=page_size)


def tail_view(tail: Tail, *, rows: int = 50) -> TailView:
    """Show a running :class:`~rdebug_nb.tail.Tail`: newest rows and counters.

    Parameters
    ----------
    tail : Tail
    rows : int, default 50
        How many of the newest deliveries are listed.
    """
    return TailView(tail, rows=rows)


_INSPECTED: Final = (
    "id",
    "timestamp_ms",
    "topics",
    "sender_id",
    "format",
    "priority_name",
    "hop_count",
    "size",
    "in_response_to",
    "message_history",
)
"""Columns the inspector's table and links read."""


def _text_search_note(query: str) -> str:
    """Say when a query was searched as free text (it has no operator)."""
    text = parse_query(query).text
    if not text:
        return ""
    return (
        f"; {query.strip()!r} was searched as free text (conditions look like "
        "sender_id == 'worker')"
    )


def _busiest(guilds: pd.DataFrame) -> str | None:
    if guilds.empty:
        return None
    return str(guilds.sort_values("deliveries").iloc[-1]["namespace"])


def _reported(
    method: Callable[Concatenate[V, P], None],
) -> Callable[Concatenate[V, P], None]:
    """Run a widget callback; show and log any exception instead of losing it."""

    @functools.wraps(method)
    def run(self: V, /, *args: P.args, **kwargs: P.kwargs) -> None:
        try:
            method(self, *args, **kwargs)
        except InvalidQuery as err:
            logger.debug("%s: %s", method.__name__, err)
            self.show_status(str(err), error=True)
        except Exception as err:
            logger.exception("%s failed in %s", method.__name__, type(self).__name__)
            self.show_status(f"{type(err).__name__}: {err}", error=True)

    return run


class _View(widgets.VBox):  # type: ignore[misc]
    """A VBox with a status line and a static HTML fallback in its bundle."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.status = widgets.HTML(_render.status_html(""))
        self.status.add_class("rdebug-status-line")

    def show_status(self, text: str, *, error: bool = False) -> None:
        """Put one line in the status bar."""
        self.status.value = _render.status_html(text, error=error)

    def _repr_html_(self) -> str:
        raise NotImplementedError

    def _repr_mimebundle_(
        self,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        bundle = dict(super()._repr_mimebundle_(**kwargs) or {})
        bundle.setdefault("text/plain", repr(self))
        bundle["text/html"] = self._repr_html_()
        if include:
            bundle = {k: v for k, v in bundle.items() if k in include}
        if exclude:
            bundle = {k: v for k, v in bundle.items() if k not in exclude}
        return bundle


class Inspector(_View):
    """A filterable table of messages and the selected message in full.

    Attributes
    ----------
    messages : pandas.DataFrame
        The whole frame (index reset).
    filtered : pandas.DataFrame
        The rows passing the current filter (and trace, when on).
    rows : ipywidgets.Select
        One line per message of the current page; its value is the id as text.
    detail : ipywidgets.HTML
        The selected message.
    """

    def __init__(
        self,
        msgs: pd.DataFrame,
        *,
        selected: int | str | None = None,
        where: MessageFilter | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        super().__init__()
        frame = require_messages(msgs, _INSPECTED, "inspect")
        self.messages = frame.reset_index(drop=True)
        self.filtered = self.messages
        self.links = build_links(self.messages)
        self.page_size = page_size
        self._table = message_table(self.messages)
        self._page = 0
        self._selected: int | None = None
        self._trace: frozenset[int] | None = None
        self._busy = False
        self._build_controls()
        self._build_layout()
        if where is not None:
            self.set_filter(where)
        self._refresh(int(selected) if selected is not None else None)

    def __repr__(self) -> str:
        return (
            f"<Inspector {len(self.messages)} messages, {len(self.filtered)} match, "
            f"selected {self._selected}>"
        )

    @property
    def selected_id(self) -> int | None:
        """The selected message id (exact), or None."""
        return self._selected

    @property
    def view(self) -> MessageView | None:
        """The pure view of the selected message."""
        if self._selected is None:
            return None
        return message_view(self.messages, self._selected, self.links)

    @property
    def where(self) -> MessageFilter:
        """The filter the controls describe.

        Raises
        ------
        InvalidQuery
            If the query or a time text cannot be read.
        """
        return MessageFilter(
            topics=tuple(self.topics_box.value),
            agents=tuple(self.agents_box.value),
            formats=tuple(self.formats_box.value),
            errors=self.errors_box.value,
            statuses=tuple(self.statuses_box.value),
            priorities=tuple(self.priorities_box.value),
            since=to_ms(self.since_box.value),
            until=to_ms(self.until_box.value),
            query=self.query_box.value,
        )

    def set_filter(self, where: MessageFilter) -> None:
        """Set every control from ``where`` and refresh the table.

        Raises
        ------
        InvalidQuery
            If a topic, agent, format, status or priority is not in the frame.
        """
        self._busy = True
        try:
            for box, values in self._choice_boxes(where):
                _check_choices(box, values)
                box.value = tuple(values)
            self.errors_box.value = where.errors
            self.since_box.value = _time_input(where.since)
            self.until_box.value = _time_input(where.until)
            self.query_box.value = where.query
        finally:
            self._busy = False
        self._refresh()

    def clear_filter(self) -> None:
        """Show every message again (and leave trace mode)."""
        self._trace = None
        self.trace_button.value = False
        self.set_filter(MessageFilter())

    def select(self, message_id: int | str) -> None:
        """Select a message, clearing the filter if it hides it.

        Raises
        ------
        MessageNotFound
            If the frame has no such message.
        """
        target = int(message_id)
        message_view(self.messages, target, self.links)
        if target not in self._filtered_ids():
            self.clear_filter()
            self.show_status(f"filter cleared to show message {target}")
        self._go(target)

    def go_parent(self) -> None:
        """Select the message the selected one answers."""
        view = self.view
        if view is None or view.parent_id is None:
            raise InvalidQuery("the selected message answers no message")
        if not view.parent_in_frame:
            raise InvalidQuery(
                f"parent {view.parent_id} is not in this frame; load a wider window"
            )
        self.select(view.parent_id)

    def show_trace(self, on: bool = True) -> None:
        """List only the selected message's trace (or everything again)."""
        view = self.view
        self._trace = frozenset(view.trace_ids) if on and view else None
        self.trace_button.value = self._trace is not None
        self._refresh()

    def _repr_html_(self) -> str:
        table = self._table.loc[self.filtered.index]
        return _render.inspector_html(
            table, self.view, total=len(self.messages), matching=len(self.filtered)
        )

    # -- building -----------------------------------------------------------

    def _build_controls(self) -> None:
        frame = self.messages
        topics = [t for row in frame["topics"].tolist() for t in row]
        self.topics_box = _multi("topics", choice_options(topics))
        self.agents_box = _multi("agents", choice_options(frame["sender_id"].tolist()))
        self.formats_box = _multi("formats", _format_options(frame))
        self.statuses_box = _multi(
            "process", [(s, s) for s in statuses_of(frame["process_status"])]
        )
        self.priorities_box = _multi("priority", _priority_options(frame))
        self.errors_box = widgets.Dropdown(
            options=_ERROR_CHOICES, value="all", description="errors"
        )
        self.since_box = _text("since", _TIME_HINT)
        self.until_box = _text("until", _TIME_HINT)
        self.query_box = _text("query", _QUERY_HINT, width="60%")
        self.clear_button = widgets.Button(description="clear filters")
        self.rows = widgets.Select(options=[], rows=12, layout={"width": "100%"})
        self.prev_button = widgets.Button(description="◀ previous", disabled=True)
        self.next_button = widgets.Button(description="next ▶", disabled=True)
        self.page_label = widgets.HTML()
        self.parent_button = widgets.Button(description="parent", disabled=True)
        self.children_box = widgets.Dropdown(
            options=[("children", "")], value="", description="", disabled=True
        )
        self.trace_button = widgets.ToggleButton(description="trace", value=False)
        self.detail = widgets.HTML()
        self._wire()

    def _build_layout(self) -> None:
        choices = widgets.HBox(
            [
                self.topics_box,
                self.agents_box,
                self.formats_box,
                self.statuses_box,
                self.priorities_box,
            ],
            layout={"flex_flow": "row wrap"},
        )
        times = widgets.HBox(
            [self.errors_box, self.since_box, self.until_box],
            layout={"flex_flow": "row wrap"},
        )
        header = widgets.HTML(f'<div class="rdebug-rows-header">{_header()}</div>')
        self.rows.add_class("rdebug-rows")
        paging = widgets.HBox([self.prev_button, self.next_button, self.page_label])
        nav = widgets.HBox([self.parent_button, self.children_box, self.trace_button])
        query = widgets.HBox([self.query_box, self.clear_button])
        self.children = [
            widgets.HTML(_render.STYLE),
            choices,
            times,
            query,
            self.status,
            header,
            self.rows,
            paging,
            nav,
            self.detail,
        ]
        self.add_class("rdebug-inspector")

    def _wire(self) -> None:
        for box in (
            self.topics_box,
            self.agents_box,
            self.formats_box,
            self.statuses_box,
            self.priorities_box,
            self.errors_box,
            self.since_box,
            self.until_box,
            self.query_box,
        ):
            box.observe(self._on_filter, names="value")
        self.rows.observe(self._on_row, names="value")
        self.children_box.observe(self._on_child, names="value")
        self.trace_button.observe(self._on_trace, names="value")
        self.clear_button.on_click(self._on_clear)
        self.parent_button.on_click(self._on_parent)
        self.prev_button.on_click(self._on_prev)
        self.next_button.on_click(self._on_next)

    # -- callbacks ------------------------------------------------------------

    @_reported
    def _on_filter(self, change: dict[str, Any]) -> None:
        if not self._busy:
            self._refresh()

    @_reported
    def _on_row(self, change: dict[str, Any]) -> None:
        if not self._busy and change["new"]:
            self._show(int(change["new"]))

    @_reported
    def _on_child(self, change: dict[str, Any]) -> None:
        if not self._busy and change["new"]:
            self.select(int(change["new"]))

    @_reported
    def _on_trace(self, change: dict[str, Any]) -> None:
        if not self._busy and bool(change["new"]) != (self._trace is not None):
            self.show_trace(bool(change["new"]))

    @_reported
    def _on_clear(self, button: widgets.Button) -> None:
        self.clear_filter()

    @_reported
    def _on_parent(self, button: widgets.Button) -> None:
        self.go_parent()

    @_reported
    def _on_prev(self, button: widgets.Button) -> None:
        self._turn(-1)

    @_reported
    def _on_next(self, button: widgets.Button) -> None:
        self._turn(1)

    # -- state ----------------------------------------------------------------

    def _refresh(self, select: int | None = None) -> None:
        rows = filter_messages(self.messages, self.where)
        if self._trace is not None:
            rows = rows[rows["id"].isin(list(self._trace))]
        self.filtered = rows
        ids = self._filtered_ids()
        target = select if select is not None else self._selected
        if target not in ids:
            target = next(iter(ids), None)
        self.show_status(
            f"{len(rows):,} of {len(self.messages):,} messages match"
            + (" (trace)" if self._trace is not None else "")
            + _text_search_note(self.where.query)
        )
        self._go(target)

    def _filtered_ids(self) -> dict[int, int]:
        ids = self.filtered["id"].tolist()
        return {int(mid): position for position, mid in enumerate(ids)}

    def _go(self, target: int | None) -> None:
        ids = self._filtered_ids()
        if target is not None and target in ids:
            self._page = ids[target] // self.page_size
        self._show_page(target)
        self._show(target)

    def _turn(self, step: int) -> None:
        pages = max(1, -(-len(self.filtered) // self.page_size))
        self._page = min(max(0, self._page + step), pages - 1)
        self._show_page(None)
        first = self.rows.options[0][1] if self.rows.options else None
        self._show(int(first) if first else None)

    def _show_page(self, target: int | None) -> None:
        start = self._page * self.page_size
        page = self.filtered.iloc[start : start + self.page_size]
        table = self._table.loc[page.index]
        records = cast("list[dict[str, Any]]", table.to_dict("records"))
        options = [(_render.row_label(row), row["id"]) for row in records]
        self._busy = True
        try:
            self.rows.options = options
            wanted = str(target) if target is not None else None
            self.rows.value = wanted if any(o[1] == wanted for o in options) else None
        finally:
            self._busy = False
        total = len(self.filtered)
        end = min(start + self.page_size, total)
        self.page_label.value = (
            f'<span class="rdebug-caption">rows {start + 1 if total else 0:,} to '
            f"{end:,} of {total:,}</span>"
        )
        self.prev_button.disabled = start == 0
        self.next_button.disabled = end >= total

    def _show(self, message_id: int | None) -> None:
        self._selected = message_id
        view = self.view
        self.detail.value = (
            "" if view is None else _render.STYLE + _render.message_html(view)
        )
        self._show_links(view)
        if message_id is not None and self.rows.value != str(message_id):
            self._busy = True
            try:
                if any(o[1] == str(message_id) for o in self.rows.options):
                    self.rows.value = str(message_id)
            finally:
                self._busy = False

    def _show_links(self, view: MessageView | None) -> None:
        self._busy = True
        try:
            has_parent = view is not None and view.parent_in_frame
            self.parent_button.disabled = not has_parent
            self.parent_button.tooltip = (
                f"go to {view.parent_id}" if view and view.parent_id else "no parent"
            )
            children = view.child_ids if view else ()
            self.children_box.options = [(f"children ({len(children)})", "")] + [
                (str(c), str(c)) for c in children
            ]
            self.children_box.value = ""
            self.children_box.disabled = not children
            size = len(view.trace_ids) if view else 0
            self.trace_button.description = f"trace ({size})"
        finally:
            self._busy = False

    def _choice_boxes(
        self, where: MessageFilter
    ) -> list[tuple[widgets.SelectMultiple, Sequence[Any]]]:
        return [
            (self.topics_box, where.topics),
            (self.agents_box, where.agents),
            (self.formats_box, where.formats),
            (self.statuses_box, where.statuses),
            (self.priorities_box, where.priorities),
        ]


class Explorer(_View):
    """Pick a guild, topics and a time window; load; inspect.

    Attributes
    ----------
    messages : pandas.DataFrame or None
        The last frame loaded.
    inspector : Inspector or None
        The inspector showing it.
    """

    def __init__(
        self,
        bus: Bus,
        *,
        guild_id: str | None = None,
        topics: Sequence[str] | None = None,
        limit: int = 10_000,
    ) -> None:
        super().__init__()
        self.bus = bus
        self.messages: pd.DataFrame | None = None
        self.inspector: Inspector | None = None
        self._topics = pd.DataFrame()
        guilds = bus.guilds(count_distinct=False)
        options = guild_options(guilds)
        values = [value for _, value in options]
        self.guild_box = widgets.Dropdown(
            options=options,
            value=guild_id if guild_id in values else _busiest(guilds),
            description="guild",
            layout={"width": "60%"},
        )
        self.topics_box = _multi("topics", [], rows=8, width="60%")
        self.topics_table = widgets.HTML()
        self.since_box = _text("since", _TIME_HINT)
        self.until_box = _text("until", _TIME_HINT)
        self.limit_box = widgets.IntText(value=limit, description="limit")
        self.load_button = widgets.Button(description="load", button_style="primary")
        self.result = widgets.VBox()
        self.guild_box.observe(self._on_guild, names="value")
        self.load_button.on_click(self._on_load)
        self.children = [
            widgets.HTML(_render.STYLE),
            self.guild_box,
            widgets.HBox([self.topics_box, self.topics_table]),
            widgets.HBox([self.since_box, self.until_box, self.limit_box]),
            widgets.HBox([self.load_button, self.status]),
            self.result,
        ]
        self.add_class("rdebug-explorer")
        self._show_topics(topics)

    def __repr__(self) -> str:
        loaded = "nothing" if self.messages is None else f"{len(self.messages)}"
        return f"<Explorer {self.bus!r} guild={self.guild_box.value!r} loaded={loaded}>"

    def load(self) -> pd.DataFrame:
        """Load the selected guild, topics and window; show it below.

        Warnings of the load (a cut by ``limit``, skipped entries) go to the
        status line.

        Raises
        ------
        GuildNotFound, LoadIncomplete, ConnectionFailed, InvalidQuery
        """
        guild = self.guild_box.value
        if guild is None:
            raise InvalidQuery(f"{self.bus!r} has no guild to load")
        topics = list(self.topics_box.value) or None
        since, until = to_ms(self.since_box.value), to_ms(self.until_box.value)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            frame = self.bus.messages(
                guild, topics, since, until, limit=self.limit_box.value or None
            )
        self.messages = frame
        self.inspector = Inspector(frame)
        self.result.children = [self.inspector]
        notes = "; ".join(str(w.message) for w in caught)
        scope = f"{len(topics)} topics" if topics else "all topics"
        self.show_status(
            f"loaded {len(frame):,} messages of {guild} ({scope})"
            + (f" — {notes}" if notes else ""),
            error=bool(notes),
        )
        return frame

    def _repr_html_(self) -> str:
        inner = "" if self.inspector is None else self.inspector._repr_html_()
        guild = self.guild_box.value or "no guild"
        return (
            f'{_render.STYLE}<div class="rdebug-explorer-static">'
            f"<h4>Guild {escape(str(guild))}</h4>"
            f"{self.topics_table.value}{self.status.value}{inner}</div>"
        )

    @_reported
    def _on_guild(self, change: dict[str, Any]) -> None:
        self._show_topics(None)

    @_reported
    def _on_load(self, button: widgets.Button) -> None:
        self.load()

    def _show_topics(self, chosen: Sequence[str] | None) -> None:
        guild = self.guild_box.value
        if guild is None:
            self.show_status(f"no guild on {self.bus!r}")
            return
        self._topics = self.bus.topics(guild)
        self.topics_box.options = topic_options(self._topics)
        known = set(self._topics["topic"])
        self.topics_box.value = tuple(t for t in chosen or () if t in known)
        self.topics_table.value = _render.topics_html(self._topics)
        self.show_status(
            f"{guild}: {len(self._topics)} topics, "
            f"{int(self._topics['entries'].sum()):,} deliveries; pick topics "
            "(none = all) and a window, then load"
        )


class TailView(_View):
    """The newest deliveries of a tail, its counters, and pause/resume/stop.

    Updates come from the tail thread at most every ``tail.refresh_interval``
    seconds (10 a second by default).
    """

    def __init__(self, tail: Tail, *, rows: int = 50) -> None:
        super().__init__()
        self.tail = tail
        self.rows = rows
        self._lock = threading.Lock()
        self.counts_line = widgets.HTML()
        self.table = widgets.HTML()
        self.pause_button = widgets.Button(description="pause", icon="pause")
        self.resume_button = widgets.Button(description="resume", icon="play")
        self.stop_button = widgets.Button(description="stop", icon="stop")
        self.query_box = _text("filter", _QUERY_HINT, width="60%")
        self.pause_button.on_click(self._on_pause)
        self.resume_button.on_click(self._on_resume)
        self.stop_button.on_click(self._on_stop)
        self.query_box.observe(self._on_query, names="value")
        buttons = [self.pause_button, self.resume_button, self.stop_button]
        self.children = [
            widgets.HTML(_render.STYLE),
            widgets.HBox([*buttons, self.query_box]),
            self.counts_line,
            self.status,
            self.table,
        ]
        self.add_class("rdebug-tail")
        tail.add_listener(self._on_tail)
        self.refresh()

    def __repr__(self) -> str:
        return f"<TailView {self.tail!r}>"

    def refresh(self) -> None:
        """Render the tail's current state now."""
        with self._lock:
            counts_html, table_html = self._render()
            with self.hold_sync():
                self.counts_line.value = counts_html
                self.table.value = table_html
                self._show_buttons()

    def close(self) -> None:
        """Stop listening to the tail and close the widget (the tail runs on)."""
        self.tail.remove_listener(self._on_tail)
        super().close()

    def _repr_html_(self) -> str:
        counts_html, table_html = self._render()
        body = f"{counts_html}{table_html}"
        return f'{_render.STYLE}<div class="rdebug-tail-static">{body}</div>'

    def _render(self) -> tuple[str, str]:
        held = self.tail.messages
        newest = held[-self.rows :] if self.rows else ()
        problem = self.tail.error is not None or bool(self.tail.problem)
        counts_html = _render.status_html(self.tail.status, error=problem)
        return counts_html, _render.tail_rows_html(newest, total=len(held))

    def _show_buttons(self) -> None:
        state = self.tail.state
        finished = state in ("stopped", "failed", "idle")
        self.pause_button.disabled = finished or state == "paused"
        self.resume_button.disabled = finished or state != "paused"
        self.stop_button.disabled = finished

    @_reported
    def _on_tail(self, tail: Tail) -> None:
        self.refresh()

    @_reported
    def _on_pause(self, button: widgets.Button) -> None:
        self.tail.pause()
        self.refresh()

    @_reported
    def _on_resume(self, button: widgets.Button) -> None:
        self.tail.resume()
        self.refresh()

    @_reported
    def _on_stop(self, button: widgets.Button) -> None:
        self.tail.stop()
        self.refresh()

    @_reported
    def _on_query(self, change: dict[str, Any]) -> None:
        self.tail.set_filter(MessageFilter(query=change["new"]))
        self.show_status(f"filter: {change['new']}" if change["new"] else "")
        self.refresh()


def _multi(
    description: str,
    options: Sequence[tuple[str, Any]],
    *,
    rows: int = 5,
    width: str = "auto",
) -> widgets.SelectMultiple:
    return widgets.SelectMultiple(
        options=list(options),
        rows=rows,
        description=description,
        layout={"width": width},
    )


def _text(description: str, hint: str, *, width: str = "auto") -> widgets.Text:
    return widgets.Text(
        value="",
        placeholder=hint,
        description=description,
        continuous_update=False,
        layout={"width": width},
    )


def _format_options(frame: pd.DataFrame) -> list[tuple[str, str]]:
    return [
        (f"{short_format(value)} {label[len(value) :]}", value)
        for label, value in choice_options(frame["format"].tolist())
    ]


def _priority_options(frame: pd.DataFrame) -> list[tuple[str, int]]:
    names = dict(
        zip(frame["priority"].tolist(), frame["priority_name"].tolist(), strict=True)
    )
    counts = frame["priority"].value_counts()
    return [(f"{p} {names[p]} ({int(counts[p])})", int(p)) for p in sorted(names)]


def _check_choices(box: widgets.SelectMultiple, values: Sequence[Any]) -> None:
    known = {value for _, value in box.options}
    unknown = [v for v in values if v not in known]
    if unknown:
        raise InvalidQuery(
            f"{box.description} {unknown} not in this frame; "
            f"it has {sorted(map(str, known))[:10]}"
        )


def _time_input(value: int | None) -> str:
    if value is None:
        return ""
    return pd.Timestamp(value, unit="ms", tz="UTC").isoformat(timespec="milliseconds")


def _header() -> str:
    return f'<span class="rdebug-rows-head">{_render.label_header()}</span>'

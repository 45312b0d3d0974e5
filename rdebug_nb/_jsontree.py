"""HTML of a JSON value as a collapsible tree (``<details>``, no JavaScript).

Every key and value is HTML-escaped. Large values stay cheap to show: a list or
object shows its first ``max_items`` entries, long strings are cut, the whole tree
stops after ``max_nodes`` nodes or ``max_chars`` characters of HTML, and a value
bigger than ``collapse_over`` bytes opens collapsed. What was left out is said
where it was left out, with its size.

Examples
--------
>>> html = json_tree_html({"q": "<script>alert(1)</script>", "id": 9742500132942774272})
>>> "<script>" in html, "&lt;script&gt;" in html, "9742500132942774272" in html
(False, True, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from html import escape
from typing import Any, Final

MAX_NODES: Final = 2000
"""Default cap on rendered keys and values."""

MAX_CHARS: Final = 200_000
"""Default cap on characters of HTML produced."""

MAX_ITEMS: Final = 100
"""Default number of entries shown per list or object."""

MAX_STRING: Final = 2000
"""Default number of characters shown per string."""

COLLAPSE_OVER: Final = 100_000
"""Values bigger than this many bytes open collapsed."""

_MAX_DEPTH: Final = 40


@dataclass
class _Budget:
    nodes: int
    chars: int
    spent: bool = False

    def take(self, text: str) -> bool:
        self.nodes -= 1
        self.chars -= len(text)
        return self.nodes >= 0 and self.chars >= 0


@dataclass(frozen=True, slots=True)
class _Limits:
    max_items: int
    max_string: int
    open_levels: int


def json_tree_html(
    value: Any,
    *,
    label: str = "payload",
    size: int | None = None,
    max_nodes: int = MAX_NODES,
    max_chars: int = MAX_CHARS,
    max_items: int = MAX_ITEMS,
    max_string: int = MAX_STRING,
    open_levels: int = 2,
    collapse_over: int = COLLAPSE_OVER,
) -> str:
    """Render a decoded JSON value as nested ``<details>`` elements.

    Parameters
    ----------
    value : object
        dicts, lists, str, int, float, bool and None (as decoded from JSON).
    label : str
        Name shown on the root.
    size : int, optional
        Bytes of the value's JSON, shown on the root; above ``collapse_over``
        the tree opens collapsed.
    max_nodes, max_chars : int
        Stop after this many nodes / characters of HTML.
    max_items : int
        Entries shown per list or object.
    max_string : int
        Characters shown per string.
    open_levels : int
        Levels open at first (0: all collapsed).
    collapse_over : int
        Byte size above which everything starts collapsed.

    Returns
    -------
    str
        An HTML fragment: ``<div class="rdebug-json">...</div>``.

    Examples
    --------
    >>> html = json_tree_html(list(range(20_000)), max_items=3)
    >>> "19,997 more items" in html, html.count("<li>")
    (True, 3)
    """
    big = size is not None and size > collapse_over
    limits = _Limits(max_items, max_string, 0 if big else open_levels)
    budget = _Budget(max_nodes, max_chars)
    parts: list[str] = []
    meta = f" · {_size_text(size)}" if size is not None else ""
    _node(parts, _key(label), value, 0, limits, budget, meta)
    if budget.spent:
        parts.append(
            f'<div class="rdebug-more">… output limit reached ({max_nodes:,} '
            f"values or {max_chars:,} characters); the rest is not shown</div>"
        )
    return '<div class="rdebug-json">' + "".join(parts) + "</div>"


def _node(
    parts: list[str],
    key: str,
    value: Any,
    depth: int,
    limits: _Limits,
    budget: _Budget,
    meta: str = "",
) -> None:
    if isinstance(value, Mapping | list | tuple) and value:
        _container(parts, key, value, depth, limits, budget, meta)
        return
    text = f"{key}{_scalar(value, limits.max_string)}"
    if meta:
        text += f' <span class="rdebug-meta">{escape(meta.lstrip(" ·"))}</span>'
    parts.append(text)


def _container(
    parts: list[str],
    key: str,
    value: Mapping[Any, Any] | list[Any] | tuple[Any, ...],
    depth: int,
    limits: _Limits,
    budget: _Budget,
    meta: str,
) -> None:
    count = len(value)
    kind = f"{{{count:,} keys" if isinstance(value, Mapping) else f"[{count:,} items"
    close = "}" if isinstance(value, Mapping) else "]"
    opened = " open" if depth < limits.open_levels and count <= limits.max_items else ""
    parts.append(
        f"<details{opened}><summary>{key}"
        f'<span class="rdebug-meta">{escape(kind + meta)}{close}</span></summary><ul>'
    )
    if depth >= _MAX_DEPTH:
        parts.append('<li class="rdebug-more">… deeper levels not shown</li>')
    else:
        _entries(parts, value, depth, limits, budget)
    parts.append("</ul></details>")


def _entries(
    parts: list[str],
    value: Mapping[Any, Any] | list[Any] | tuple[Any, ...],
    depth: int,
    limits: _Limits,
    budget: _Budget,
) -> None:
    items = value.items() if isinstance(value, Mapping) else enumerate(value)
    shown = 0
    for name, item in items:
        if shown >= limits.max_items or budget.spent:
            break
        child: list[str] = []
        _node(child, _key(name), item, depth + 1, limits, budget)
        text = "<li>" + "".join(child) + "</li>"
        if not budget.take(text):
            budget.spent = True
            break
        parts.append(text)
        shown += 1
    left = len(value) - shown
    if left > 0:
        noun = "keys" if isinstance(value, Mapping) else "items"
        parts.append(f'<li class="rdebug-more">… {left:,} more {noun} not shown</li>')


def _key(name: Any) -> str:
    return f'<span class="rdebug-key">{escape(str(name))}</span>: '


def _scalar(value: Any, max_string: int) -> str:
    if isinstance(value, str):
        return _string(value, max_string)
    if value is None:
        return '<span class="rdebug-null">null</span>'
    if isinstance(value, bool):
        return f'<span class="rdebug-bool">{"true" if value else "false"}</span>'
    if isinstance(value, int):
        return f'<span class="rdebug-num">{value}</span>'
    if isinstance(value, float):
        return f'<span class="rdebug-num">{value!r}</span>'
    if isinstance(value, Mapping):
        return '<span class="rdebug-meta">{}</span>'
    if isinstance(value, list | tuple):
        return '<span class="rdebug-meta">[]</span>'
    return _string(str(value), max_string)


def _string(value: str, max_string: int) -> str:
    if len(value) <= max_string:
        return f'<span class="rdebug-str">"{escape(value)}"</span>'
    cut = escape(value[:max_string])
    return (
        f'<span class="rdebug-str">"{cut}…"</span> '
        f'<span class="rdebug-meta">(string of {len(value):,} characters, '
        f"first {max_string:,} shown)</span>"
    )


def _size_text(size: int | None) -> str:
    if size is None:
        return ""
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} kB"
    return f"{size / (1024 * 1024):.1f} MB"

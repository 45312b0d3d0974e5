"""Widgets driven through their widget state, without a browser.

The inspector is checked on the real capture (through ``capture_bus``) and on
small hand-made frames built with ``decode_deliveries``; expected rows are
derived from the frames themselves.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any, cast

import msgspec
import pandas as pd
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

import rdebug_nb as rd
from rdebug_nb._query import MessageFilter, filter_messages
from rdebug_nb._views import build_links, message_view
from rdebug_nb.bus import Bus
from rdebug_nb.errors import InvalidQuery
from rdebug_nb.ids import encode_id
from rdebug_nb.messages import decode_deliveries, to_messages
from rdebug_nb.server import EmbeddedServer
from rdebug_nb.tail import Tail
from rdebug_nb.widgets import Inspector, explore, inspect, tail_view
from tests.test_tail import batch, make_member, publish, wait_for

ORDERS = "orders-pipeline-01"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
BIG = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def orders(capture_bus: rd.Bus) -> pd.DataFrame:
    return capture_bus.messages(ORDERS)


def ids(frame: pd.DataFrame) -> list[int]:
    return [int(mid) for mid in frame["id"].tolist()]


def listed(ins: Inspector) -> list[int]:
    return [int(value) for _, value in ins.rows.options]


def status_text(ins: Any) -> str:
    return str(ins.status.value)


def hand_made(
    members: list[tuple[str, bytes]], guild_id: str = "hand-made"
) -> pd.DataFrame:
    entries = [(f"{guild_id}:{topic}", topic, [member]) for topic, member in members]
    return to_messages(decode_deliveries(guild_id, entries))


def test_selecting_a_row_shows_the_message(orders: pd.DataFrame) -> None:
    confirmed = orders[orders["format"].str.endswith("OrderConfirmed")].iloc[3]
    ins = inspect(orders)

    ins.rows.value = str(confirmed["id"])

    assert ins.selected_id == int(confirmed["id"])
    assert f"Message {int(confirmed['id'])}" in ins.detail.value
    assert confirmed["payload"]["order_id"] in ins.detail.value
    assert f"History ({int(confirmed['hop_count'])} hops)" in ins.detail.value


def test_the_first_page_lists_the_first_rows_and_pages_on(
    orders: pd.DataFrame,
) -> None:
    ins = inspect(orders, page_size=100)

    assert listed(ins) == ids(orders)[:100]
    ins.next_button.click()
    assert listed(ins) == ids(orders)[100:200]
    assert ins.selected_id == ids(orders)[100]
    ins.prev_button.click()
    assert listed(ins) == ids(orders)[:100]


@pytest.mark.parametrize(
    ("control", "value", "expected"),
    [
        ("topics_box", ("orders.done",), lambda f: f["topics"].map(lambda t: "orders.done" in t)),
        ("agents_box", ("pricing",), lambda f: f["sender_id"] == "pricing"),
        ("errors_box", "errors", lambda f: f["is_error"]),
        ("statuses_box", ("error",), lambda f: f["process_status"] == "error"),
        ("priorities_box", (1,), lambda f: f["priority"] == 1),
        (
            "formats_box",
            ("acme_agents.orders.OrderRejected",),
            lambda f: f["format"] == "acme_agents.orders.OrderRejected",
        ),
    ],
    ids=["topic", "agent", "errors", "process-status", "priority", "format"],
)  # fmt: skip
def test_each_filter_control_keeps_the_matching_rows(
    orders: pd.DataFrame, control: str, value: Any, expected: Any
) -> None:
    ins = inspect(orders)
    wanted = ids(orders[expected(orders).fillna(False).astype(bool)])

    getattr(ins, control).value = value

    assert wanted
    assert ids(ins.filtered) == wanted
    assert listed(ins) == wanted[: ins.page_size]
    assert ins.selected_id == wanted[0]
    assert f"{len(wanted):,} of {len(orders):,}" in status_text(ins)


def test_a_time_window_keeps_the_rows_inside_it(orders: pd.DataFrame) -> None:
    stamps = orders["timestamp"]
    low, high = stamps.iloc[100], stamps.iloc[200]
    ins = inspect(orders)

    ins.since_box.value = low.isoformat()
    ins.until_box.value = high.isoformat()

    assert ids(ins.filtered) == ids(orders[(stamps >= low) & (stamps <= high)])


def test_a_field_query_on_the_payload(orders: pd.DataFrame) -> None:
    wanted = [
        int(mid)
        for mid, payload in zip(orders["id"], orders["payload"], strict=True)
        if payload.get("order_id") == "ORD-0001"
    ]
    ins = inspect(orders)

    ins.query_box.value = 'payload.order_id == "ORD-0001"'

    assert len(wanted) > 1
    assert ids(ins.filtered) == wanted


def test_conditions_joined_with_and_and_exact_ids(orders: pd.DataFrame) -> None:
    big_id = max(ids(orders))
    ins = inspect(orders)

    ins.query_box.value = f"id == {big_id} and priority >= 4"

    assert big_id >= 2**63
    assert ids(ins.filtered) == [big_id]


def test_free_text_searches_payload_sender_and_format(orders: pd.DataFrame) -> None:
    def has_hooli(row: pd.Series) -> bool:
        text = msgspec.json.encode(row["payload"]).decode() + row["sender_id"]
        return "hooli" in (text + row["format"]).lower()

    ins = inspect(orders)

    ins.query_box.value = "Hooli"

    assert ids(ins.filtered) == ids(orders[orders.apply(has_hooli, axis=1)])
    assert "&#x27;Hooli&#x27; was searched as free text" in ins.status.value
    ins.query_box.value = "sender_id == 'validator'"
    assert "free text" not in ins.status.value


def test_a_mistyped_query_is_shown_and_the_table_stays(
    orders: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    ins = inspect(orders)
    ins.agents_box.value = ("pricing",)
    before = ids(ins.filtered)

    ins.query_box.value = "payload.total >"

    assert "rdebug-error" in status_text(ins)
    assert "ends after" in status_text(ins)
    assert ids(ins.filtered) == before
    with pytest.raises(InvalidQuery, match="no message has a field"):
        MessageFilter(query="nosuchfield == 1")


def test_going_to_the_parent_children_and_trace(orders: pd.DataFrame) -> None:
    links = build_links(orders)
    child = next(m for m in ids(orders) if links.parents.get(m) in links.order)
    parent = links.parents[child]
    ins = inspect(orders, selected=child)

    ins.parent_button.click()
    assert ins.selected_id == parent
    assert str(child) in [value for _, value in ins.children_box.options]
    ins.children_box.value = str(child)
    assert ins.selected_id == child

    ins.trace_button.value = True
    trace = links.trace(child)
    assert ids(ins.filtered) == [m for m in ids(orders) if m in set(trace)]
    assert trace[0] not in links.parents or links.parents[trace[0]] not in links.order
    ins.trace_button.value = False
    assert len(ins.filtered) == len(orders)


def test_going_to_a_parent_hidden_by_the_filter_clears_it(
    orders: pd.DataFrame,
) -> None:
    links = build_links(orders)
    senders = dict(zip(ids(orders), orders["sender_id"], strict=True))
    child = next(
        m
        for m in ids(orders)
        if links.parents.get(m) in links.order
        and senders[links.parents[m]] != senders[m]
    )
    ins = inspect(orders, where=MessageFilter(agents=(senders[child],)), selected=child)
    assert ins.selected_id == child

    ins.parent_button.click()

    assert ins.selected_id == links.parents[child]
    assert ins.where.is_empty
    assert "filter cleared" in status_text(ins)


def test_a_parent_outside_the_frame_disables_the_button() -> None:
    now = 1796300983041
    child_id, parent_id = int(encode_id(4, now, sequence=2)), int(encode_id(4, now))
    frame = hand_made(
        [("t", make_member("t", child_id, now, {}, in_response_to=parent_id))]
    )
    ins = inspect(frame)

    assert ins.parent_button.disabled
    assert f"{parent_id} (not in this frame)" in ins.detail.value
    ins.parent_button.click()
    assert "not in this frame" in status_text(ins)
    assert ins.selected_id == child_id


def test_a_5_mb_payload_and_a_20000_item_list_open_collapsed_and_cut() -> None:
    now = 1796300983041
    payload = {"blob": "x" * BIG, "items": list(range(20_000))}
    frame = hand_made([("t", make_member("t", int(encode_id(4, now)), now, payload))])
    ins = inspect(frame)

    html = ins.detail.value
    fallback = ins._repr_mimebundle_()["text/html"]
    assert int(frame["payload_size"].iloc[0]) > BIG
    assert len(html) < 300_000
    assert len(fallback) < 400_000
    size = int(frame["payload_size"].iloc[0]) / (1024 * 1024)
    assert f"{size:.1f} MB" in html
    tree = html.split('<div class="rdebug-json">', 1)[1]
    assert tree.startswith("<details><summary>")  # the root starts collapsed
    assert "<details open>" not in tree
    assert f"string of {BIG:,} characters" in html
    assert "19,900 more items not shown" in html


def test_script_in_a_payload_is_escaped_everywhere() -> None:
    now = 1796300983041
    evil = "<script>alert(1)</script>"
    member = make_member(
        "t<b>",
        int(encode_id(4, now)),
        now,
        {evil: evil, "img": '<img src=x onerror="alert(2)">'},
        sender="<i>agent</i>",
        fmt="<svg onload=alert(3)>",
        history=[{"agent": {"id": evil}, "origin": 1, "result": 2}],
    )
    ins = inspect(hand_made([("t<b>", member)]))

    for html in (ins.detail.value, ins._repr_html_(), ins.status.value):
        assert "<script" not in html
        assert "<img" not in html
        assert "<svg" not in html
        assert "<i>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in ins.detail.value
    assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in ins.detail.value


def test_ids_are_shown_exactly() -> None:
    # sequence 4095 sets the low bits that a float64 or a JavaScript number drops
    now = 1796300983041
    top = int(encode_id(7, now, machine_id=5, sequence=4095))
    parent = int(encode_id(7, now, machine_id=5, sequence=4094))
    frame = hand_made(
        [
            ("t", make_member("t", parent, now, {"ref": top})),
            ("t", make_member("t", top, now, {"ref": parent}, in_response_to=parent)),
        ]
    )
    ins = inspect(frame, selected=top)

    assert top >= 2**63
    assert int(float(top)) != top
    assert ins.rows.value == str(top)
    assert f'data-message-id="{top}"' in ins.detail.value
    assert f'<span class="rdebug-num">{parent}</span>' in ins.detail.value
    assert str(top) in ins._repr_html_()
    assert str(int(float(top))) not in ins.detail.value
    ins.parent_button.click()
    assert ins.selected_id == parent


def test_the_display_bundle_has_text_html_and_the_widget_view(
    orders: pd.DataFrame,
) -> None:
    chosen = ids(orders)[10]
    ins = inspect(orders, selected=chosen)

    bundle = ins._repr_mimebundle_()

    assert set(bundle) == {"text/plain", "text/html", WIDGET_VIEW}
    assert bundle[WIDGET_VIEW]["model_id"] == ins.model_id
    assert "<table" in bundle["text/html"]
    assert f'class="rdebug-selected" data-message-id="{chosen}"' in bundle["text/html"]
    assert f"Message {chosen}" in bundle["text/html"]
    assert bundle["text/plain"].startswith("<Inspector 577 messages")
    assert set(ins._repr_mimebundle_(include=["text/html"])) == {"text/html"}
    assert WIDGET_VIEW not in ins._repr_mimebundle_(exclude=[WIDGET_VIEW])


@pytest.mark.parametrize("row", [10, 300, 576], ids=["early", "middle", "last"])
def test_the_static_view_lists_the_rows_around_the_selection(
    orders: pd.DataFrame, row: int
) -> None:
    every = [str(mid) for mid in ids(orders)]

    html = inspect(orders, selected=every[row])._repr_html_()

    listed = re.findall(r'<tr[^>]*data-message-id="(\d+)"', html)
    first = every.index(listed[0])
    assert listed == every[first : first + 50]
    assert every[row] in listed
    words = "the first 50" if first == 0 else f"rows {first + 1} to {first + 50}"
    assert f"577 of 577 messages match the filter; {words} are listed" in html


def test_message_view_is_a_pure_builder(orders: pd.DataFrame) -> None:
    last = orders.iloc[-1]

    view = message_view(orders, str(last["id"]))

    assert view.id == int(last["id"])
    assert view.id_parts.timestamp == int(last["timestamp_ms"])
    assert dict(view.header)["sender_id"] == last["sender_id"]
    assert len(view.hops) == int(last["hop_count"])
    with pytest.raises(rd.MessageNotFound):
        message_view(orders, 1)


def test_filter_messages_agrees_with_row_matching(orders: pd.DataFrame) -> None:
    where = MessageFilter(errors="no errors", query="payload.status ~ CONF")
    rows = cast("list[dict[str, Any]]", orders.to_dict("records"))

    kept = filter_messages(orders, where)

    assert ids(kept) == [int(r["id"]) for r in rows if where.matches(r)]
    assert len(kept) > 0


def test_the_explorer_lists_topics_and_loads_a_window(capture_bus: rd.Bus) -> None:
    topics = capture_bus.topics("faulty-workers")
    ex = explore(capture_bus, "faulty-workers", ["tasks.done", "error_topic"])

    assert [v for _, v in ex.topics_box.options] == topics["topic"].tolist()
    assert ex.messages is None
    ex.load_button.click()

    expected = capture_bus.messages("faulty-workers", ["tasks.done", "error_topic"])
    assert ex.messages is not None
    assert ids(ex.messages) == ids(expected)
    assert ex.inspector is not None
    assert ids(ex.inspector.messages) == ids(expected)
    assert f"loaded {len(expected)} messages" in status_text(ex)
    assert "Guild faulty-workers" in ex._repr_mimebundle_()["text/html"]


def test_a_cut_load_says_so_in_the_status(capture_bus: rd.Bus) -> None:
    ex = explore(capture_bus, ORDERS, limit=5)

    frame = ex.load()

    assert len(frame) == 5
    assert frame.attrs["truncated"]
    assert "limit=5 cut the result" in status_text(ex)


@pytest.fixture
def doomed_server() -> Iterator[tuple[Bus, EmbeddedServer]]:
    """A Bus on a server of its own, which the test may stop."""
    server = EmbeddedServer().start()
    client = redis.Redis.from_url(
        server.url, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    now = 1796300983041
    client.zadd("g:t", {make_member("t", int(encode_id(4, now)), now, {}): now})
    yield Bus(client, url=server.url, progress=False), server
    client.close()
    server.stop()


def test_a_failing_callback_is_shown_and_logged(
    doomed_server: tuple[Bus, EmbeddedServer], caplog: pytest.LogCaptureFixture
) -> None:
    bus, server = doomed_server
    ex = explore(bus, "g")
    server.stop()

    with caplog.at_level(logging.ERROR, logger="rdebug_nb.widgets"):
        ex.load_button.click()

    assert "rdebug-error" in status_text(ex)
    assert "ConnectionFailed" in status_text(ex)
    assert any(r.exc_info for r in caplog.records)
    assert ex.messages is None


def test_the_tail_view_shows_new_rows_counters_and_buttons(
    fresh_bus: rd.Bus,
) -> None:
    tail = Tail(fresh_bus, "view-guild").start()
    view = tail_view(tail, rows=5)
    wait_for(lambda: tail.state == "live", "the subscription")
    members = batch(fresh_bus.client, 8)

    publish(fresh_bus.client, "view-guild", members)
    wait_for(lambda: tail.counts.received >= 8, "8 deliveries")
    view.refresh()

    newest = [msgspec.json.decode(m)["id"] for _, m in members[-5:]]
    table = view.table.value
    assert all(str(mid) in table for mid in newest)
    assert str(msgspec.json.decode(members[0][1])["id"]) not in table
    assert "received 8" in view.counts_line.value
    assert "newest 5 of 8 held" in table
    view.pause_button.click()
    assert tail.state == "paused"
    assert not view.resume_button.disabled
    view.resume_button.click()
    assert str(tail.state) == "live"
    view.query_box.value = "payload.n < 2"
    assert len(tail.messages) == 2
    assert set(view._repr_mimebundle_()) == {"text/plain", "text/html", WIDGET_VIEW}
    view.stop_button.click()
    assert tail.thread is not None
    assert not tail.thread.is_alive()
    assert view.stop_button.disabled
    view.close()
    tail.close()


def test_data_modules_work_without_display_libraries() -> None:
    code = (
        "import sys\n"
        "for name in ('ipywidgets', 'IPython', 'plotly'):\n"
        "    sys.modules[name] = None\n"
        "import rdebug_nb._query, rdebug_nb._views\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )

    assert done.stdout.strip() == "ok", done.stderr


def test_the_explorer_starts_on_the_busiest_guild(capture_bus: rd.Bus) -> None:
    guilds = capture_bus.guilds(count_distinct=False)

    ex = explore(capture_bus)

    busiest = guilds.sort_values("deliveries").iloc[-1]["namespace"]
    assert ex.guild_box.value == busiest == ORDERS
    assert busiest != sorted(guilds["namespace"])[0]


def test_inspecting_a_frame_without_the_needed_columns_says_which(
    orders: pd.DataFrame,
) -> None:
    with pytest.raises(InvalidQuery, match="inspect\\(\\) needs a message frame"):
        inspect(orders[["id", "payload"]])

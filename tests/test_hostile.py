"""Hostile and broken data: every case gives a counted skip or loads, the rest of
the guild stays exactly as it was, and nothing read is ever run as code.

The member cases add one changed copy of a real capture message (with a fresh
id) to the capture's colon-named guild and compare every other message with a
load made before. ``tests/test_bad_input.py`` covers the first bad shapes; this
corpus adds one test per case, with its reason.
"""

from __future__ import annotations

import ast
import json
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import redis

import rdebug_nb as rd
from rdebug_nb import discovery
from tests.members import (
    copy_guild,
    encoded,
    publish,
    restamped,
    server_ms,
    store,
    template,
)

GUILD = "acme:support:echo"
TOPIC = "default_topic"
STAMP = 1_796_300_990_000  # inside the capture's time span
ROOT = Path(__file__).resolve().parents[1]

Body = dict[str, Any]


def hostile_body(capture: Path) -> Body:
    """A real echo message on a fresh id, not yet in the guild."""
    return restamped(template(capture), TOPIC, STAMP, sequence=77)


def replaced(body: Body, field: str, raw: str) -> bytes:
    """The member with ``field``'s JSON value replaced by ``raw`` text."""
    text = encoded(body).decode()
    value = json.dumps(body[field], separators=(",", ":"), ensure_ascii=False)
    marker = f'"{field}":{value}'
    assert text.count(marker) == 1, marker
    return text.replace(marker, f'"{field}":{raw}').encode("utf-8", "surrogateescape")


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@dataclass(frozen=True)
class Case:
    """One hostile member: how to make it, and the reason a skip must give."""

    make: Callable[[Body], bytes]
    reason: str


SKIPPED = {
    "binary garbage": Case(lambda b: b"\x00\x01\x02\xfe binary", "not JSON"),
    "truncated JSON": Case(lambda b: encoded(b)[: len(encoded(b)) // 2], "not JSON"),
    "JSON null": Case(lambda b: b"null", "not a RusticAI message"),
    "empty member": Case(lambda b: b"", "not JSON"),
    "a JSON list of the message": Case(
        lambda b: b"[" + encoded(b) + b"]", "not a RusticAI message"
    ),
    "priority as text": Case(
        lambda b: replaced(b, "priority", '"high"'), "not a RusticAI message"
    ),
    "topics as a number": Case(
        lambda b: replaced(b, "topics", "42"), "not a RusticAI message"
    ),
    "float id that lost precision": Case(
        lambda b: replaced(b, "id", f"{float(b['id']):.16e}"), "not a RusticAI message"
    ),
    "id as a string": Case(
        lambda b: replaced(b, "id", f'"{b["id"]}"'), "not a RusticAI message"
    ),
    "most negative 64-bit id": Case(lambda b: replaced(b, "id", str(-(2**63))), "id"),
    "65-bit id": Case(lambda b: replaced(b, "id", str(2**65 - 1)), "id"),
    "30-digit id": Case(lambda b: replaced(b, "id", "9" * 30), "id"),
    "answer to a 65-bit id": Case(
        lambda b: replaced(b, "in_response_to", str(2**64)), "referenced id"
    ),
    "priority 8": Case(lambda b: replaced(b, "priority", "8"), "priority"),
    "NaN timestamp": Case(lambda b: replaced(b, "timestamp", "NaN"), "not JSON"),
    "Infinity timestamp": Case(
        lambda b: replaced(b, "timestamp", "Infinity"), "not JSON"
    ),
    "timestamp beyond float range": Case(
        lambda b: replaced(b, "timestamp", "1e400"), "not a RusticAI message"
    ),
    "NaN inside the payload": Case(
        lambda b: replaced(b, "payload", '{"v":NaN}'), "not JSON"
    ),
    "invalid UTF-8 in the sender": Case(
        lambda b: replaced(b, "sender", '{"id":"\udcff\udcfe","name":"x"}'), "not JSON"
    ),
    "invalid UTF-8 in the payload": Case(
        lambda b: replaced(b, "payload", '{"t":"\udcff"}'), "UTF-8"
    ),
    "payload nested 10,000 levels": Case(
        lambda b: replaced(b, "payload", f'{{"x":{nested(10_000)}}}'), "nest"
    ),
    "history nested 10,000 levels": Case(
        lambda b: replaced(b, "message_history", f'[{{"a":{nested(10_000)}}}]'),
        "nest",
    ),
}


@pytest.fixture
def guild(fresh_bus: rd.Bus, capture: Path) -> tuple[rd.Bus, pd.DataFrame]:
    """The colon-named guild of the capture and its messages, read cleanly."""
    copy_guild(fresh_bus.client, capture, GUILD)
    return fresh_bus, fresh_bus.messages(GUILD)


def loaded_with_one_skip(bus: rd.Bus) -> pd.DataFrame:
    with pytest.warns(rd.SkippedEntriesWarning, match="skipped 1 ") as caught:
        frame = bus.messages(GUILD)
    assert len(caught) == 1
    return frame


@pytest.mark.parametrize("case", SKIPPED.values(), ids=SKIPPED.keys())
def test_a_hostile_member_is_one_counted_skip(
    guild: tuple[rd.Bus, pd.DataFrame], capture: Path, case: Case
) -> None:
    bus, before = guild
    member = case.make(hostile_body(capture))
    bus.client.zadd(f"{GUILD}:{TOPIC}", {member: STAMP})

    after = loaded_with_one_skip(bus)

    skipped = rd.skips(after)
    assert skipped["key"].tolist() == [f"{GUILD}:{TOPIC}"]
    assert case.reason in skipped["reason"].iloc[0]
    assert_same_messages(after, before)
    guild_row = bus.guilds().set_index("namespace").loc[GUILD]  # discovery copes
    assert guild_row["deliveries"] == before["topics"].map(len).sum() + 1


def assert_same_messages(after: pd.DataFrame, before: pd.DataFrame) -> None:
    columns = [c for c in before.columns if c != "payload"]
    pd.testing.assert_frame_equal(after[columns], before[columns])
    assert after["payload"].tolist() == before["payload"].tolist()


# -- members that load -------------------------------------------------------


def add_and_load(bus: rd.Bus, member: bytes) -> pd.DataFrame:
    bus.client.zadd(f"{GUILD}:{TOPIC}", {member: STAMP})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning at all
        return bus.messages(GUILD)


def the_new_row(after: pd.DataFrame, before: pd.DataFrame) -> pd.Series:
    new = after[~after["id"].isin(before["id"])]
    assert len(new) == 1
    assert_same_messages(
        after[after["id"].isin(before["id"])].reset_index(drop=True), before
    )
    return new.iloc[0]


@pytest.mark.parametrize(
    "payload", ['{"t":"\udcff"}', nested(10_000)], ids=["not UTF-8", "too deep"]
)
def test_looking_up_an_unreadable_message_says_so(
    guild: tuple[rd.Bus, pd.DataFrame], capture: Path, payload: str
) -> None:
    bus, _ = guild
    body = hostile_body(capture)
    bus.client.zadd(f"{GUILD}:{TOPIC}", {replaced(body, "payload", payload): STAMP})

    found = bus.message(GUILD, body["id"])

    with pytest.raises(rd.MalformedMessage, match=f"message {body['id']} of "):
        _ = found.data
    assert found.raw.startswith(b"{")


def test_a_5_mb_payload_loads(
    guild: tuple[rd.Bus, pd.DataFrame], capture: Path
) -> None:
    bus, before = guild
    body = hostile_body(capture)
    body["payload"] = {"blob": "x" * 5_000_000, "n": 1}

    row = the_new_row(add_and_load(bus, encoded(body)), before)

    assert row["payload"] == body["payload"]
    assert row["payload_size"] > 5_000_000
    assert bus.message(GUILD, body["id"]).data["payload"]["n"] == 1


def test_a_payload_nested_500_levels_loads(
    guild: tuple[rd.Bus, pd.DataFrame], capture: Path
) -> None:
    bus, before = guild
    member = replaced(hostile_body(capture), "payload", f'{{"x":{nested(500)}}}')

    row = the_new_row(add_and_load(bus, member), before)

    depth, value = 0, row["payload"]["x"]
    while value:
        depth, value = depth + 1, value[0]
    assert depth == 499


def test_duplicate_keys_take_the_last_value_everywhere(
    guild: tuple[rd.Bus, pd.DataFrame], capture: Path
) -> None:
    bus, before = guild
    body = hostile_body(capture)
    decoy = body["id"] + (1 << 12)
    text = encoded(body).decode()
    text = text.replace('"payload":', '"payload":{"first":1},"payload":', 1)
    text = text.replace('"sender":', f'"id":{decoy},"sender":', 1)

    row = the_new_row(add_and_load(bus, text.encode()), before)

    assert row["id"] == body["id"]
    assert row["payload"] == body["payload"]
    assert bus.guilds().set_index("namespace").loc[GUILD, "messages"] == len(before) + 1
    with pytest.raises(rd.MessageNotFound):
        bus.message(GUILD, decoy)


def test_an_id_inside_an_object_after_the_message_id_fools_no_count(
    guild: tuple[rd.Bus, pd.DataFrame], capture: Path
) -> None:
    bus, before = guild
    body = hostile_body(capture)
    member = encoded(body)[:-1] + b',"extra":{"id":7,"priority":1,"timestamp":1.0}}'

    row = the_new_row(add_and_load(bus, member), before)

    assert row["id"] == body["id"]
    assert discovery.try_member_id(member) == body["id"]
    assert bus.guilds().set_index("namespace").loc[GUILD, "messages"] == len(before) + 1


TEXT_FIELDS = ("sender", "format", "process_status", "traceparent", "payload")
ODD_TEXT = {
    "script tag": "<script>alert(1)</script>",
    "attribute breakout": '"><img src=x onerror=alert(2)>',
    "python code": "__import__('os').system('touch PWNED')",
    "format string": "{0.__class__.__mro__}",
    "template syntax": "${7*7}{{7*7}}",
    "control and bidi characters": "\u202eevil\u200b\x00\x07\x1b[31m",
    "emoji and CJK": "😀 日本語 ﷽",
}


@pytest.mark.parametrize("text", ODD_TEXT.values(), ids=ODD_TEXT.keys())
def test_odd_text_in_every_field_loads_unchanged_and_runs_nothing(
    guild: tuple[rd.Bus, pd.DataFrame],
    capture: Path,
    text: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    bus, before = guild
    body = hostile_body(capture)
    body |= {
        "sender": {"id": text, "name": text},
        "format": text,
        "process_status": text,
        "traceparent": text,
        "payload": {text: text, "nested": [text, {"k": text}]},
        "session_state": {text: text},
        "recipient_list": [{"id": text, "name": text}],
    }

    row = the_new_row(add_and_load(bus, encoded(body)), before)

    for column in (
        "sender_id",
        "sender_name",
        "format",
        "process_status",
        "traceparent",
    ):
        assert row[column] == text
    assert row["payload"] == body["payload"]
    assert row["recipients"] == [text]
    assert str(bus.message(GUILD, body["id"]).data["sender"]["id"]) == text
    repr(bus.messages(GUILD))
    assert list(tmp_path.iterdir()) == []  # "touch PWNED" never ran


# -- guild ids and topics ----------------------------------------------------

ODD_GUILDS = {
    "spaces": ("my guild", "my_guild"),
    "unicode": ("gílda-日本-😀", "gilda"),
    "star": ("star*", "starX"),
    "question mark": ("q?", "qZ"),
    "brackets": ("br[ack]et", "braet"),
    "backslash": ("back\\slash", "backslash"),
    "colons and a trailing colon": ("org:team:", "org:team"),
    "markup": ('<b onmouseover="x">g</b>', "bg"),
}


@pytest.mark.parametrize("names", ODD_GUILDS.values(), ids=ODD_GUILDS.keys())
def test_odd_guild_ids_read_exactly_their_own_keys(
    fresh_bus: rd.Bus, capture: Path, names: tuple[str, str]
) -> None:
    odd, decoy = names
    for name in (odd, decoy, GUILD):
        copy_guild(fresh_bus.client, capture, GUILD, name)
    reference = fresh_bus.messages(GUILD)

    guilds = fresh_bus.guilds().set_index("namespace")
    frame = fresh_bus.messages(odd)
    topics = fresh_bus.topics(odd)
    found = fresh_bus.message(odd, int(reference["id"].iloc[-1]))

    assert {odd, decoy, GUILD} <= set(guilds.index)
    assert guilds.loc[odd, "messages"] == len(reference)
    assert guilds.loc[odd, "message_keys"] == len(reference)
    assert (frame["guild_id"] == odd).all()
    assert frame["id"].tolist() == reference["id"].tolist()
    assert topics["key"].str.startswith(f"{odd}:").all()
    assert len(topics) == len(fresh_bus.topics(GUILD))
    assert found.has_message_key
    assert found.guild_id == odd


def test_topics_with_odd_characters(fresh_bus: rd.Bus, capture: Path) -> None:
    odd = ["agent_inbox:x y", "日本語", "t*?[", "a:b:c:", " "]
    bodies = [
        restamped(template(capture), topic, STAMP + n, sequence=n)
        for n, topic in enumerate(odd)
    ]
    for body in bodies:
        store(fresh_bus.client, "g", body)

    topics = fresh_bus.topics("g")
    one = fresh_bus.messages("g", topics=["t*?["])
    every = fresh_bus.deliveries("g")

    assert sorted(topics["topic"]) == sorted(odd)
    assert one["id"].tolist() == [bodies[2]["id"]]
    assert every["topic"].tolist() == odd
    assert fresh_bus.message("g", bodies[3]["id"]).topics == ["a:b:c:"]


@pytest.fixture
def badly_named(fresh_bus: rd.Bus, capture: Path) -> tuple[rd.Bus, Body]:
    """A topic key whose name is not UTF-8, next to the capture's echo guild."""
    copy_guild(fresh_bus.client, capture, GUILD)
    body = restamped(template(capture), TOPIC, STAMP)
    fresh_bus.client.zadd(b"bad\xffguild:" + TOPIC.encode(), {encoded(body): STAMP})
    return fresh_bus, body


def test_a_key_name_that_is_not_utf8_is_a_counted_skip(
    badly_named: tuple[rd.Bus, Body],
) -> None:
    bus, _ = badly_named

    with pytest.warns(rd.SkippedEntriesWarning, match="skipped 1 ") as caught:
        guilds = bus.guilds().set_index("namespace")

    assert "bad\\xffguild:default_topic: the key name is not UTF-8" in str(
        caught[0].message
    )
    assert list(guilds.index) == [GUILD]
    assert guilds.loc[GUILD, "messages"] == 24


@pytest.mark.parametrize("kind", ["list", "set", "stream"])
def test_keys_of_other_types_under_a_guild_prefix_are_counted_skips(
    fresh_bus: rd.Bus, capture: Path, kind: str
) -> None:
    copy_guild(fresh_bus.client, capture, GUILD)
    key = f"{GUILD}:rogue_{kind}"
    write: dict[str, Callable[[redis.Redis], object]] = {
        "list": lambda c: c.rpush(key, "a"),
        "set": lambda c: c.sadd(key, "a"),
        "stream": lambda c: c.xadd(key, {"a": "b"}),
    }
    write[kind](fresh_bus.client)

    with pytest.warns(rd.SkippedEntriesWarning, match="skipped 1 "):
        guilds = fresh_bus.guilds()

    assert [s.key for s in guilds.attrs["skips"]] == [key]
    assert kind in guilds.attrs["skips"][0].reason
    assert guilds.set_index("namespace").loc[GUILD, "deliveries"] == 24


# -- empty and huge guilds ----------------------------------------------------


@pytest.fixture
def emptied(fresh_bus: rd.Bus, capture: Path) -> tuple[rd.Bus, int]:
    """A guild whose topic keys were emptied by ZREM: only msg: keys remain."""
    copy_guild(fresh_bus.client, capture, GUILD)
    mid = int(fresh_bus.messages(GUILD)["id"].iloc[0])
    for key in fresh_bus.topics(GUILD)["key"]:
        fresh_bus.client.zremrangebyrank(key, 0, -1)
    return fresh_bus, mid


def test_an_emptied_guild_says_it_has_no_topic_key(emptied: tuple[rd.Bus, int]) -> None:
    bus, _ = emptied

    with pytest.raises(
        rd.GuildNotFound, match=r"no topic key of guild 'acme:support:echo'"
    ):
        bus.messages(GUILD)
    assert bus.client.exists(f"{GUILD}:{TOPIC}") == 0


def test_an_emptied_guild_is_still_listed_with_its_message_keys(
    emptied: tuple[rd.Bus, int],
) -> None:
    bus, _ = emptied

    row = bus.guilds().set_index("namespace").loc[GUILD]

    assert row["topic_keys"] == 0
    assert row["message_keys"] == 24


def test_a_message_of_an_emptied_guild_is_found_by_its_msg_key(
    emptied: tuple[rd.Bus, int],
) -> None:
    bus, mid = emptied

    found = bus.message(GUILD, mid)

    assert found.has_message_key
    assert found.id == mid


def test_a_guild_with_10000_topic_keys(fresh_bus: rd.Bus, capture: Path) -> None:
    body = template(capture)
    pipe = fresh_bus.client.pipeline(transaction=False)
    ids = []
    for n in range(10_000):
        copy = restamped(body, f"agent_inbox:agent-{n:05d}", STAMP + n, sequence=n)
        pipe.zadd(f"wide:{copy['topic_published_to']}", {encoded(copy): STAMP + n})
        ids.append(copy["id"])
    pipe.execute()

    guilds = fresh_bus.guilds().set_index("namespace")
    topics = fresh_bus.topics("wide")
    frame = fresh_bus.messages("wide")
    last = fresh_bus.message("wide", ids[-1])

    assert guilds.loc["wide", "topic_keys"] == 10_000
    assert guilds.loc["wide", "messages"] == 10_000
    assert len(topics) == 10_000
    assert frame["id"].tolist() == ids
    assert last.topics == ["agent_inbox:agent-09999"]


# -- nothing is evaluated ----------------------------------------------------

BUILTINS_THAT_RUN_TEXT = {"eval", "exec", "compile", "__import__"}
METHODS_THAT_RUN_TEXT = {"query", "eval", "read_pickle"}
MODULES_THAT_RUN_DATA = {"pickle", "marshal", "shelve", "dill", "yaml"}


def test_the_package_never_evaluates_text() -> None:
    found: list[str] = []
    for path in sorted((ROOT / "rdebug_nb").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            found.extend(f"{path.name}: {name}" for name in _forbidden(node))

    assert found == []


def _forbidden(node: ast.AST) -> list[str]:
    """Calls that run text as code (pandas ``query``/``eval`` included), and
    modules that rebuild objects from bytes."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return [node.func.id] if node.func.id in BUILTINS_THAT_RUN_TEXT else []
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return [node.func.attr] if node.func.attr in METHODS_THAT_RUN_TEXT else []
    if isinstance(node, ast.Import | ast.ImportFrom):
        names = {alias.name.split(".")[0] for alias in node.names}
        names.add((getattr(node, "module", None) or "").split(".")[0])
        return sorted(names & MODULES_THAT_RUN_DATA)
    return []


# -- the report page -----------------------------------------------------------

MARKUP = (
    "<script>window.__pwned=1</script>",
    '<img src=x onerror="window.__pwned=2">',
    "</script><script>window.__pwned=3</script>",
    "<svg onload=window.__pwned=4>",
    '" onmouseover="window.__pwned=5" x="',
)
RAW_SIGNS = (
    r"<script>window\.__pwned",
    r"<img src=x",
    r"<svg onload",
    r"<[^<>]*\sonmouseover=",  # an attribute, not text that shows a quote
)


def injected(page: str) -> list[str]:
    """The markup of the data that the page holds as real tags or attributes."""
    return [sign for sign in RAW_SIGNS if re.search(sign, page)]


CHROMIUM = Path("/usr/bin/chromium")


def evil_guild_id(sentinel: Path) -> str:
    """Markup, plus a quote and a newline that would run code if the notebook's
    parameters were pasted in unquoted."""
    escape = f'x" + __import__("pathlib").Path("{sentinel}").touch() + "\n'
    return MARKUP[0] + escape + MARKUP[1]


@pytest.fixture(scope="module")
def evil_report(
    valkey_url: str, capture: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    """The overview report of a guild whose every text is markup."""
    from rdebug_nb.report import build_report

    folder = tmp_path_factory.mktemp("evil-report")
    sentinel = folder / "PWNED"
    guild_id = evil_guild_id(sentinel)
    url = valkey_url.replace("/0", "/7")
    client = redis.Redis.from_url(url)
    client.flushdb()
    text = "".join(MARKUP)
    for n, topic in enumerate([TOPIC, MARKUP[2], MARKUP[4]]):
        body = restamped(template(capture), topic, STAMP + n, sequence=n)
        body |= {
            "sender": {"id": MARKUP[n], "name": text},
            "format": text,
            "process_status": MARKUP[1],
            "is_error_message": True,
            "payload": {text: text},
        }
        store(client, guild_id, body)
    parameters = {"redis_url": url, "guild_id": guild_id}
    report = build_report(["01_guild_overview.ipynb"], folder / "r.html", parameters)
    client.flushdb()
    client.close()
    return report.path.read_text(encoding="utf-8"), sentinel


def test_the_report_escapes_markup_from_the_data(evil_report: tuple[str, Path]) -> None:
    page, sentinel = evil_report

    assert injected(page) == []
    assert page.count("window.__pwned=1") >= 2  # shown, escaped
    assert not sentinel.exists()


def test_parameter_table_escapes_markup() -> None:
    from rdebug_nb.report import parameter_table

    table = parameter_table({MARKUP[0]: MARKUP[1], "guild_id": MARKUP[2]})

    assert injected(table) == []
    assert "&lt;script&gt;" in table


@pytest.mark.browser
def test_the_report_runs_no_script_from_the_data_in_a_browser(
    evil_report: tuple[str, Path], tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    report = tmp_path / "report.html"
    report.write_text(evil_report[0], encoding="utf-8")
    control = tmp_path / "control.html"  # proves the probe sees a script that ran
    control.write_text(f"<html><body>{MARKUP[0]}{MARKUP[1]}</body></html>")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        seen = probe(browser.new_page(), report)
        seen_in_control = probe(browser.new_page(), control)
        browser.close()

    figures = evil_report[0].count('class="plotly-graph-div"')
    assert figures >= 1
    assert seen == {"pwned": None, "injected": 0, "dialogs": [], "plots": figures}
    assert seen_in_control["pwned"] in (1, 2)
    assert seen_in_control["injected"] == 1


def probe(page: Any, path: Path) -> dict[str, Any]:
    """Open ``path``, hover it, and read what scripts of the data would leave."""
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    page.goto(path.as_uri(), wait_until="load")
    page.mouse.move(200, 200)
    found: dict[str, Any] = page.evaluate(
        """() => ({
            pwned: window.__pwned ?? null,
            injected: document.querySelectorAll(
                'img[src="x"], svg[onload], [onmouseover]').length,
            plots: document.querySelectorAll('.js-plotly-plot').length,
        })"""
    )
    return found | {"dialogs": dialogs}


# -- the tail ------------------------------------------------------------------


def test_the_tail_counts_hostile_messages_and_goes_on(
    fresh_bus: rd.Bus, capture: Path
) -> None:
    from rdebug_nb.tail import Tail

    client = fresh_bus.client
    now = server_ms(client)
    good = [restamped(template(capture), TOPIC, now, sequence=n) for n in range(2)]
    hostile = [
        b"not json",
        replaced(good[0], "payload", nested(10_000)),
        replaced(good[0], "payload", '{"t":"\udcff"}'),
    ]

    with Tail(fresh_bus, "live") as tail:
        wait_until(lambda: tail.state == "live")
        publish(client, "live", good[0])
        for member in hostile:
            client.publish(f"live:{TOPIC}", member)
        publish(client, "live", good[1])
        wait_until(lambda: tail.counts.received == 2 or tail.state == "failed")
        state, counts = tail.state, tail.counts

    assert state == "live"
    assert counts.unreadable == len(hostile)
    assert [m.id for m in tail.messages] == [b["id"] for b in good]


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.01)

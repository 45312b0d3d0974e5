"""The facts the curated notebooks state, checked against the raw capture.

A notebook cell tagged ``fact-<name>`` shows something the data says: how many
messages a guild holds, how deep the longest chain goes. When the notebooks run
under nbval (``notebooks/conftest.py``), each such cell's output is handed to
:func:`check_fact`, which compares it with numbers computed here from the raw
JSON of the capture's ``keyspace.jsonl``, with the standard library only: a bug
in rdebug_nb cannot hide itself by being used to compute what is expected.

The expected numbers are computed for whichever guild the notebook ran on, found
in what the notebook printed before the fact (:func:`find_guild`), so the checks
hold for any guild of the capture, not only the default one.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from itertools import takewhile, zip_longest
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parents[1]
# The same rule as tests/conftest.py: RDEBUG_SHARED, else ../shared.
SHARED: Final = Path(os.environ.get("RDEBUG_SHARED", ROOT.parent / "shared"))
KEYSPACE: Final = SHARED / "fixtures" / "rusticai-1.4" / "keyspace.jsonl"
DEAD_LETTER_TOPIC: Final = "dead_letter_queue"

_GUILD_LINES: Final = (
    re.compile(r"^guild: (\S+)$", re.M),
    re.compile(r"^tailing (\S+)$", re.M),
    re.compile(r"^(\S+): \d+ messages$", re.M),
)

Message = dict[str, Any]
Row = dict[str, str]


class FactMismatch(AssertionError):
    """A fact cell shows something the capture contradicts."""


# -- the capture, read raw ----------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One stored copy of a message: a member of a topic key."""

    namespace: str
    topic: str
    message: Message


@dataclass(frozen=True)
class Capture:
    """Every delivery of a keyspace JSONL file, parsed with :mod:`json` only.

    A topic key is ``<namespace>:<topic>`` where both parts may contain ``:``;
    each member names its own topic (``topic_published_to``, or none for a dead
    letter), which splits the key.
    """

    deliveries: tuple[Delivery, ...]
    keys: int

    @classmethod
    def read(cls, path: Path) -> Capture:
        found, keys = [], 0
        with path.open("rb") as handle:
            for line in handle:
                record = json.loads(line)
                keys += 1
                if record["type"] == "zset":
                    found += _deliveries(record["key"], record["value"])
        return cls(tuple(found), keys)

    def namespaces(self) -> list[str]:
        return sorted({d.namespace for d in self.deliveries})

    def deliveries_of(self, namespace: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.namespace == namespace]

    def messages_of(self, namespace: str) -> list[Message]:
        """Distinct messages of a namespace (first stored copy of each id)."""
        found: dict[int, Message] = {}
        for delivery in self.deliveries_of(namespace):
            found.setdefault(delivery.message["id"], delivery.message)
        return list(found.values())

    def default_guild(self) -> str:
        """What the notebooks pick when ``guild_id`` is empty: most messages."""
        sizes = Counter({ns: len(self.messages_of(ns)) for ns in self.namespaces()})
        return sizes.most_common(1)[0][0]


def _deliveries(key: str, members: list[list[Any]]) -> list[Delivery]:
    found = []
    for member, _score in members:
        message = json.loads(member)
        topic = message["topic_published_to"] or DEAD_LETTER_TOPIC
        if not key.endswith(f":{topic}"):
            raise ValueError(f"a member of {key!r} names another topic, {topic!r}")
        found.append(Delivery(key[: -len(topic) - 1], topic, message))
    return found


@functools.cache
def load_capture(path: Path = KEYSPACE) -> Capture:
    """The capture at ``path``, read once per process."""
    return Capture.read(path)


def first_messages(capture: Capture, guild: str, count: int) -> list[Message]:
    """The guild's earliest messages that are not dead letters, by time then id."""
    stored = [m for m in capture.messages_of(guild) if m["topic_published_to"]]
    return sorted(stored, key=lambda m: (m["timestamp"], m["id"]))[:count]


def delivery_count(capture: Capture, guild: str, ids: Iterable[int]) -> int:
    """How many stored copies the given messages of a guild have."""
    wanted = set(ids)
    return sum(1 for d in capture.deliveries_of(guild) if d.message["id"] in wanted)


# -- what a cell showed -------------------------------------------------------


@dataclass(frozen=True)
class Shown:
    """A cell's outputs: its text (streams, ``text/plain``) and its HTML tables.

    Each table is a list of rows keyed by column name; the index column of a
    pandas frame is keyed ``""``.
    """

    text: str
    tables: tuple[list[Row], ...] = ()

    @classmethod
    def from_outputs(cls, outputs: Iterable[Mapping[str, Any]]) -> Shown:
        texts, tables = [], []
        for output in outputs:
            if output.get("output_type") == "stream":
                texts.append(str(output.get("text", "")))
            data = output.get("data", {})
            texts.append(str(data.get("text/plain", "")))
            tables += _TableParser.parse(str(data.get("text/html", "")))
        return cls("\n".join(texts), tuple(tables))

    def table(self, index: int = 0) -> list[Row]:
        if len(self.tables) <= index:
            raise FactMismatch(f"the cell shows {len(self.tables)} tables: {self.text}")
        return self.tables[index]


@dataclass
class _Table:
    head: list[list[str]] = field(default_factory=list)
    body: list[list[str]] | None = None

    def records(self) -> list[Row]:
        """Body rows keyed by column name.

        pandas writes the column names in the first header row and the index
        name, if any, in a second one; without ``<tbody>``, the first row names.
        """
        head, body = self.head, self.body
        if body is None:
            head, body = head[:1], head[1:]
        columns = zip_longest(*head, fillvalue="")
        names = [next((name for name in column if name), "") for column in columns]
        return [dict(zip(names, row, strict=False)) for row in body if row]


class _TableParser(HTMLParser):
    """The ``<table>`` elements of an HTML fragment."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[_Table] = []
        self._rows: list[list[str]] = []
        self._cell: list[str] | None = None

    @classmethod
    def parse(cls, html: str) -> list[list[Row]]:
        parser = cls()
        parser.feed(html)
        return [table.records() for table in parser.tables]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append(_Table())
            self._rows = self.tables[-1].head
        elif tag == "tbody" and self.tables:
            self.tables[-1].body = self._rows = []
        elif tag == "tr" and self.tables:
            self._rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._rows:
            self._rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def find_guild(text: str) -> str | None:
    """The guild a notebook announced: ``guild: X``, ``tailing X``, ``X: N messages``.

    >>> find_guild("reading redis://h:1/0\\norders: 12 messages\\n")
    'orders'
    """
    for pattern in _GUILD_LINES:
        found = pattern.search(text)
        if found:
            return found.group(1)
    return None


# -- the checks ---------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """What a notebook ran on.

    Attributes
    ----------
    notebook : str
        Its file name.
    guild : str or None
        The guild it announced before the fact, if any yet.
    live_deliveries : int
        Deliveries the test published while the notebook tailed the guild.
    """

    notebook: str
    guild: str | None = None
    live_deliveries: int = 0

    def require_guild(self) -> str:
        if self.guild is None:
            raise FactMismatch(f"{self.notebook} printed no guild id before this fact")
        return self.guild


Check = Callable[[Capture, Run, Shown], None]


def check_fact(
    fact: str, outputs: Iterable[Mapping[str, Any]], run: Run, capture: Capture
) -> None:
    """Check the outputs of the cell tagged ``fact-<fact>``.

    Raises
    ------
    FactMismatch
        Naming the number shown and the number the capture has.
    """
    check = CHECKS.get(fact)
    if check is None:
        raise FactMismatch(f"no check for fact-{fact}; add one to {__name__}")
    check(capture, run, Shown.from_outputs(outputs))


def expect(what: str, shown: object, expected: object) -> None:
    if shown != expected:
        raise FactMismatch(
            f"{what}: the notebook shows {shown!r}, expected {expected!r}"
        )


def number(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise FactMismatch(f"{what}: {value!r} is not a number") from None


def check_guilds(capture: Capture, run: Run, shown: Shown) -> None:
    """Every namespace, with its deliveries (stored copies) and distinct messages."""
    rows = {row["namespace"]: row for row in shown.table()}
    expect("namespaces", sorted(rows), capture.namespaces())
    for ns in capture.namespaces():
        row = rows[ns]
        expect(
            f"{ns} deliveries",
            number(row["deliveries"], ns),
            len(capture.deliveries_of(ns)),
        )
        expect(
            f"{ns} messages",
            number(row["messages"], ns),
            len(capture.messages_of(ns)),
        )


def check_summary(capture: Capture, run: Run, shown: Shown) -> None:
    """The guild's messages, deliveries, topics, senders, errors and dead letters."""
    guild = run.require_guild()
    messages = capture.messages_of(guild)
    deliveries = capture.deliveries_of(guild)
    expected = {
        "messages": len(messages),
        "deliveries": len(deliveries),
        "topics": len({d.topic for d in deliveries}),
        "agents": len({m["sender"]["id"] for m in messages}),
        "errors": sum(1 for m in messages if m["is_error_message"]),
        "dead_letters": len(_dead_letters(capture, guild)),
    }
    values = {row[""]: row.get(guild, "") for row in shown.table()}
    for name, count in expected.items():
        expect(f"{guild} {name}", number(values.get(name, ""), name), count)


def check_edges(capture: Capture, run: Run, shown: Shown) -> None:
    """Each edge shown counts the distinct messages that went that way.

    A ``deliver`` edge (topic -> agent) counts what the agent processed from the
    topic: the origins of its recorded hops, and the messages dead-lettered while
    it handled them. A ``publish`` edge (agent -> topic) counts at least the
    copies the agent stored there; the graph adds hop results stored elsewhere
    (another guild, through the organisation namespace).
    """
    guild = run.require_guild()
    processed = _processed(capture, guild)
    published: dict[tuple[str, str], set[int]] = {}
    for d in capture.deliveries_of(guild):
        published.setdefault((d.message["sender"]["id"], d.topic), set()).add(
            d.message["id"]
        )
    rows = shown.table()
    if not rows:
        raise FactMismatch(f"{guild}: the edge table is empty")
    for row in rows:
        pair = (row["from"], row["to"])
        count = number(row["count"], f"{pair} count")
        if row["relation"] == "deliver":
            expect(f"deliver {pair}", count, len(processed.get(pair, ())))
        elif count < max(1, len(published.get(pair, ()))):
            stored = len(published.get(pair, ()))
            raise FactMismatch(f"publish {pair}: shows {count}, {stored} stored")


def _processed(capture: Capture, guild: str) -> dict[tuple[str, str], set[int]]:
    found: dict[tuple[str, str], set[int]] = {}
    for message in capture.messages_of(guild):
        for hop in message["message_history"]:
            pair = (hop["from_topic"], hop["agent"]["id"])
            found.setdefault(pair, set()).add(hop["origin"])
    for letter in _dead_letters(capture, guild):
        payload = letter["payload"]
        agent = payload["client_id"].partition("$")[2]
        topic = payload["original_topic"].removeprefix(f"{guild}:")
        found.setdefault((topic, agent), set()).add(payload["original_message_id"])
    return found


def check_trace(capture: Capture, run: Run, shown: Shown) -> None:
    """The traced message has the longest history, and its chain is that deep.

    Its last hops whose origins are stored form a line of ancestors, so the
    chain is at least that deep, and has a message more than it is deep.
    """
    guild = run.require_guild()
    pattern = r"(\d+) messages in the chain of (\d+), (\d+) hops deep"
    found = re.search(pattern, shown.text)
    if not found:
        raise FactMismatch(f"no chain summary in {shown.text!r}")
    size, traced, depth = (int(part) for part in found.groups())
    messages = {m["id"]: m for m in capture.messages_of(guild)}
    if traced not in messages:
        raise FactMismatch(f"{guild} has no message {traced}")
    history = messages[traced]["message_history"]
    longest = max(len(m["message_history"]) for m in messages.values())
    expect(f"{guild} history of the traced message", len(history), longest)
    line = len(list(takewhile(lambda hop: hop["origin"] in messages, history[::-1])))
    if not line <= depth < size:
        raise FactMismatch(
            f"{guild}: a chain of {size} messages, {depth} hops deep, with "
            f"{line} stored ancestors in a line"
        )


def check_error_groups(capture: Capture, run: Run, shown: Shown) -> None:
    """Error deliveries per topic and payload format add up to the capture's."""
    guild = run.require_guild()
    expected = Counter(
        (d.topic, d.message["format"])
        for d in capture.deliveries_of(guild)
        if d.message["is_error_message"]
    )
    groups: Counter[tuple[str, str]] = Counter()
    for row in shown.table():
        key = (row["topic"], row["format"])
        groups[key] += number(row["deliveries"], f"{key} deliveries")
    # pandas may shorten a long format name in the table: compare by prefix
    for (topic, fmt), count in groups.items():
        full = [k for k in expected if k[0] == topic and _same_name(k[1], fmt)]
        shown_as = f"{topic} {fmt}"
        if len(full) != 1:
            raise FactMismatch(f"{guild}: no error deliveries as {shown_as}")
        expect(f"{guild} error deliveries as {shown_as}", count, expected[full[0]])
    expect(f"{guild} error deliveries", sum(groups.values()), sum(expected.values()))


def _same_name(full: str, shown: str) -> bool:
    return full == shown or (shown.endswith("...") and full.startswith(shown[:-3]))


def check_dead_letters(capture: Capture, run: Run, shown: Shown) -> None:
    """The dead letters, each with the message it failed on."""
    guild = run.require_guild()
    letters = _dead_letters(capture, guild)
    if f"{len(letters)} dead letters" not in shown.text:
        raise FactMismatch(f"{guild} has {len(letters)} dead letters: {shown.text!r}")
    if letters:
        originals = sorted(number(r["original_id"], "id") for r in shown.table())
        expected = sorted(m["payload"]["original_message_id"] for m in letters)
        expect(f"{guild} dead-lettered message ids", originals, expected)


def _dead_letters(capture: Capture, guild: str) -> list[Message]:
    return [
        d.message
        for d in capture.deliveries_of(guild)
        if d.topic == DEAD_LETTER_TOPIC and d.message["topic_published_to"] is None
    ]


def check_reconcile(capture: Capture, run: Run, shown: Shown) -> None:
    """What the tail received is exactly what was published while it ran."""
    published = run.live_deliveries
    expected = f"stored {published}, received {published} "
    if "<Reconciliation ok" not in shown.text or expected not in shown.text:
        raise FactMismatch(
            f"{published} deliveries were published during the tail: {shown.text!r}"
        )
    if "missing 0, extra 0" not in shown.text:
        raise FactMismatch(f"the tail missed or invented messages: {shown.text!r}")


def check_offline(capture: Capture, run: Run, shown: Shown) -> None:
    """The exported selection (errors and what they answer) reads back whole."""
    guild = run.require_guild()
    if "identical ids: True" not in shown.text:
        raise FactMismatch(f"the export did not read back the same ids: {shown.text}")
    messages = capture.messages_of(guild)
    errors = {m["id"] for m in messages if m["is_error_message"]}
    answered = {m["in_response_to"] for m in messages if m["id"] in errors}
    selected = {m["id"] for m in messages if m["id"] in errors | answered}
    rows = {row["namespace"]: row for row in shown.table()}
    expect("namespaces read back", sorted(rows), [guild] if selected else [])
    if selected:
        count = number(rows[guild]["messages"], guild)
        expect(f"{guild} messages read back", count, len(selected))


CHECKS: Final[dict[str, Check]] = {
    "guilds": check_guilds,
    "summary": check_summary,
    "edges": check_edges,
    "trace": check_trace,
    "error-groups": check_error_groups,
    "dead-letters": check_dead_letters,
    "reconcile": check_reconcile,
    "offline": check_offline,
}
"""The check of each ``fact-<name>`` tag of the curated notebooks."""

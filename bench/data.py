"""Real-shaped benchmark data: one captured guild cycled to any size.

The orders guild of the RusticAI 1.4 capture is repeated cycle after cycle. Each
cycle moves every timestamp by a fixed period and every GemstoneID by the same
number of milliseconds (ids embed their time at bit 22), wherever it appears:
``id``, ``thread``, ``in_response_to`` and the ``message_history`` hops. Members
stay byte-for-byte what RusticAI wrote, apart from those numbers, so a cycled
guild has the capture's topics, sizes, routing slips and lineage.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import redis

ROOT: Final = Path(__file__).resolve().parents[1]
KEYSPACE: Final = (
    ROOT.parent / "shared" / "fixtures" / "rusticai-1.4" / "keyspace.jsonl"
)
GUILD: Final = "orders-pipeline-01"
_NUMBER: Final = re.compile(rb"\d{17,20}")
_STAMP: Final = re.compile(rb'"timestamp":(\d+)\.0\}$')
_GAP_MS: Final = 2_000


@dataclass(frozen=True, slots=True)
class Template:
    """One captured member split around the numbers a cycle moves.

    ``pieces`` are the literal bytes between the numbers; ``numbers`` the captured
    values (ids, then the final timestamp), one fewer than ``pieces``; ``is_id``
    says which numbers are ids (moved by ``delta << 22``) and which timestamps.
    """

    topic: str
    pieces: tuple[bytes, ...]
    numbers: tuple[int, ...]
    is_id: tuple[bool, ...]
    score: int

    def render(self, delta_ms: int) -> bytes:
        """The member with every id and timestamp moved by ``delta_ms``."""
        shift = delta_ms << 22
        moved = [
            str(n + (shift if is_id else delta_ms)).encode()
            for n, is_id in zip(self.numbers, self.is_id, strict=True)
        ]
        out = [self.pieces[0]]
        for value, piece in zip(moved, self.pieces[1:], strict=True):
            out += (value, piece)
        return b"".join(out)


@dataclass(frozen=True, slots=True)
class Guild:
    """The captured guild: its members as templates, in score order."""

    name: str
    templates: tuple[Template, ...]
    period_ms: int

    @property
    def topics(self) -> list[str]:
        return sorted({t.topic for t in self.templates})

    @property
    def first_ms(self) -> int:
        return self.templates[0].score

    def members(
        self, count: int, offset_ms: int = 0
    ) -> Iterator[tuple[str, bytes, int]]:
        """``count`` stored members as (topic, member, score), cycle after cycle.

        Cycle ``n`` is moved by ``offset_ms + n * period_ms``.
        """
        made = 0
        cycle = 0
        while made < count:
            delta = offset_ms + cycle * self.period_ms
            for template in self.templates[: count - made]:
                yield template.topic, template.render(delta), template.score + delta
            made += min(len(self.templates), count - made)
            cycle += 1


def read_guild(path: Path = KEYSPACE, guild: str = GUILD) -> Guild:
    """Read one guild's topic keys from a keyspace snapshot as templates."""
    rows: list[tuple[str, bytes, int]] = []
    prefix = guild + ":"
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            if record["type"] != "zset" or not record["key"].startswith(prefix):
                continue
            topic = record["key"][len(prefix) :]
            rows += [(topic, m.encode(), int(s)) for m, s in record["value"]]
    ids = {json.loads(member)["id"] for _, member, _ in rows}
    templates = tuple(_template(t, m, s, ids) for t, m, s in sorted(rows, key=_order))
    scores = [t.score for t in templates]
    return Guild(guild, templates, max(scores) - min(scores) + _GAP_MS)


def _order(row: tuple[str, bytes, int]) -> tuple[int, str]:
    return row[2], row[0]


def _template(topic: str, member: bytes, score: int, ids: set[int]) -> Template:
    spans: list[tuple[int, int, bool]] = [
        (m.start(), m.end(), True)
        for m in _NUMBER.finditer(member)
        if int(m.group()) in ids
    ]
    stamp = _STAMP.search(member)
    if stamp is None:
        raise ValueError(f"member of {topic!r} does not end with its timestamp")
    spans.append((stamp.start(1), stamp.end(1), False))
    pieces, numbers, kinds, last = [], [], [], 0
    for start, end, is_id in spans:
        pieces.append(member[last:start])
        numbers.append(int(member[start:end]))
        kinds.append(is_id)
        last = end
    pieces.append(member[last:])
    return Template(topic, tuple(pieces), tuple(numbers), tuple(kinds), score)


def fill(client: redis.Redis, guild: Guild, count: int, batch: int = 2000) -> int:
    """ZADD ``count`` cycled members into ``<guild>:<topic>`` keys; return bytes."""
    total = 0
    pipe = client.pipeline(transaction=False)
    queued = 0
    for topic, member, score in guild.members(count):
        pipe.zadd(f"{guild.name}:{topic}", {member: score})
        total += len(member)
        queued += 1
        if queued == batch:
            pipe.execute()
            queued = 0
    pipe.execute()
    return total

"""Replay: publish a selection of messages into a sandbox guild.

:func:`replay` writes messages the way RusticAI's Redis backend does, so a guild
running in the target namespace reacts to them. It is a dry run unless
``write=True``: the returned :class:`ReplayPlan` says what would be (or was)
written.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
import pandas as pd

from rdebug_nb.bus import Bus
from rdebug_nb.errors import WriteRefused
from rdebug_nb.export import to_message_dicts
from rdebug_nb.ids import decode_id, encode_id
from rdebug_nb.keys import DEAD_LETTER_TOPIC, message_key

logger = logging.getLogger(__name__)

PUBLISH_COLUMNS: Final = (
    "original_id",
    "id",
    "topic",
    "key",
    "message_key",
    "score",
    "original_score",
    "delay_s",
    "json",
)
"""Columns of :attr:`ReplayPlan.publishes`, one row per publish, in order."""

_SEQUENCE_MAX: Final = 0xFFF
_ENCODER: Final = msgspec.json.Encoder()
_SHOWN: Final = 12


@dataclass(frozen=True, eq=False)
class ReplayPlan:
    """What a replay writes (or wrote), publish by publish.

    Attributes
    ----------
    target_guild : str
        The namespace written to.
    server : str
        The server's URL, password hidden.
    source_guilds : tuple of str
        The guilds the messages came from.
    publishes : pandas.DataFrame
        One row per publish, in order (:data:`PUBLISH_COLUMNS`): the original
        and new id, the topic, the topic key and ``msg:`` key written, the
        score, the pause before it (seconds) and the JSON published.
    keep_ids, speed, ttl_s
        The options it was made with.
    refusal : str or None
        Why ``write=True`` is refused without ``force=True``; None if allowed.
    written : bool
        Whether it was written.
    """

    target_guild: str
    server: str
    source_guilds: tuple[str, ...]
    publishes: pd.DataFrame
    keep_ids: bool
    speed: float | None
    ttl_s: int
    refusal: str | None
    written: bool = False

    @property
    def messages(self) -> int:
        """Distinct messages published."""
        return int(self.publishes["id"].nunique())

    @property
    def topic_keys(self) -> pd.Series:
        """Publishes per topic key, sorted by key."""
        counts = self.publishes.groupby("key", sort=True).size()
        return counts.rename("deliveries")

    @property
    def id_map(self) -> dict[int, int]:
        """Original id to published id."""
        pairs = zip(
            self.publishes["original_id"].tolist(),
            self.publishes["id"].tolist(),
            strict=True,
        )
        return {int(old): int(new) for old, new in pairs}

    def __repr__(self) -> str:
        return "\n".join(_describe(self))


def replay(
    msgs: pd.DataFrame,
    bus: Bus,
    target_guild: str,
    *,
    write: bool = False,
    force: bool = False,
    keep_ids: bool = False,
    speed: float | None = None,
    ttl_s: int = 3600,
    now: datetime | pd.Timestamp | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ReplayPlan:
    """Publish messages into another guild, exactly as RusticAI's Redis backend.

    For each message and each of its topics, in time order:
    ``SET msg:<target>:<id> <json> EX <ttl_s>`` and
    ``ZADD <target>:<topic> <timestamp> <json>`` in one pipeline, then
    ``PUBLISH <target>:<topic> <json>``.

    Parameters
    ----------
    msgs : DataFrame
        A message frame (published to every topic in ``topics``) or a delivery
        frame (one publish per row).
    bus : Bus
        The server to write to.
    target_guild : str
        The sandbox namespace.
    write : bool, default False
        Really write. By default nothing is sent to the server.
    force : bool, default False
        Write even into the guild the messages came from, or into a server not
        marked writable.
    keep_ids : bool, default False
        Keep the original ids and timestamps. By default each message gets a
        fresh GemstoneID (current time, its own priority and machine id) and
        the references to messages of the selection are rewritten:
        ``in_response_to``, ``thread``, ``message_history`` origin and result,
        ``forward_header.origin_message_id``. References to other messages stay.
    speed : float, optional
        Keep the original spacing in time, divided by ``speed`` (2.0 is twice as
        fast). Default: as fast as possible, with fresh timestamps one
        millisecond apart so that every topic key keeps the original order.
    ttl_s : int, default 3600
        Expiry of the ``msg:`` keys (RusticAI's default).
    now : datetime, optional
        The time the fresh ids start at (default: the clock).
    sleep : callable, default time.sleep
        Called with the pause in seconds before a publish when ``speed`` is set.

    Returns
    -------
    ReplayPlan
        Its text repr lists the keys, counts and time span; ``written`` says
        whether it was written.

    Raises
    ------
    WriteRefused
        With ``write=True`` and no ``force``: when ``target_guild`` is a guild
        the messages came from, or the Bus is not marked writable
        (``bus.writable``). The message says which and how to proceed.

    Examples
    --------
    >>> from rdebug_nb.messages import empty_deliveries, to_messages
    >>> bus = Bus(None, url="redis://db:6379/0")  # a dry run sends nothing
    >>> replay(to_messages(empty_deliveries()), bus, "sandbox").messages
    0
    """
    _check_options(target_guild, speed, ttl_s)
    plan = _plan(msgs, bus, target_guild, keep_ids, speed, ttl_s, now)
    if not write:
        return plan
    if plan.refusal and not force:
        raise WriteRefused(f"replay into {target_guild!r} refused: {plan.refusal}")
    _send(bus, plan, sleep)
    return dataclasses.replace(plan, written=True)


def _plan(
    msgs: pd.DataFrame,
    bus: Bus,
    target_guild: str,
    keep_ids: bool,
    speed: float | None,
    ttl_s: int,
    now: datetime | pd.Timestamp | None,
) -> ReplayPlan:
    """Work out every publish of a replay without touching the server."""
    copies = _copies(msgs)
    start_ms = _now_ms(now)
    ids = _allocate(copies, start_ms, speed, keep_ids)
    mapping = {old: new for old, (new, _) in ids.items()}
    rows = [
        _publish_row(target_guild, topic, message, ids[message["id"]], mapping)
        for topic, message in copies
    ]
    sources = tuple(dict.fromkeys(str(g) for g in msgs["guild_id"].tolist()))
    frame = _publish_frame(rows, copies, speed)
    return ReplayPlan(
        target_guild=target_guild,
        server=bus.url,
        source_guilds=sources,
        publishes=frame,
        keep_ids=keep_ids,
        speed=speed,
        ttl_s=ttl_s,
        refusal=_refusal(bus, target_guild, sources),
    )


def _remap_ids(message: dict[str, Any], ids: dict[int, int]) -> dict[str, Any]:
    """A copy of a message dict with every id reference passed through ``ids``.

    Ids not in ``ids`` stay as they are. The input is not changed.

    Examples
    --------
    >>> message = {"id": 1, "in_response_to": 2, "thread": [2], "forward_header": None,
    ...            "message_history": [{"origin": 2, "result": 1}]}
    >>> _remap_ids(message, {1: 10, 2: 20})["message_history"]
    [{'origin': 20, 'result': 10}]
    """
    new = dict(message)
    new["id"] = ids.get(message["id"], message["id"])
    reply_to = message.get("in_response_to")
    new["in_response_to"] = None if reply_to is None else ids.get(reply_to, reply_to)
    new["thread"] = [ids.get(value, value) for value in message.get("thread") or []]
    new["message_history"] = [
        {
            **hop,
            "origin": ids.get(hop["origin"], hop["origin"]),
            "result": ids.get(hop["result"], hop["result"]),
        }
        for hop in message.get("message_history") or []
    ]
    header = message.get("forward_header")
    if header and header.get("origin_message_id") is not None:
        origin = header["origin_message_id"]
        new["forward_header"] = {**header, "origin_message_id": ids.get(origin, origin)}
    return new


def _check_options(target_guild: str, speed: float | None, ttl_s: int) -> None:
    if not target_guild:
        raise ValueError("target_guild is empty; name the sandbox guild to write to")
    if speed is not None and not speed > 0:
        raise ValueError(f"speed={speed!r}: give a factor above 0, or None")
    if ttl_s <= 0:
        raise ValueError(f"ttl_s={ttl_s!r}: the msg: keys need a positive expiry")


def _copies(msgs: pd.DataFrame) -> list[tuple[str, dict[str, Any]]]:
    """(topic, message) of every publish, in the order RusticAI would make them."""
    dicts = to_message_dicts(msgs)
    is_delivery = "topic" in msgs.columns
    topics = msgs["topic" if is_delivery else "topics"].tolist()
    copies: list[tuple[str, dict[str, Any]]] = []
    for message, stored in zip(dicts, topics, strict=True):
        for topic in [stored] if is_delivery else stored:
            copies.append((topic, message))
    return sorted(copies, key=_publish_order)


def _publish_order(copy: tuple[str, dict[str, Any]]) -> tuple[float, int, int]:
    topic, message = copy
    declared = message["topics"]
    declared = [declared] if isinstance(declared, str) else declared
    rank = declared.index(topic) if topic in declared else len(declared)
    return message["timestamp"], message["id"], rank


def _allocate(
    copies: list[tuple[str, dict[str, Any]]],
    start_ms: int,
    speed: float | None,
    keep_ids: bool,
) -> dict[int, tuple[int, int]]:
    """Original id to (new id, new timestamp ms), in publish order."""
    ids: dict[int, tuple[int, int]] = {}
    first = copies[0][1]["timestamp"] if copies else 0.0
    last = (0, -1)
    for _, message in copies:
        original = message["id"]
        if original in ids:
            continue
        if keep_ids:
            ids[original] = (original, int(message["timestamp"]))
            continue
        # Without speed, one millisecond each: equal scores would order a topic
        # key by member bytes, not by the original order.
        offset = (message["timestamp"] - first) / speed if speed else len(ids)
        last = _next_slot(last, start_ms + int(offset))
        ids[original] = (_fresh_id(message, *last), last[0])
    return ids


def _next_slot(last: tuple[int, int], planned_ms: int) -> tuple[int, int]:
    """The next free (millisecond, sequence) at or after ``planned_ms``."""
    stamp = max(planned_ms, last[0])
    sequence = last[1] + 1 if stamp == last[0] else 0
    if sequence > _SEQUENCE_MAX:
        return stamp + 1, 0
    return stamp, sequence


def _fresh_id(message: dict[str, Any], stamp: int, sequence: int) -> int:
    machine = decode_id(message["id"]).machine_id
    return int(encode_id(message["priority"], stamp, machine, sequence))


def _publish_row(
    target: str,
    topic: str,
    message: dict[str, Any],
    slot: tuple[int, int],
    mapping: dict[int, int],
) -> tuple[Any, ...]:
    new_id, stamp = slot
    body = _remap_ids(message, mapping)
    body["timestamp"] = float(stamp)
    body["topic_published_to"] = _published_to(message, topic)
    key = f"{target}:{topic}"
    member = _ENCODER.encode(body)
    return message["id"], new_id, topic, key, message_key(target, new_id), stamp, member


def _published_to(message: dict[str, Any], topic: str) -> str | None:
    """RusticAI's ``topic_published_to``; the backend's dead letters have none."""
    dead = topic == DEAD_LETTER_TOPIC and message.get("topic_published_to") is None
    return None if dead else topic


def _publish_frame(
    rows: list[tuple[Any, ...]],
    copies: list[tuple[str, dict[str, Any]]],
    speed: float | None,
) -> pd.DataFrame:
    columns = list(zip(*rows, strict=True)) if rows else [()] * 7
    stamps = [message["timestamp"] for _, message in copies]
    return pd.DataFrame(
        {
            "original_id": pd.array(list(columns[0]), dtype="UInt64"),
            "id": pd.array(list(columns[1]), dtype="UInt64"),
            "topic": list(columns[2]),
            "key": list(columns[3]),
            "message_key": list(columns[4]),
            "score": [float(stamp) for stamp in columns[5]],
            "original_score": [float(stamp) for stamp in stamps],
            "delay_s": list(_delays(stamps, speed)),
            "json": pd.Series(list(columns[6]), dtype=object),
        },
        columns=list(PUBLISH_COLUMNS),
    )


def _delays(stamps: list[float], speed: float | None) -> Iterator[float]:
    previous = stamps[0] if stamps else 0.0
    for stamp in stamps:
        yield (stamp - previous) / 1000 / speed if speed else 0.0
        previous = stamp


def _refusal(bus: Bus, target: str, sources: tuple[str, ...]) -> str | None:
    reasons = []
    if target in sources:
        reasons.append(
            f"{target!r} is the guild these messages came from, and copies would "
            "mix with its real traffic; replay into a sandbox guild id"
        )
    if not getattr(bus, "writable", False):
        reasons.append(
            f"{bus.url} is not marked writable; open it with "
            "connect(url, writable=True) if it is a sandbox server"
        )
    return "; ".join(reasons) or None


def _send(bus: Bus, plan: ReplayPlan, sleep: Callable[[float], None]) -> None:
    frame = plan.publishes
    rows = zip(
        frame["key"].tolist(),
        frame["message_key"].tolist(),
        frame["score"].tolist(),
        frame["delay_s"].tolist(),
        frame["json"].tolist(),
        strict=True,
    )
    for key, msg_key, score, delay, member in rows:
        if delay > 0:
            sleep(delay)
        _publish(bus, key, msg_key, score, member, plan.ttl_s)
    logger.info(
        "replayed %s deliveries into %r on %s", len(frame), plan.target_guild, bus.url
    )


def _publish(
    bus: Bus, key: str, msg_key: str, score: float, member: bytes, ttl_s: int
) -> None:
    with bus._guard(f"replaying into {key!r} (SET/ZADD/PUBLISH)"):
        pipe = bus.client.pipeline(transaction=False)
        pipe.set(msg_key, member, ex=ttl_s)
        pipe.zadd(key, {member: score})
        pipe.execute()
        bus.client.publish(key, member)
    logger.debug("published %s bytes to %s", len(member), key)


def _now_ms(now: datetime | pd.Timestamp | None) -> int:
    stamp = pd.Timestamp(now if now is not None else datetime.now(UTC))
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp
    return int(stamp.value // 1_000_000)


def _describe(plan: ReplayPlan) -> Iterator[str]:
    state = "written" if plan.written else "dry run: nothing written"
    yield f"ReplayPlan ({state})"
    sources = ", ".join(repr(g) for g in plan.source_guilds) or "nothing"
    yield f"  into guild {plan.target_guild!r} on {plan.server}, from {sources}"
    ids = "original ids" if plan.keep_ids else "fresh ids, references rewritten"
    yield f"  {plan.messages} messages as {len(plan.publishes)} deliveries; {ids}"
    yield from _describe_time(plan)
    keys = plan.topic_keys
    yield (
        f"  writes {plan.publishes['message_key'].nunique()} msg: keys "
        f"(EX {plan.ttl_s}), ZADD + PUBLISH on {len(keys)} topic keys:"
    )
    width = max((len(key) for key in keys.index[:_SHOWN]), default=0)
    for key, count in keys.iloc[:_SHOWN].items():
        yield f"    {key!s:<{width}}  {count}"
    if len(keys) > _SHOWN:
        yield f"    ... {len(keys) - _SHOWN} more"
    if plan.refusal and not plan.written:
        yield f"  write=True is refused without force=True: {plan.refusal}"


def _describe_time(plan: ReplayPlan) -> Iterator[str]:
    frame = plan.publishes
    if frame.empty:
        return
    yield f"  original times {_span(frame['original_score'])}"
    pace = (
        f"pauses kept, divided by {plan.speed:g} ({frame['delay_s'].sum():.3f} s)"
        if plan.speed
        else "sent as fast as possible"
    )
    yield f"  replayed times {_span(frame['score'])}; {pace}"


def _span(scores: pd.Series) -> str:
    first = pd.Timestamp(int(scores.min()), unit="ms", tz="UTC")
    last = pd.Timestamp(int(scores.max()), unit="ms", tz="UTC")
    return f"{first} .. {last}"

"""Discovery: one read-only pass over a server's keyspace.

Keys are listed with ``SCAN`` in bounded batches (never ``KEYS``), classified by
name, and sorted sets are recognised as topic keys from their first (or last)
member's ``topic_published_to``. Every command here only reads, and each one
does a bounded amount of work on the server (at most :data:`SCAN_COUNT` keys or
``_ID_PAGE`` members), so discovery never blocks a busy server for long.

Notes
-----
Memory grows with the number of topic keys and of keys that are neither
``msg:`` nor ``eo:pos:`` keys (their names are kept until their types are
known), never with the size of the values. Redis errors raised here carry a
note naming the command and keys being read (shown by the Bus).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

import msgspec
import redis

from rdebug_nb.guilds import Keyspace, Position, TopicKey
from rdebug_nb.keys import (
    MSG_PREFIX,
    POSITION_PREFIX,
    STATE_PREFIX,
    parse_position_key,
    split_topic_key,
    try_parse_message_key,
    try_state_owner,
)
from rdebug_nb.messages import Skip

logger = logging.getLogger(__name__)

SCAN_COUNT: Final = 1000
"""Keys asked for per ``SCAN`` call; bounds the work of each call on the server."""

_BATCH: Final = 500
_ID_PAGE: Final = 1000
_SHOWN_KEY: Final = 80
_UNREADABLE: Final = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)
"""What decoding a hostile member can raise (deep nesting gives RecursionError)."""
_TAIL: Final = re.compile(
    rb',"id":(\d{1,20}),"priority":\d{1,3},"timestamp":[-+.\deE]{1,40}\}\s*\Z'
)
_TAIL_BYTES: Final = 96
_U64_MAX: Final = (1 << 64) - 1


class _TopicOnly(msgspec.Struct):
    topic_published_to: str | None


class _IdOnly(msgspec.Struct):
    id: int


_TOPIC_DECODER: Final = msgspec.json.Decoder(_TopicOnly)
_ID_DECODER: Final = msgspec.json.Decoder(_IdOnly)


def scan_keyspace(
    client: redis.Redis, *, count_distinct: bool = True, match: str | None = None
) -> Keyspace:
    """Scan the whole keyspace once and classify every key.

    Parameters
    ----------
    client : redis.Redis
        A client created with ``decode_responses=False``.
    count_distinct : bool, default True
        Also read every topic key's members to count distinct message ids per
        namespace (reads all stored messages once; ids only are decoded).
    match : str, optional
        A ``SCAN MATCH`` pattern limiting the keys considered.

    Returns
    -------
    Keyspace
    """
    space = Keyspace()
    candidates: list[str] = []
    for key in scan_keys(client, match=match):
        if not key.isascii() and not _is_text(key):
            space.skips.append(Skip(shown_key(key), "the key name is not UTF-8 text"))
        elif not _classify_by_name(space, key):
            candidates.append(key)
    _classify_by_type(client, space, candidates)
    _attach_states(space)
    if count_distinct:
        space.distinct_ids.update(
            count_distinct_ids(client, list(space.topic_keys.values()))
        )
    logger.debug(
        "scan found %s topic keys, %s other keys",
        len(space.topic_keys),
        space.other_keys,
    )
    return space


def scan_keys(
    client: redis.Redis, *, match: str | None = None, type_: str | None = None
) -> Iterator[str]:
    """Yield key names with ``SCAN`` (decoded as UTF-8, invalid bytes escaped).

    Invalid bytes become lone surrogates (``surrogateescape``); send such a
    name back to Redis as :func:`key_bytes` of it.
    """
    with _reading(f"SCAN MATCH {match or '*'} COUNT {SCAN_COUNT}"):
        pattern = None if match is None else key_bytes(match)
        for raw in client.scan_iter(match=pattern, count=SCAN_COUNT, _type=type_):
            yield raw.decode("utf-8", errors="surrogateescape")


def key_bytes(key: str) -> bytes:
    r"""The bytes of a key name from :func:`scan_keys`, invalid UTF-8 included.

    >>> key_bytes("bad\udcffname")
    b'bad\xffname'
    """
    return key.encode("utf-8", errors="surrogateescape")


def shown_key(key: str) -> str:
    r"""A key name from :func:`scan_keys` as printable text (bytes not UTF-8
    shown as ``\xNN``).

    >>> shown_key("bad\udcffname")
    'bad\\xffname'
    """
    return key_bytes(key).decode("utf-8", errors="backslashreplace")


def _is_text(key: str) -> bool:
    """Whether a name from :func:`scan_keys` was valid UTF-8 in Redis."""
    return shown_key(key) == key


def resolve_topic_keys(
    client: redis.Redis, keys: list[str], known: set[str]
) -> tuple[list[TopicKey], list[str]]:
    """Recognise sorted sets as topic keys.

    Returns
    -------
    tuple of (list of TopicKey, list of str)
        The topic keys found, and the keys that are not RusticAI topic keys.
    """
    found: list[TopicKey] = []
    rejected: list[str] = []
    for start in range(0, len(keys), _BATCH):
        batch = keys[start : start + _BATCH]
        for key, answer in zip(batch, _peek(client, batch), strict=True):
            topic = _topic_key(key, answer, known)
            (found.append(topic) if topic else rejected.append(key))
    return found, rejected


def count_distinct_ids(
    client: redis.Redis, topics: Sequence[TopicKey]
) -> dict[str, int]:
    """Count distinct message ids per namespace by reading every member once.

    Pages of several topic keys share a round trip, at most ``_ID_PAGE``
    members in all, so many small topic keys cost few round trips.
    """
    ids: dict[str, set[int]] = {}
    for batch in _page_batches(topics):
        pipe = client.pipeline(transaction=False)
        for topic, start in batch:
            pipe.zrange(key_bytes(topic.key), start, start + _ID_PAGE - 1)
        with _reading(f"ZRANGE of {len(batch)} pages from {_shown(batch[0][0].key)}"):
            answers = pipe.execute()
        for (topic, _), members in zip(batch, answers, strict=True):
            seen = ids.setdefault(topic.namespace, set())
            seen.update(filter(None, map(try_member_id, members)))
    return {namespace: len(found) for namespace, found in ids.items()}


def _page_batches(topics: Sequence[TopicKey]) -> Iterator[list[tuple[TopicKey, int]]]:
    """(topic key, first index) of every page, grouped into round trips."""
    batch: list[tuple[TopicKey, int]] = []
    size = 0
    for topic in topics:
        for start in range(0, topic.entries, _ID_PAGE):
            count = min(_ID_PAGE, topic.entries - start)
            if batch and size + count > _ID_PAGE:
                yield batch
                batch, size = [], 0
            batch.append((topic, start))
            size += count
    if batch:
        yield batch


def try_member_id(member: bytes) -> int | None:
    """Return the top-level ``id`` of a stored message, or None.

    RusticAI ends every member with ``"id":...,"priority":...,"timestamp":...}``,
    so the id is read from the last bytes; anything else falls back to a full
    decode, which (like the loader) takes the last of duplicate keys. Ids that
    are not unsigned 64-bit integers give None, as the loader skips them.

    >>> try_member_id(b'{"payload":{"id":1},"id":42,"priority":4,"timestamp":1.0}')
    42
    >>> try_member_id(b'{"id":42,"priority":4,"timestamp":1.0,"x":{"id":7}}')
    42
    """
    tail = _TAIL.search(member, max(0, len(member) - _TAIL_BYTES))
    if tail:
        found: int | None = int(tail.group(1))
    else:
        try:
            found = _ID_DECODER.decode(member).id
        except _UNREADABLE:
            return None
    return found if found is not None and 0 <= found <= _U64_MAX else None


def _classify_by_name(space: Keyspace, key: str) -> bool:
    if key.startswith(MSG_PREFIX):
        parsed = try_parse_message_key(key)
        if parsed:
            space.message_keys[parsed[0]] = space.message_keys.get(parsed[0], 0) + 1
            return True
        return False
    if key.startswith(POSITION_PREFIX):
        position = parse_position_key(key)
        if position:
            space.positions.append(Position(key, position, None))
            return True
        return False
    if key.startswith(STATE_PREFIX):
        space.guild_states.add(key)
        return True
    return False


def _classify_by_type(client: redis.Redis, space: Keyspace, keys: list[str]) -> None:
    types = _types(client, keys)
    zsets = [key for key, kind in zip(keys, types, strict=True) if kind == "zset"]
    space.other_keys += len(keys) - len(zsets)
    known = set(space.message_keys) | {p.key.guild_id for p in space.positions}
    found, rejected = resolve_topic_keys(client, zsets, known)
    space.topic_keys.update((topic.key, topic) for topic in found)
    space.other_keys += len(rejected)
    _record_foreign(space, keys, types, rejected)


def _record_foreign(
    space: Keyspace, keys: list[str], types: list[str], rejected: list[str]
) -> None:
    """Skip keys that sit under a guild prefix but are not topic keys."""
    kinds = dict(zip(keys, types, strict=True))
    prefixes = tuple(namespace + ":" for namespace in space.namespaces)
    for key in keys:
        if key in space.topic_keys or not key.startswith(prefixes):
            continue
        reason = (
            "sorted set whose members are not RusticAI messages"
            if key in rejected
            else f"a {kinds[key]} key, not a topic sorted set"
        )
        space.skips.append(Skip(key, reason))


def _attach_states(space: Keyspace) -> None:
    state_keys, space.guild_states = space.guild_states, set()
    known = space.namespaces | {p.key.guild_id for p in space.positions}
    for key in state_keys:
        owner = try_state_owner(key, known)
        if owner and owner[1] is None:
            space.guild_states.add(owner[0])
        elif owner and owner[1] is not None:
            space.agent_states.setdefault(owner[0], []).append(owner[1])


def _types(client: redis.Redis, keys: list[str]) -> list[str]:
    kinds: list[str] = []
    for start in range(0, len(keys), _BATCH):
        batch = keys[start : start + _BATCH]
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.type(key_bytes(key))
        with _reading(f"TYPE of {len(batch)} keys from {_shown(batch[0])}"):
            kinds.extend(_text(kind) for kind in pipe.execute())
    return kinds


def _peek(client: redis.Redis, keys: list[str]) -> list[tuple[Any, Any, Any]]:
    if not keys:
        return []
    pipe = client.pipeline(transaction=False)
    for key in keys:
        name = key_bytes(key)
        pipe.zcard(name)
        pipe.zrange(name, 0, 0, withscores=True)
        pipe.zrange(name, -1, -1, withscores=True)
    with _reading(f"ZCARD and ZRANGE of {len(keys)} keys from {_shown(keys[0])}"):
        answers = pipe.execute()
    return [
        (answers[i], answers[i + 1], answers[i + 2]) for i in range(0, len(answers), 3)
    ]


def _topic_key(
    key: str, answer: tuple[Any, Any, Any], known: set[str]
) -> TopicKey | None:
    entries, first, last = answer
    split = _split_from_members(key, [first, last]) or _split_from_known(key, known)
    if split is None:
        return None
    first_score = first[0][1] if first else None
    last_score = last[0][1] if last else None
    return TopicKey(key, split[0], split[1], int(entries), first_score, last_score)


def _split_from_members(
    key: str, pairs: list[list[tuple[bytes, float]]]
) -> tuple[str, str] | None:
    for pair in pairs:
        if not pair:
            continue
        try:
            topic = _TOPIC_DECODER.decode(pair[0][0]).topic_published_to
        except _UNREADABLE:
            continue
        split = split_topic_key(key, topic)
        if split:
            return split
    return None


def _split_from_known(key: str, known: set[str]) -> tuple[str, str] | None:
    for namespace in sorted(known, key=len, reverse=True):
        if key.startswith(namespace + ":") and len(key) > len(namespace) + 1:
            return namespace, key[len(namespace) + 1 :]
    return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _shown(key: str) -> str:
    """A key for a message: quoted, cut to a readable length."""
    text = repr(key)
    return text if len(text) <= _SHOWN_KEY else text[: _SHOWN_KEY - 3] + "..."


@contextmanager
def _reading(what: str) -> Iterator[None]:
    """Note on any Redis error raised inside what was being read."""
    try:
        yield
    except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException) as err:
        err.add_note(what)
        raise


def position_values(client: redis.Redis, space: Keyspace) -> None:
    """Fill in the message id each position key holds (one pipelined round trip)."""
    pipe = client.pipeline(transaction=False)
    for position in space.positions:
        pipe.get(key_bytes(position.name))
    values = pipe.execute() if space.positions else []
    space.positions = [
        Position(p.name, p.key, int(v) if v and v.isdigit() else None)
        for p, v in zip(space.positions, values, strict=True)
    ]

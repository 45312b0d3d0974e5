"""The two loads ``bus.messages()`` is measured against.

*floor*
    the least work that still gives a frame: one pipeline with one ``ZRANGE``
    per topic key, a typed msgspec decoder for the envelope with every nested
    field (payload, routing slip, history, forward header, session state, origin
    guild stack) kept as raw JSON bytes, and one column per envelope field, built
    without pandas type inference and with the garbage collector paused. No sort,
    no de-duplication, no derived columns.
*naive*
    what a notebook would do first: the same fetch, ``json.loads`` of every
    member, then ``pandas.json_normalize``.
"""

from __future__ import annotations

import gc
import json
from operator import attrgetter
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import redis


class _Tag(msgspec.Struct, gc=False):
    id: str | None
    name: str | None


class FloorEnvelope(msgspec.Struct, gc=False):
    """The envelope fields; nested values stay raw JSON."""

    sender: _Tag
    topics: str | list[str]
    recipient_list: list[_Tag]
    payload: msgspec.Raw
    format: str
    in_response_to: int | None
    thread: list[int]
    conversation_id: int | None
    forward_header: msgspec.Raw
    routing_slip: msgspec.Raw
    message_history: msgspec.Raw
    ttl: int | None
    is_error_message: bool
    traceparent: str | None
    session_state: msgspec.Raw
    topic_published_to: str | None
    enrich_with_history: int
    process_status: str | None
    origin_guild_stack: msgspec.Raw
    id: int
    priority: int
    timestamp: float


_DECODE = msgspec.json.Decoder(FloorEnvelope).decode
_NUMBERS = {"id": np.uint64, "timestamp": np.float64, "priority": np.uint8}
_OBJECTS = tuple(
    name for name in FloorEnvelope.__struct_fields__ if name not in _NUMBERS
)


def fetch_all(client: redis.Redis, keys: list[str]) -> list[list[bytes]]:
    """Every member of every key: one pipeline, one ``ZRANGE 0 -1`` per key."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.zrange(key, 0, -1)
    replies: list[list[bytes]] = pipe.execute()
    return replies


def floor_load(client: redis.Redis, keys: list[str]) -> pd.DataFrame:
    """The floor: fetch, typed envelope decode, one column per field."""
    replies = fetch_all(client, keys)
    gc.disable()
    try:
        envelopes = [_DECODE(member) for members in replies for member in members]
        return _frame(envelopes)
    finally:
        gc.enable()


def _frame(envelopes: list[FloorEnvelope]) -> pd.DataFrame:
    count = len(envelopes)
    columns: dict[str, Any] = {
        name: np.fromiter(map(attrgetter(name), envelopes), kind, count)
        for name, kind in _NUMBERS.items()
    }
    for name in _OBJECTS:
        values = np.fromiter(map(attrgetter(name), envelopes), object, count)
        columns[name] = pd.Series(values, dtype=object, copy=False)
    return pd.DataFrame(columns, copy=False)


def naive_load(client: redis.Redis, keys: list[str]) -> pd.DataFrame:
    """The naive way: ``json.loads`` of every member, then ``json_normalize``."""
    replies = fetch_all(client, keys)
    records = [json.loads(member) for members in replies for member in members]
    return pd.json_normalize(records)

"""Failures: error messages, error statuses and dead letters, and where they start.

RusticAI leaves three kinds of failure in a guild's topics:

``error_message``
    ``is_error_message: true``: an unhandled exception in a processor
    (``ErrorMessage`` on ``error_topic``) or ``send_error`` from agent code (one
    copy per matching route, each with its own id).
``error_status``
    ``process_status == "error"`` set by a route on a message that is not an
    error message (RusticAI allows it; the capture has none).
``dead_letter``
    a message the Redis backend stored in ``dead_letter_queue`` after an exception
    escaped an agent's handler; its payload embeds the failed message.

:func:`errors` lists every error delivery, groups them by agent, topic and format
and unpacks the dead letters (:func:`dead_letters`). For a dead letter the
responsible agent is the client that failed (``payload.client_id``), not the
``messaging_backend`` sender.

Examples
--------
>>> from rdebug_nb.messages import empty_deliveries, to_messages
>>> errors(to_messages(empty_deliveries()))
<ErrorReport 0 error deliveries in 0 groups, 0 dead letters>
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import pandas as pd

from rdebug_nb.keys import split_topic_key
from rdebug_nb.messages import require_messages

ERROR_COLUMNS: Final = (
    "id",
    "guild_id",
    "topic",
    "timestamp",
    "kind",
    "agent_id",
    "sender_id",
    "format",
    "is_error",
    "process_status",
    "origin_topic",
    "in_response_to",
    "error_type",
    "error_message",
)
"""Columns of :attr:`ErrorReport.deliveries`, in order."""

GROUP_COLUMNS: Final = (
    "guild_id",
    "agent_id",
    "topic",
    "format",
    "kinds",
    "deliveries",
    "messages",
    "first_time",
    "last_time",
    "origin_topic",
    "example_id",
    "example_error",
)
"""Columns of :attr:`ErrorReport.groups`, in order."""

DEAD_LETTER_COLUMNS: Final = (
    "id",
    "guild_id",
    "timestamp",
    "client_id",
    "agent_guild",
    "agent_id",
    "original_id",
    "original_key",
    "original_namespace",
    "original_topic",
    "original_sender",
    "original_format",
    "original_timestamp",
    "error_type",
    "error_message",
    "delivery_backend",
    "original_message",
)
"""Columns of :func:`dead_letters`, in order."""

DEAD_LETTER_INPUT: Final = ("id", "guild_id", "timestamp", "is_dead_letter", "payload")
"""Message-frame columns :func:`dead_letters` reads."""

ERROR_INPUT: Final = (
    "id",
    "guild_id",
    "topics",
    "timestamp",
    "sender_id",
    "format",
    "in_response_to",
    "is_error",
    "is_dead_letter",
    "process_status",
    "payload",
    "message_history",
)
"""Message-frame columns :func:`errors` reads."""

_ERROR_TEXTS: Final = (
    "guild_id",
    "topic",
    "kind",
    "agent_id",
    "sender_id",
    "format",
    "process_status",
    "origin_topic",
    "error_type",
    "error_message",
)
_DEAD_LETTER_TEXTS: Final = (
    "guild_id",
    "client_id",
    "agent_guild",
    "agent_id",
    "original_key",
    "original_namespace",
    "original_topic",
    "original_sender",
    "original_format",
    "error_type",
    "error_message",
    "delivery_backend",
)

_GROUP_KEYS: Final = ["guild_id", "agent_id", "topic", "format"]
_TEXT: Final = pd.StringDtype(na_value=pd.NA)


@dataclass(frozen=True, slots=True)
class ErrorReport:
    """What went wrong in a message frame.

    Attributes
    ----------
    deliveries : pandas.DataFrame
        One row per stored copy of a failure (columns :data:`ERROR_COLUMNS`),
        sorted by time.
    groups : pandas.DataFrame
        One row per (guild_id, agent_id, topic, format) with counts, first and
        last time and an example id (columns :data:`GROUP_COLUMNS`), largest first.
    dead_letters : pandas.DataFrame
        :func:`dead_letters` of the frame.
    """

    deliveries: pd.DataFrame
    groups: pd.DataFrame
    dead_letters: pd.DataFrame

    def __repr__(self) -> str:
        return (
            f"<ErrorReport {len(self.deliveries)} error deliveries in "
            f"{len(self.groups)} groups, {len(self.dead_letters)} dead letters>"
        )


def errors(msgs: pd.DataFrame) -> ErrorReport:
    """Find every failure in a message frame and group it by where it started.

    Parameters
    ----------
    msgs : pandas.DataFrame
        A message frame (:data:`rdebug_nb.messages.MESSAGE_COLUMNS`), possibly
        concatenated from several guilds.

    Returns
    -------
    ErrorReport
        ``deliveries``, ``groups`` and ``dead_letters``.

    Raises
    ------
    InvalidQuery
        If ``msgs`` is not a message frame (a delivery frame is collapsed to
        one row per message first); the message names the missing columns.

    Notes
    -----
    ``agent_id`` is the agent that failed: the sender of an error message, the
    client named in a dead letter. ``origin_topic`` is the topic that agent was
    processing: the last hop's ``from_topic`` of an error message, the
    ``original_topic`` of a dead letter. Text columns have pandas' ``string``
    dtype, so every missing value in the three tables shows as ``<NA>``, like a
    missing id.

    Examples
    --------
    >>> from rdebug_nb.latency import _example_messages
    >>> report = errors(_example_messages())
    >>> report.deliveries.empty, report.dead_letters.empty
    (True, True)
    """
    msgs = require_messages(msgs, ERROR_INPUT, "errors").reset_index(drop=True)
    rows = _failure_rows(msgs)
    deliveries = _deliveries(rows)
    return ErrorReport(deliveries, _groups(deliveries), dead_letters(msgs))


def dead_letters(msgs: pd.DataFrame) -> pd.DataFrame:
    """Unpack the dead letters of a message frame.

    Returns
    -------
    pandas.DataFrame
        One row per dead letter (columns :data:`DEAD_LETTER_COLUMNS`): the
        client that failed (``client_id`` = ``<guild>$<agent>``, split into
        ``agent_guild`` and ``agent_id``), the failed message's id, topic key
        (split into namespace and topic), sender, format and time, the error
        type and text, and the embedded failed message as a dict.

    Raises
    ------
    InvalidQuery
        If ``msgs`` is not a message frame (a delivery frame is collapsed to
        one row per message first); the message names the missing columns.

    Examples
    --------
    >>> from rdebug_nb.messages import empty_deliveries, to_messages
    >>> dead_letters(to_messages(empty_deliveries())).empty
    True
    """
    msgs = require_messages(msgs, DEAD_LETTER_INPUT, "dead_letters")
    letters = msgs.loc[msgs["is_dead_letter"].astype(bool)]
    records = [
        _dead_letter_record(mid, guild, stamp, payload)
        for mid, guild, stamp, payload in zip(
            letters["id"].tolist(),
            letters["guild_id"].tolist(),
            letters["timestamp"].tolist(),
            letters["payload"].tolist(),
            strict=True,
        )
    ]
    frame = pd.DataFrame(records, columns=list(DEAD_LETTER_COLUMNS))
    for column in ("id", "original_id"):
        frame[column] = pd.array(frame[column].tolist(), dtype="UInt64")
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame["original_timestamp"] = pd.to_datetime(
        frame["original_timestamp"], unit="ms", utc=True
    )
    frame = _as_text(frame, _DEAD_LETTER_TEXTS)
    return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)


def _dead_letter_record(
    mid: int, guild: str, stamp: Any, payload: Any
) -> tuple[Any, ...]:
    body = payload if isinstance(payload, dict) else {}
    original = body.get("original_message")
    original = original if isinstance(original, dict) else {}
    client = str(body.get("client_id") or "")
    agent_guild, _, agent_id = client.partition("$")
    key = body.get("original_topic")
    split = _split_original(key, original.get("topic_published_to"))
    sender = original.get("sender")
    original_id = body.get("original_message_id", original.get("id"))
    stamp_ms = original.get("timestamp")
    return (
        mid,
        guild,
        stamp,
        client,
        agent_guild,
        agent_id,
        original_id if _is_id(original_id) else None,
        key,
        split[0],
        split[1],
        sender.get("id") if isinstance(sender, dict) else None,
        original.get("format"),
        int(stamp_ms) if isinstance(stamp_ms, int | float) else None,
        body.get("error_type"),
        body.get("error_message"),
        body.get("delivery_backend"),
        original or None,
    )


def _split_original(key: Any, topic: Any) -> tuple[str | None, str | None]:
    if not isinstance(key, str):
        return None, None
    split = split_topic_key(key, topic) if isinstance(topic, str) else None
    return split if split else (None, key)


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64


def _failure_rows(msgs: pd.DataFrame) -> pd.DataFrame:
    status = msgs["process_status"].astype("object")
    failed = msgs["is_error"].astype(bool) | msgs["is_dead_letter"].astype(bool)
    failed |= status.eq("error").fillna(False).astype(bool)
    return msgs.loc[failed]


def _deliveries(rows: pd.DataFrame) -> pd.DataFrame:
    facts = [
        _facts(*values)
        for values in zip(
            rows["is_dead_letter"].tolist(),
            rows["is_error"].tolist(),
            rows["sender_id"].tolist(),
            rows["payload"].tolist(),
            rows["message_history"].tolist(),
            strict=True,
        )
    ]
    columns = ["kind", "agent_id", "origin_topic", "error_type", "error_message"]
    extra = pd.DataFrame(facts, columns=columns, index=rows.index)
    frame = pd.concat([rows, extra], axis=1).explode("topics")
    frame = frame.rename(columns={"topics": "topic"})
    frame = _as_text(frame.loc[:, list(ERROR_COLUMNS)], _ERROR_TEXTS)
    frame = frame.sort_values(["timestamp", "id"], kind="stable")
    return frame.reset_index(drop=True)


def _facts(
    dead: bool, error: bool, sender: Any, payload: Any, history: Any
) -> tuple[Any, ...]:
    body = payload if isinstance(payload, dict) else {}
    last = history[-1] if isinstance(history, list) and history else {}
    last = last if isinstance(last, dict) else {}
    if dead:
        client = str(body.get("client_id") or "")
        key = body.get("original_topic")
        return (
            "dead_letter",
            client.partition("$")[2] or sender,
            _topic_of_key(key, body.get("original_message")),
            body.get("error_type"),
            body.get("error_message"),
        )
    kind = "error_message" if error else "error_status"
    return kind, sender, last.get("from_topic"), *_error_text(body, last)


def _topic_of_key(key: Any, original: Any) -> Any:
    topic = original.get("topic_published_to") if isinstance(original, dict) else None
    return _split_original(key, topic)[1]


def _error_text(body: dict[str, Any], last: dict[str, Any]) -> tuple[Any, Any]:
    error_type = body.get("error_type")
    message = body.get("error_message")
    if not isinstance(message, str):
        message = body.get("reason") if isinstance(body.get("reason"), str) else None
    if message is None and last.get("reason"):
        reason = last["reason"]
        message = "; ".join(map(str, reason)) if isinstance(reason, list) else reason
    return error_type, message


def _groups(deliveries: pd.DataFrame) -> pd.DataFrame:
    if deliveries.empty:
        return pd.DataFrame(columns=list(GROUP_COLUMNS))
    grouped = deliveries.groupby(_GROUP_KEYS, dropna=False, sort=True)
    frame = grouped.agg(
        deliveries=("id", "size"),
        messages=("id", "nunique"),
        first_time=("timestamp", "min"),
        last_time=("timestamp", "max"),
        example_id=("id", "first"),
    )
    frame["kinds"] = grouped["kind"].agg(lambda kinds: ", ".join(sorted(set(kinds))))
    frame["origin_topic"] = grouped["origin_topic"].agg(_most_common)
    frame["example_error"] = grouped["error_message"].agg(_first_text)
    frame = frame.reset_index().sort_values(
        ["deliveries", "first_time"], ascending=[False, True], kind="stable"
    )
    frame["example_id"] = pd.array(frame["example_id"].tolist(), dtype="UInt64")
    frame = _as_text(frame, ("origin_topic", "example_error"))
    return frame.loc[:, list(GROUP_COLUMNS)].reset_index(drop=True)


def _as_text(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """Text columns with one missing marker (``<NA>``, like the id columns)."""
    return frame.astype(dict.fromkeys(columns, _TEXT))


def _most_common(values: pd.Series) -> Any:
    counts = values.dropna().value_counts()
    return counts.index[0] if len(counts) else None


def _first_text(values: pd.Series) -> Any:
    found = values.dropna()
    return found.iloc[0] if len(found) else None

"""Hops and latency: where the time of a guild goes.

A hop is one ``message_history`` entry: an agent turned an *origin* message into a
*result* message. Every message repeats the hops of its whole chain, so the same
hop is recorded many times; :func:`hop_table` keeps each one once. A hop's
latency is the result's time minus the origin's time: the time the origin waited
in its topic plus the time the agent took (RusticAI records no pick-up time, so
the two cannot be told apart).

Times come from the stored ``timestamp`` of each message; a message outside the
frame (another time window, an expired guild) is timed by the timestamp packed in
its GemstoneID, which RusticAI sets to the same millisecond.

The *home guild* of a message is the guild it was published in. A message that
crossed guilds is stored under the same id in the organisation namespace
(``<org>:guild_inbox:<guild>``); :func:`home_guilds` maps such copies back to the
guild copy when the frame holds one.

Examples
--------
>>> msgs = _example_messages()  # a probe's message and the echo agent's answer
>>> hops = hop_table(msgs)
>>> print(hops[["agent_id", "processor", "from_topic", "latency_ms"]].to_string())
  agent_id     processor from_topic  latency_ms
0     echo  echo_message          t          21
>>> print(latency(msgs).by_agent[["agent_id", "hops", "p50_ms"]].to_string())
  agent_id  hops  p50_ms
0     echo     1    21.0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import numpy as np
import pandas as pd

from rdebug_nb.ids import RUSTICAI_EPOCH_MS, to_uint64
from rdebug_nb.keys import ORG_INBOX_PREFIX
from rdebug_nb.messages import JsonArray, require_messages

HOP_COLUMNS: Final = (
    "guild_id",
    "agent_id",
    "agent_name",
    "processor",
    "origin",
    "result",
    "from_namespace",
    "from_topic",
    "to_topics",
    "result_topics",
    "reason",
    "origin_time",
    "result_time",
    "latency_ms",
    "is_error",
    "origin_stored",
    "result_stored",
)
"""Columns of :func:`hop_table`, in order."""

PERCENTILES: Final = (50, 90, 95, 99)
"""Percentiles reported by every latency summary (columns ``p50_ms`` ...)."""

SUMMARY_COLUMNS: Final = (
    "hops",
    "errors",
    "mean_ms",
    *(f"p{p}_ms" for p in PERCENTILES),
    "max_ms",
)
"""Columns a latency summary adds after its grouping columns."""

HOP_INPUT: Final = (
    "id",
    "guild_id",
    "topics",
    "timestamp_ms",
    "is_error",
    "message_history",
)
"""Message-frame columns :func:`hop_table` and :func:`latency` read."""

_EXAMPLE_MEMBERS: Final = [
    b'{"sender":{"id":"probe","name":"Probe"},"topics":"t","recipient_list":[],'
    b'"payload":{},"format":"generic_json","in_response_to":null,'
    b'"thread":[7436657122856673280],"conversation_id":null,"forward_header":null,'
    b'"routing_slip":null,"message_history":[],"ttl":null,'
    b'"is_error_message":false,"traceparent":null,"session_state":null,'
    b'"topic_published_to":"t","enrich_with_history":0,"process_status":null,'
    b'"origin_guild_stack":[],"id":7436657122856673280,"priority":3,'
    b'"timestamp":1796300982833.0}',
    b'{"sender":{"id":"echo","name":"Echo"},"topics":"t","recipient_list":[],'
    b'"payload":{},"format":"generic_json","in_response_to":7436657122856673280,'
    b'"thread":[7436657122856673280],"conversation_id":null,"forward_header":null,'
    b'"routing_slip":null,"message_history":[{"agent":{"id":"echo","name":"Echo"},'
    b'"origin":7436657122856673280,"result":7436657122944753664,'
    b'"processor":"echo_message","from_topic":"t","to_topics":["t"],"reason":null}],'
    b'"ttl":null,"is_error_message":false,"traceparent":null,"session_state":{},'
    b'"topic_published_to":"t","enrich_with_history":0,"process_status":null,'
    b'"origin_guild_stack":[],"id":7436657122944753664,"priority":3,'
    b'"timestamp":1796300982854.0}',
]


def _example_messages() -> pd.DataFrame:
    """The message frame the Examples of the analysis modules use."""
    from rdebug_nb.messages import decode_deliveries, to_messages

    return to_messages(decode_deliveries("g", [("g:t", "t", _EXAMPLE_MEMBERS)]))


_ENTRY_COLUMNS: Final = [
    "agent_id",
    "agent_name",
    "processor",
    "origin",
    "result",
    "from_topic",
    "to_topics",
    "reason",
    "container",
]
_TS_MASK: Final = np.uint64((1 << 39) - 1)


@dataclass(frozen=True, slots=True)
class Latency:
    """Hop latencies of a message frame, raw and summarised.

    Attributes
    ----------
    hops : pandas.DataFrame
        :func:`hop_table` plus ``edge``, a readable route label
        ``"<from topic> → <agent> → <result topics>"``.
    by_agent : pandas.DataFrame
        One row per (guild_id, agent_id), columns :data:`SUMMARY_COLUMNS`.
    by_edge : pandas.DataFrame
        One row per (guild_id, agent_id, from_topic, edge).
    """

    hops: pd.DataFrame
    by_agent: pd.DataFrame
    by_edge: pd.DataFrame

    def __repr__(self) -> str:
        return (
            f"<Latency {len(self.hops)} hops, {len(self.by_agent)} agents, "
            f"{len(self.by_edge)} edges>"
        )


def latency(msgs: pd.DataFrame) -> Latency:
    """Measure every hop of a message frame and summarise per agent and per edge.

    Parameters
    ----------
    msgs : pandas.DataFrame
        A message frame (:data:`rdebug_nb.messages.MESSAGE_COLUMNS`), possibly
        concatenated from several guilds.

    Returns
    -------
    Latency
        ``hops`` (one row per hop), ``by_agent`` and ``by_edge`` with hop counts,
        error counts, mean, p50, p90, p95, p99 and max in milliseconds.

    Raises
    ------
    InvalidQuery
        If ``msgs`` is not a message frame (a delivery frame is collapsed to
        one row per message first); the message names the missing columns.

    Examples
    --------
    >>> from rdebug_nb.messages import empty_deliveries, to_messages
    >>> latency(to_messages(empty_deliveries()))
    <Latency 0 hops, 0 agents, 0 edges>
    """
    hops = hop_table(require_messages(msgs, HOP_INPUT, "latency"))
    hops["edge"] = pd.Series(_edge_labels(hops), dtype=object)
    by_agent = latency_summary(hops, ["guild_id", "agent_id"])
    by_edge = latency_summary(hops, ["guild_id", "agent_id", "from_topic", "edge"])
    return Latency(hops, by_agent, by_edge)


def latency_summary(hops: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Summarise hop latencies per group.

    Parameters
    ----------
    hops : pandas.DataFrame
        Rows with ``latency_ms`` and ``is_error`` (e.g. :func:`hop_table`).
    by : sequence of str
        Grouping columns; missing values form their own group.

    Returns
    -------
    pandas.DataFrame
        The grouping columns then :data:`SUMMARY_COLUMNS`, sorted by ``hops``
        descending.

    Examples
    --------
    >>> frame = pd.DataFrame({"agent_id": ["a"] * 4, "latency_ms": [1, 2, 3, 10],
    ...                       "is_error": [False, False, True, False]})
    >>> print(latency_summary(frame, ["agent_id"]).round(2).to_string())
      agent_id  hops  errors  mean_ms  p50_ms  p90_ms  p95_ms  p99_ms  max_ms
    0        a     4       1      4.0     2.5     7.9    8.95    9.79    10.0
    """
    keys = list(by)
    if hops.empty:
        return pd.DataFrame(columns=[*keys, *SUMMARY_COLUMNS])
    grouped = hops.groupby(keys, dropna=False, sort=True)
    values = grouped["latency_ms"]
    frame = pd.DataFrame(
        {
            "hops": grouped.size(),
            "errors": grouped["is_error"].sum().astype("int64"),
            "mean_ms": values.mean().astype("float64"),
        }
    )
    for p in PERCENTILES:
        frame[f"p{p}_ms"] = values.quantile(p / 100).astype("float64")
    frame["max_ms"] = values.max().astype("float64")
    frame = frame.reset_index().sort_values("hops", ascending=False, kind="stable")
    return frame.reset_index(drop=True)


def hop_table(msgs: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct hop recorded in the frame's message histories.

    Parameters
    ----------
    msgs : pandas.DataFrame
        A message frame, possibly concatenated from several guilds.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`HOP_COLUMNS`: the agent's home guild, ``agent_id`` /
        ``agent_name``, ``processor``, ``origin`` and ``result`` ids (``UInt64``),
        ``from_topic`` as recorded (None for hops RusticAI records without one,
        e.g. state updates) and the namespace it lives in, ``to_topics`` as
        recorded, ``result_topics`` (where the result is stored in its home guild,
        else ``to_topics``), ``reason``, both times (UTC), ``latency_ms``
        (``Int64``, result minus origin), ``is_error`` (the result is an error
        message) and whether origin and result are in the frame. Sorted by result
        time.

    Notes
    -----
    A hop is kept once per result id (RusticAI makes each result in exactly one
    hop), whatever number of histories repeat it. Entries without integer
    ``origin`` and ``result`` are ignored.
    RusticAI records origin 0 for an agent's own start-up (processors named
    ``<AgentClass>:self``): such hops have no origin time and no latency.

    Examples
    --------
    >>> hops = hop_table(_example_messages())
    >>> hops[["agent_id", "result_topics", "is_error"]].to_dict("records")
    [{'agent_id': 'echo', 'result_topics': ['t'], 'is_error': False}]
    """
    msgs = require_messages(msgs, HOP_INPUT, "hop_table").reset_index(drop=True)
    org = _org_mask(msgs)
    entries = _history_entries(msgs, _homes(msgs, org))
    if entries.empty:
        return _empty_hops()
    entries["guild_id"] = _hop_guilds(entries, _home_index(msgs, org))
    hops = entries.drop(columns="container")
    hops["from_namespace"] = _from_namespaces(hops, msgs)
    _add_times(hops, msgs)
    _add_result_facts(hops, msgs, org)
    hops = hops.sort_values(["result_time", "result"], kind="stable")
    return hops.loc[:, list(HOP_COLUMNS)].reset_index(drop=True)


def home_guilds(msgs: pd.DataFrame) -> pd.Series:
    """The guild each row's message was published in (aligned with ``msgs``).

    A row stored only in ``guild_inbox:*`` topics is an organisation-namespace
    copy; its home is the namespace of a guild copy with the same id, when the
    frame has one, else its own namespace.

    Examples
    --------
    >>> frame = pd.DataFrame({
    ...     "id": pd.array([7, 7, 8], dtype="UInt64"),
    ...     "guild_id": ["src", "org", "org"],
    ...     "topics": [["outbound"], ["guild_inbox:dst"], ["guild_inbox:src"]],
    ... })
    >>> home_guilds(frame).tolist()
    ['src', 'src', 'org']
    """
    homes = _homes(msgs, _org_mask(msgs))
    return pd.Series(homes, index=msgs.index, name="home_guild", dtype=object)


def is_org_copy(msgs: pd.DataFrame) -> pd.Series:
    """Whether each row is stored only in organisation inbox topics.

    Examples
    --------
    >>> topics = [["guild_inbox:g"], ["a", "guild_inbox:g"], []]
    >>> frame = pd.DataFrame({"topics": topics})
    >>> is_org_copy(frame).tolist()
    [True, False, False]
    """
    return pd.Series(_org_mask(msgs), index=msgs.index, name="is_org_copy")


def timestamps_ms(ids: Any, msgs: pd.DataFrame) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Millisecond time of each id: its stored timestamp, else its GemstoneID's.

    Examples
    --------
    >>> frame = pd.DataFrame({"id": pd.array([1], dtype="UInt64"), "timestamp_ms": [5]})
    >>> timestamps_ms([1, 7436657122856673280], frame).tolist()
    [5, 1796300982833]
    """
    values = to_uint64(list(ids) if not isinstance(ids, np.ndarray) else ids)
    stored = _stored_times(msgs)
    known = stored.reindex(values).to_numpy(dtype="float64", na_value=np.nan)
    packed = ((values >> np.uint64(22)) & _TS_MASK).astype(np.int64)
    decoded = packed + RUSTICAI_EPOCH_MS
    return np.where(np.isnan(known), decoded, known).astype(np.int64)


class _Hop(msgspec.Struct, gc=False):
    """The fields of a history entry that hops use; any JSON value is accepted."""

    agent: Any = None
    origin: Any = None
    result: Any = None
    processor: Any = None
    from_topic: Any = None
    to_topics: Any = None
    reason: Any = None


_HOP_DECODER: Final = msgspec.json.Decoder(_Hop)


def _history_entries(msgs: pd.DataFrame, homes: np.ndarray[Any, Any]) -> pd.DataFrame:
    """Every distinct hop of the histories, newest copy first, with its home.

    Each later message repeats the hops before it, so most entries are seen
    many times: undecoded entries are read with a small typed decoder, and the
    history column is left undecoded.
    """
    seen: set[int] = set()
    found = []
    for history, home in zip(_histories(msgs["message_history"]), homes, strict=True):
        for entry in reversed(history) if isinstance(history, list | tuple) else ():
            hop = _read_hop(entry)
            if hop is None or type(hop.result) is not int or hop.result in seen:
                continue
            fields = _hop_fields(hop)
            if fields is not None:
                seen.add(hop.result)
                found.append((*fields, home))
    frame = pd.DataFrame(found, columns=_ENTRY_COLUMNS)
    for column in ("origin", "result"):
        frame[column] = pd.array(frame[column].tolist(), dtype="UInt64")
    return frame


def _histories(column: pd.Series) -> list[Any]:
    array = column.array
    return array.items() if isinstance(array, JsonArray) else column.tolist()


def _read_hop(entry: Any) -> _Hop | None:
    """A history entry as a :class:`_Hop`: from its JSON text, or from a dict."""
    if isinstance(entry, dict):
        names = _Hop.__struct_fields__
        return _Hop(**{name: entry[name] for name in names if name in entry})
    if isinstance(entry, msgspec.Raw | bytes):
        try:
            return _HOP_DECODER.decode(entry)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            return None
    return None


def _hop_fields(hop: _Hop) -> tuple[Any, ...] | None:
    if not _is_id(hop.origin) or not _is_id(hop.result):
        return None
    agent: dict[str, Any] = hop.agent if isinstance(hop.agent, dict) else {}
    to_topics = hop.to_topics
    return (
        str(agent.get("id")),
        agent.get("name"),
        hop.processor,
        hop.origin,
        hop.result,
        hop.from_topic,
        list(to_topics) if isinstance(to_topics, list) else [],
        hop.reason,
    )


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64


def _org_mask(msgs: pd.DataFrame) -> np.ndarray[Any, np.dtype[np.bool_]]:
    topics = msgs["topics"].tolist()
    return np.fromiter(map(_all_inbox, topics), dtype=bool, count=len(topics))


def _all_inbox(topics: Any) -> bool:
    return isinstance(topics, list) and bool(topics) and all(map(_is_inbox, topics))


def _homes(msgs: pd.DataFrame, org: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    own = msgs["guild_id"].to_numpy(dtype=object)
    if not org.any():
        return own
    mapped = _home_index(msgs, org).reindex(_id_array(msgs["id"])).to_numpy()
    return np.where(org & pd.notna(mapped), mapped, own)


def _home_index(msgs: pd.DataFrame, org: np.ndarray[Any, Any]) -> pd.Series:
    """Home guild per id: the first namespace holding a non-organisation copy."""
    guild_rows = msgs.loc[~org, ["id", "guild_id"]]
    guild_rows = guild_rows.drop_duplicates("id", keep="first")
    index = pd.Index(_id_array(guild_rows["id"]), dtype="uint64")
    return pd.Series(guild_rows["guild_id"].to_numpy(dtype=object), index=index)


def _hop_guilds(entries: pd.DataFrame, homes: pd.Series) -> np.ndarray[Any, Any]:
    by_result = homes.reindex(_id_array(entries["result"])).to_numpy()
    container = entries["container"].to_numpy(dtype=object)
    return np.where(pd.isna(by_result), container, by_result)


def _from_namespaces(hops: pd.DataFrame, msgs: pd.DataFrame) -> pd.Series:
    stored = _delivery_keys(msgs).drop_duplicates(["id", "topic"])
    found = (
        hops[["origin", "from_topic"]]
        .merge(
            stored.rename(columns={"id": "origin", "topic": "from_topic"}),
            on=["origin", "from_topic"],
            how="left",
        )["namespace"]
        .astype(object)
    )
    by_topic = hops["from_topic"].map(_inbox_namespaces(msgs)).astype(object)
    namespace = found.fillna(by_topic).fillna(hops["guild_id"].astype(object))
    return namespace.where(hops["from_topic"].notna(), None)


def _delivery_keys(msgs: pd.DataFrame) -> pd.DataFrame:
    frame = (
        msgs[["id", "guild_id", "topics"]].explode("topics").dropna(subset=["topics"])
    )
    return frame.rename(columns={"guild_id": "namespace", "topics": "topic"})


def _inbox_namespaces(msgs: pd.DataFrame) -> dict[str, str]:
    """Namespace storing each ``guild_inbox:*`` topic of the frame."""
    keys = _delivery_keys(msgs)
    inbox = keys.loc[[_is_inbox(topic) for topic in keys["topic"].tolist()]]
    first = inbox.drop_duplicates("topic")
    return dict(zip(first["topic"].tolist(), first["namespace"].tolist(), strict=True))


def _is_inbox(topic: Any) -> bool:
    return isinstance(topic, str) and topic.startswith(ORG_INBOX_PREFIX)


def _add_times(hops: pd.DataFrame, msgs: pd.DataFrame) -> None:
    origins = _id_array(hops["origin"])
    origin_ms = pd.array(timestamps_ms(origins, msgs), dtype="Int64")
    origin_ms[origins == 0] = pd.NA
    result_ms = pd.array(timestamps_ms(_id_array(hops["result"]), msgs), dtype="Int64")
    hops["origin_time"] = pd.to_datetime(origin_ms, unit="ms", utc=True)
    hops["result_time"] = pd.to_datetime(result_ms, unit="ms", utc=True)
    hops["latency_ms"] = pd.Series(result_ms) - pd.Series(origin_ms)


def _add_result_facts(
    hops: pd.DataFrame, msgs: pd.DataFrame, org: np.ndarray[Any, Any]
) -> None:
    ids = pd.Index(_id_array(msgs["id"]), dtype="uint64")
    stored = pd.Series(True, index=ids[~ids.duplicated()])
    hops["origin_stored"] = stored.reindex(_id_array(hops["origin"])).notna().to_numpy()
    result_ids = _id_array(hops["result"])
    hops["result_stored"] = stored.reindex(result_ids).notna().to_numpy()
    home_rows = msgs.loc[~org].drop_duplicates("id")
    home_rows = home_rows.set_index(
        pd.Index(_id_array(home_rows["id"]), dtype="uint64")
    )
    errors = home_rows["is_error"].reindex(result_ids)
    hops["is_error"] = errors.fillna(False).astype(bool).to_numpy()
    topics = home_rows["topics"].reindex(result_ids).to_numpy(dtype=object)
    hops["result_topics"] = [
        list(found) if isinstance(found, list) else recorded
        for found, recorded in zip(topics, hops["to_topics"].tolist(), strict=True)
    ]


def _stored_times(msgs: pd.DataFrame) -> pd.Series:
    first = msgs.drop_duplicates("id")
    index = pd.Index(_id_array(first["id"]), dtype="uint64")
    return pd.Series(first["timestamp_ms"].to_numpy(dtype="int64"), index=index)


def _id_array(ids: Any) -> np.ndarray[Any, np.dtype[np.uint64]]:
    return to_uint64(ids)


def _edge_labels(hops: pd.DataFrame) -> list[str]:
    return [
        f"{_text(source)} → {agent} → {', '.join(targets) or '?'}"
        for source, agent, targets in zip(
            hops["from_topic"].tolist(),
            hops["agent_id"].tolist(),
            hops["result_topics"].tolist(),
            strict=True,
        )
    ]


def _text(value: Any) -> str:
    return "?" if value is None or value is pd.NA or value != value else str(value)


def _empty_hops() -> pd.DataFrame:
    frame = pd.DataFrame({name: pd.Series(dtype=object) for name in HOP_COLUMNS})
    for column in ("origin", "result"):
        frame[column] = pd.array([], dtype="UInt64")
    for column in ("origin_time", "result_time"):
        frame[column] = pd.to_datetime(
            pd.Series([], dtype="int64"), unit="ms", utc=True
        )
    frame["latency_ms"] = pd.array([], dtype="Int64")
    for column in ("is_error", "origin_stored", "result_stored"):
        frame[column] = np.asarray([], dtype=bool)
    return frame

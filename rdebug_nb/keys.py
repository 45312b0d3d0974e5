"""Key names: what each Redis key of a RusticAI bus means.

RusticAI writes these keys (guild ids and topics may both contain ``:``):

- ``<namespace>:<topic>`` (sorted set): the topic key, every delivery scored by
  timestamp;
- ``msg:<namespace>:<id>`` (string): the last stored copy of a message; expires
  (by default after an hour) while the topic key keeps it;
- ``eo:pos:<guild>$<agent>:<namespace>:<topic>`` (string): id of the last message
  the agent finished on that topic;
- ``managed_state:<guild>`` and ``managed_state:<guild>#<agent>`` (hash): guild and
  agent state;
- ``<org>_<guild>_<agent>`` (hash): an agent's key-value store.

A topic key cannot be split on colons; its namespace is found from a member's
``topic_published_to`` (see :func:`split_topic_key`).

Examples
--------
>>> split_topic_key("acme:support:echo:agent_inbox:echo", "agent_inbox:echo")
('acme:support:echo', 'agent_inbox:echo')
>>> parse_position_key("eo:pos:g1$echo:g1:default_topic")
PositionKey(guild_id='g1', agent_id='echo', namespace='g1', topic='default_topic')
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

MSG_PREFIX: Final = "msg:"
POSITION_PREFIX: Final = "eo:pos:"
STATE_PREFIX: Final = "managed_state:"
DEAD_LETTER_TOPIC: Final = "dead_letter_queue"
ORG_INBOX_PREFIX: Final = "guild_inbox:"

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


@dataclass(frozen=True, slots=True)
class PositionKey:
    """The parts of an ``eo:pos:*`` delivery-position key."""

    guild_id: str
    agent_id: str
    namespace: str
    topic: str


def split_topic_key(key: str, topic_published_to: str | None) -> tuple[str, str] | None:
    """Split a topic key into (namespace, topic) using a member's topic.

    Parameters
    ----------
    key : str
        The sorted-set key.
    topic_published_to : str or None
        The ``topic_published_to`` field of one of its members; None for dead
        letters, whose topic is always ``dead_letter_queue``.

    Returns
    -------
    tuple of str, or None
        None when the member's topic does not end the key.

    Examples
    --------
    >>> split_topic_key("g:dead_letter_queue", None)
    ('g', 'dead_letter_queue')
    >>> split_topic_key("g:x", "y") is None
    True
    """
    topic = DEAD_LETTER_TOPIC if topic_published_to is None else topic_published_to
    suffix = ":" + topic
    if not topic or not key.endswith(suffix) or len(key) == len(suffix):
        return None
    return key[: -len(suffix)], topic


def topic_key(namespace: str, topic: str) -> str:
    """Return the sorted-set key of a topic in a namespace.

    >>> topic_key("acme:support:echo", "default_topic")
    'acme:support:echo:default_topic'
    """
    return f"{namespace}:{topic}"


def message_key(namespace: str, message_id: int) -> str:
    """Return the ``msg:`` key of a message.

    >>> message_key("g", 12)
    'msg:g:12'
    """
    return f"{MSG_PREFIX}{namespace}:{message_id}"


def try_parse_message_key(key: str) -> tuple[str, int] | None:
    """Return (namespace, id) of a ``msg:`` key, or None if it is not one.

    >>> try_parse_message_key("msg:acme:support:echo:7436657122877640704")
    ('acme:support:echo', 7436657122877640704)
    >>> try_parse_message_key("msg:g:abc") is None
    True
    """
    if not key.startswith(MSG_PREFIX):
        return None
    namespace, _, tail = key[len(MSG_PREFIX) :].rpartition(":")
    if not namespace or not tail.isdigit() or not tail.isascii():
        return None
    return namespace, int(tail)


def parse_position_key(key: str) -> PositionKey | None:
    """Return the parts of an ``eo:pos:`` key, or None if it is not one.

    The ``$`` ends the guild id and agent ids never contain ``:``, so the client id
    ends at the first ``:`` after the ``$``. Namespace and topic are split on the
    guild id when the namespace is the guild's own, else on the organisation inbox
    topic; anything else keeps the whole rest as topic with an empty namespace.

    >>> parse_position_key("eo:pos:q$envoy:acme-org:guild_inbox:q").namespace
    'acme-org'
    """
    if not key.startswith(POSITION_PREFIX):
        return None
    client, sep, rest = _split_client(key[len(POSITION_PREFIX) :])
    guild_id, dollar, agent_id = client.partition("$")
    if not sep or not dollar:
        return None
    namespace, topic = _split_position_rest(guild_id, rest)
    return PositionKey(guild_id, agent_id, namespace, topic)


def try_state_owner(key: str, namespaces: set[str]) -> tuple[str, str | None] | None:
    """Return (guild id, agent id or None) of a ``managed_state:`` key.

    Parameters
    ----------
    key : str
        The hash key.
    namespaces : set of str
        Known guild ids; the longest one that matches wins.

    Examples
    --------
    >>> try_state_owner("managed_state:g#g#manager_agent", {"g"})
    ('g', 'g#manager_agent')
    >>> try_state_owner("managed_state:g", {"g"})
    ('g', None)
    """
    if not key.startswith(STATE_PREFIX):
        return None
    rest = key[len(STATE_PREFIX) :]
    for guild_id in sorted(namespaces, key=len, reverse=True):
        if rest == guild_id:
            return guild_id, None
        if rest.startswith(guild_id + "#"):
            return guild_id, rest[len(guild_id) + 1 :]
    guild_id, hash_sign, agent_id = rest.partition("#")
    return guild_id, (agent_id if hash_sign else None)


def glob_escape(text: str) -> str:
    """Escape glob characters so ``text`` matches itself in ``SCAN MATCH``.

    >>> glob_escape("a*b[1]")
    'a\\\\*b\\\\[1\\\\]'
    """
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def _split_client(text: str) -> tuple[str, str, str]:
    dollar = text.find("$")
    if dollar < 0:
        return text, "", ""
    colon = text.find(":", dollar)
    if colon < 0:
        return text, "", ""
    return text[:colon], ":", text[colon + 1 :]


def _split_position_rest(guild_id: str, rest: str) -> tuple[str, str]:
    if rest.startswith(guild_id + ":"):
        return guild_id, rest[len(guild_id) + 1 :]
    marker = rest.find(":" + ORG_INBOX_PREFIX)
    if marker > 0:
        return rest[:marker], rest[marker + 1 :]
    return "", rest

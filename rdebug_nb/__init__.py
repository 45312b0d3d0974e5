"""rdebug_nb: debug RusticAI guilds whose message bus lives in Redis, from a notebook.

>>> import rdebug_nb as rd
>>> rd.decode_id(2824971229302112256).priority_name
'IMPORTANT'
"""

from __future__ import annotations

from rdebug_nb._keyspace_io import LoadReport
from rdebug_nb.bus import Bus, connect, open_bus, redact_url
from rdebug_nb.errors import (
    CommandTimeout,
    ConnectionFailed,
    GuildNotFound,
    InvalidId,
    LoadIncomplete,
    MalformedMessage,
    MessageNotFound,
    PermissionDenied,
    RdebugError,
    RdebugWarning,
    SkippedEntriesWarning,
    SnapshotError,
    TruncatedWarning,
    WriteRefused,
)
from rdebug_nb.guilds import GUILD_COLUMNS, TOPIC_COLUMNS
from rdebug_nb.ids import IdParts, decode_id, decode_ids, encode_id, try_decode_id
from rdebug_nb.messages import (
    DELIVERY_COLUMNS,
    MESSAGE_COLUMNS,
    Skip,
    StoredMessage,
    skips,
    summarize,
    to_messages,
)
from rdebug_nb.server import EmbeddedServer

__version__ = "0.1.0"

__all__ = [
    "DELIVERY_COLUMNS",
    "GUILD_COLUMNS",
    "MESSAGE_COLUMNS",
    "TOPIC_COLUMNS",
    "Bus",
    "CommandTimeout",
    "ConnectionFailed",
    "EmbeddedServer",
    "GuildNotFound",
    "IdParts",
    "InvalidId",
    "LoadIncomplete",
    "LoadReport",
    "MalformedMessage",
    "MessageNotFound",
    "PermissionDenied",
    "RdebugError",
    "RdebugWarning",
    "Skip",
    "SkippedEntriesWarning",
    "SnapshotError",
    "StoredMessage",
    "TruncatedWarning",
    "WriteRefused",
    "connect",
    "decode_id",
    "decode_ids",
    "encode_id",
    "open_bus",
    "redact_url",
    "skips",
    "summarize",
    "to_messages",
    "try_decode_id",
]

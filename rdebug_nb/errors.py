"""Every exception and warning rdebug_nb raises.

All exceptions derive from :class:`RdebugError`, all warnings from
:class:`RdebugWarning`, so one ``except`` or one warnings filter covers the package.
Messages name the key, value or URL involved and what to do about it.

Notes
-----
The package also exports an analysis function called ``errors``
(``rdebug_nb.errors(msgs)``), which shadows this module as an attribute of the
package. Import the exceptions by name (``from rdebug_nb.errors import
RdebugError``) or from the package root (``rdebug_nb.RdebugError``).
"""

from __future__ import annotations


class RdebugError(Exception):
    """Root of every exception raised by rdebug_nb."""


class ConnectionFailed(RdebugError):
    """The Redis server could not be reached or refused the connection."""


class CommandTimeout(RdebugError):
    """A Redis command did not answer within the configured timeout."""


class PermissionDenied(RdebugError):
    """The Redis user lacks a permission the operation needs."""


class GuildNotFound(RdebugError):
    """No topic key of the requested guild exists on the server."""


class MessageNotFound(RdebugError):
    """No stored copy of the requested message exists."""


class InvalidId(RdebugError, ValueError):
    """A value cannot be a GemstoneID in the requested layout."""


class InvalidQuery(RdebugError, ValueError):
    """A message filter or query cannot be read; the message says how to write it."""


class MalformedMessage(RdebugError, ValueError):
    """A stored member is not a RusticAI message."""


class SnapshotError(RdebugError):
    """A snapshot file cannot be read or written."""


class LoadIncomplete(RdebugError):
    """A load stopped part-way; the message says what was read and what was not."""


class WriteRefused(RdebugError):
    """A write was refused to protect the data (read-only server, source guild)."""


class RdebugWarning(UserWarning):
    """Root of every warning issued by rdebug_nb."""


class SkippedEntriesWarning(RdebugWarning):
    """Some stored entries could not be read and were skipped (see the result)."""


class TruncatedWarning(RdebugWarning):
    """A ``limit`` cut the result; more data matched than was returned."""

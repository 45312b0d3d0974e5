"""The server the curated notebooks run against under nbval.

``notebooks/conftest.py`` starts one :class:`NotebookServer` when the first
notebook cell is about to run. It is an embedded Valkey holding the whole capture,
and its URL goes to the kernels through ``RDEBUG_REDIS_URL``, exactly as a user
points a notebook at their own server; exported files go to a temporary folder
through ``RDEBUG_EXPORT_DIR``. Each notebook starts on exactly the capture: after
a notebook whose guild received test traffic, the capture is loaded again.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Final

import rdebug_nb as rd
from rdebug_nb.bus import URL_VARIABLE
from rdebug_nb.server import EmbeddedServer
from tests.notebook_facts import (
    Capture,
    delivery_count,
    first_messages,
    load_capture,
)

logger = logging.getLogger(__name__)

EXPORT_VARIABLE: Final = "RDEBUG_EXPORT_DIR"
TRAFFIC_TAG: Final = "live-traffic"
"""Cells with this tag run right after the test published into the notebook's guild."""
TRAFFIC_MESSAGES: Final = 12


class NotebookServer:
    """An embedded server with the capture, and the environment the kernels read.

    Parameters
    ----------
    keyspace : Path
        The capture's ``keyspace.jsonl``.
    """

    def __init__(self, keyspace: Path) -> None:
        self.keyspace = keyspace
        self._server = EmbeddedServer()
        self._bus: rd.Bus | None = None
        self._export_dir = Path(tempfile.mkdtemp(prefix="rdebug-nb-exports-"))
        self._saved: dict[str, str | None] = {}
        self._changed = False

    @property
    def bus(self) -> rd.Bus:
        if self._bus is None:
            raise RuntimeError("the notebook server is not started")
        return self._bus

    @property
    def capture(self) -> Capture:
        return load_capture(self.keyspace)

    @property
    def export_dir(self) -> Path:
        return self._export_dir

    def start(self) -> NotebookServer:
        """Start the server, load the capture and point the environment at it."""
        self._server.start()
        self._bus = rd.connect(self._server.url, progress=False, writable=True)
        self._load()
        self._set_env(
            {URL_VARIABLE: self._server.url, EXPORT_VARIABLE: str(self._export_dir)}
        )
        return self

    def restore(self) -> None:
        """Load the capture again if test traffic changed the database."""
        if self._changed:
            self.bus.client.flushdb()
            self._load()

    def publish(self, guild: str) -> int:
        """Publish the guild's first messages into it again, with fresh ids.

        The copies are written as RusticAI's Redis backend writes (``SET`` of
        the ``msg:`` key, ``ZADD`` to each topic key, ``PUBLISH``), now.

        Returns
        -------
        int
            Deliveries published, counted in the raw capture.
        """
        chosen = [
            m["id"] for m in first_messages(self.capture, guild, TRAFFIC_MESSAGES)
        ]
        msgs = self.bus.messages(guild)
        self._changed = True
        plan = rd.replay(
            msgs[msgs["id"].isin(chosen)], self.bus, guild, write=True, force=True
        )
        logger.info("published %s deliveries into %r", len(plan.publishes), guild)
        return delivery_count(self.capture, guild, chosen)

    def stop(self) -> None:
        """Restore the environment, stop the server, remove the exports."""
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved.clear()
        if self._bus is not None:
            self._bus.close()
            self._bus = None
        self._server.stop()
        shutil.rmtree(self._export_dir, ignore_errors=True)

    def _load(self) -> None:
        report = self.bus.load_snapshot(self.keyspace, expiry="restart", force=True)
        expected = self.capture.keys
        if report.loaded != expected:
            raise RuntimeError(
                f"loaded {report!r} of {expected} keys from {self.keyspace}"
            )
        self._changed = False

    def _set_env(self, values: dict[str, str]) -> None:
        for name, value in values.items():
            self._saved.setdefault(name, os.environ.get(name))
            os.environ[name] = value

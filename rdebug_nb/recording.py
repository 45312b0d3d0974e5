"""Recording: capture a guild's live traffic to a file as it happens.

A recording is a live tail (:class:`rdebug_nb.tail.Tail`) whose every delivery is
appended to ``<out>.part`` the moment it arrives, one RusticAI message JSON per
line (the first stored copy of each id, byte for byte). After a reconnect the tail
backfills what it missed from the topic keys, so the file misses nothing. When the
recording ends, the part file becomes ``<out>`` with its metadata sidecar (see
:func:`rdebug_nb.export.to_jsonl`), and can be read back with
:func:`rdebug_nb.read_jsonl` or opened offline with :func:`rdebug_nb.open_snapshot`.

Notes
-----
If the process dies mid-recording, ``<out>.part`` holds everything received so
far. Finishing reads the part file back into memory once, so a recording should
fit in memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from rdebug_nb.bus import Bus
from rdebug_nb.export import read_jsonl, to_jsonl
from rdebug_nb.tail import Gap, Reconciliation, TailMessage

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Recording:
    """What a recording captured.

    Attributes
    ----------
    path : Path
        The JSONL file written.
    messages : int
        Distinct messages in it.
    deliveries : int
        Deliveries received (a message published to several topics counts once
        per topic).
    gaps : tuple of Gap
        Disconnections and what the backfill after each filled in.
    reconciliation : Reconciliation
        What arrived compared with what the topic keys hold for the same window.
    """

    path: Path
    messages: int
    deliveries: int
    gaps: tuple[Gap, ...]
    reconciliation: Reconciliation

    def __str__(self) -> str:
        filled = sum(gap.count for gap in self.gaps)
        check = "complete" if self.reconciliation.ok else "INCOMPLETE"
        return (
            f"{self.messages} messages ({self.deliveries} deliveries) to {self.path}; "
            f"{len(self.gaps)} reconnects, {filled} backfilled; {check}"
        )


class _Writer:
    """Appends the first copy of each message id to the part file."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.seen: set[int] = set()
        self.deliveries = 0
        self.lock = threading.Lock()

    def __call__(self, message: TailMessage) -> None:
        with self.lock:
            self.deliveries += 1
            if message.id not in self.seen:
                self.seen.add(message.id)
                self.handle.write(message.raw + b"\n")
                self.handle.flush()


def record(
    bus: Bus,
    guild_id: str,
    out: str | Path,
    *,
    duration: float,
    topics: Sequence[str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Recording:
    """Record a guild's live traffic for ``duration`` seconds into a JSONL file.

    Parameters
    ----------
    bus : Bus
        The server to record from (only reads and subscribes).
    guild_id : str
        The guild (or organisation) namespace.
    out : str or Path
        The JSONL file to write; a ``.meta.json`` sidecar is written beside it.
    duration : float
        Seconds to record; an interrupt (Ctrl-C) ends it early and keeps what
        was recorded.
    topics : sequence of str, optional
        Only these topics; default every topic of the guild.
    sleep : callable, default time.sleep
        How to wait (injected by tests).

    Returns
    -------
    Recording
    """
    target = Path(out)
    part = target.with_name(target.name + ".part")
    with part.open("wb") as handle:
        writer = _Writer(handle)
        tail = bus.tail(guild_id, topics, callback=writer)
        try:
            _wait(sleep, duration)
            check = tail.reconcile()
        finally:
            tail.stop()
            tail.close()
    logger.info("recorded %s deliveries of %s", writer.deliveries, guild_id)
    _finish(part, target, guild_id, bus.url)
    return Recording(target, len(writer.seen), writer.deliveries, tail.gaps, check)


def _wait(sleep: Callable[[float], None], duration: float) -> None:
    """Wait; Ctrl-C ends the recording early and keeps what was recorded."""
    try:
        sleep(duration)
    except KeyboardInterrupt:
        logger.info("recording ended early by an interrupt")


def _finish(part: Path, target: Path, guild_id: str, source: str) -> None:
    """Turn the part file into the export file with its sidecar."""
    frame = read_jsonl(part, guild_id=guild_id, raw=True)
    to_jsonl(frame, target, source=source)
    part.unlink()

"""Offline analysis: a Bus over a file, with no Redis server at all.

:func:`open_snapshot` reads a keyspace JSONL snapshot (:mod:`rdebug_nb.snapshot`)
or an exported JSONL / Parquet message file (:mod:`rdebug_nb.export`) into an
in-memory, read-only client, and returns the same :class:`~rdebug_nb.bus.Bus`
a live server gives: guilds, topics, messages, deliveries, message lookups and
everything built on them work unchanged.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rdebug_nb import export
from rdebug_nb._memory import MemoryClient
from rdebug_nb.bus import Bus
from rdebug_nb.errors import SkippedEntriesWarning, SnapshotError
from rdebug_nb.snapshot import KeyRecord, SnapshotSkip, read_snapshot

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)

_SHOWN = 3


def open_snapshot(
    path: str | Path, *, guild_id: str | None = None, progress: bool = True
) -> Bus:
    """Open a snapshot or an exported message file as a read-only Bus.

    Parameters
    ----------
    path : str or Path
        A keyspace JSONL snapshot (as written by :meth:`Bus.save_snapshot`), or
        a JSONL or Parquet export (:func:`rdebug_nb.export.to_jsonl`,
        :func:`rdebug_nb.export.to_parquet`).
    guild_id : str, optional
        For exports: the namespace to put the messages under (default: the
        guild each row was exported from). Ignored for keyspace snapshots.
    progress : bool, default True
        Show a progress bar on long loads.

    Returns
    -------
    Bus
        Its URL is ``snapshot:<path>``; every write raises
        :class:`~rdebug_nb.errors.WriteRefused`.

    Raises
    ------
    SnapshotError
        If the file cannot be read, or is an export without a sidecar and no
        ``guild_id`` is given.

    Warns
    -----
    SkippedEntriesWarning
        When lines of a keyspace snapshot are not records (they are left out).

    Notes
    -----
    The Bus sees the keyspace as it was when the snapshot was taken: its clock
    (``TIME``) stands at the snapshot's time and keys whose expiry has passed
    since are kept, with the time to live they had then. An export becomes the
    topic keys holding its messages (a message frame: one member per topic in
    ``topics``; a delivery frame: one per row); it has no ``msg:`` keys,
    delivery positions or state.

    Examples
    --------
    >>> import tempfile
    >>> from rdebug_nb.snapshot import write_snapshot
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = Path(folder.name) / "empty.jsonl"
    >>> write_snapshot([], path)
    0
    >>> bus = open_snapshot(path)
    >>> bus.url.startswith("snapshot:"), bus.guilds().empty
    (True, True)
    >>> folder.cleanup()
    """
    records = _records(Path(path), guild_id)
    client = MemoryClient(records)
    logger.info("opened %s offline: %s keys", path, len(client.records))
    return Bus(cast("redis.Redis", client), url=f"snapshot:{path}", progress=progress)


def _records(path: Path, guild_id: str | None) -> list[KeyRecord]:
    _check_readable(path)
    if _is_parquet(path):
        frame = export.read_parquet(path)
        return export.to_snapshot_records(frame, guild_id=guild_id)
    if _is_keyspace(path):
        return _keyspace_records(path)
    frame = export.read_jsonl(path, guild_id=guild_id, raw=True)
    return export.to_snapshot_records(frame, guild_id=guild_id)


def _keyspace_records(path: Path) -> list[KeyRecord]:
    records: list[KeyRecord] = []
    skipped: list[SnapshotSkip] = []
    for item in read_snapshot(path):
        (
            skipped.append(item)
            if isinstance(item, SnapshotSkip)
            else records.append(item)
        )
    if skipped and not records:
        raise SnapshotError(
            f"no line of {str(path)!r} is a snapshot record (line {skipped[0].line}: "
            f"{skipped[0].reason}); is it a keyspace JSONL snapshot?"
        )
    if skipped:
        examples = "; ".join(f"line {s.line}: {s.reason}" for s in skipped[:_SHOWN])
        warnings.warn(
            f"skipped {len(skipped)} lines of {str(path)!r} that are not snapshot "
            f"records, e.g. {examples}. The other keys are there",
            SkippedEntriesWarning,
            stacklevel=4,
        )
    return records


def _check_readable(path: Path) -> None:
    """Refuse files that are none of the three kinds, before reading them."""
    if _head(path, 5) == b"REDIS":
        raise SnapshotError(
            f"{str(path)!r} is a Redis RDB file: start redis-server on it "
            "(--dir <folder> --dbfilename <file>) and connect to that server"
        )
    first = _first_line(path)
    if _is_parquet(path) or not first or export.sidecar_path(path).exists():
        return  # an export's sidecar says what it is (read_jsonl checks it)
    try:
        json.loads(first)
    except ValueError as err:
        raise SnapshotError(
            f"{str(path)!r} is not a keyspace JSONL snapshot, a JSONL export or a "
            f"Parquet export: its first line is not JSON ({err})"
        ) from err


def _is_parquet(path: Path) -> bool:
    return _head(path, 4) == b"PAR1"


def _is_keyspace(path: Path) -> bool:
    """Whether the first line is a snapshot record (has ``key`` and ``type``)."""
    first = _first_line(path)
    if not first:
        return True
    try:
        body: Any = json.loads(first)
    except ValueError:
        return False
    return isinstance(body, dict) and "key" in body and "type" in body


def _first_line(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            for line in handle:
                if line.strip():
                    return line
    except OSError as err:
        raise SnapshotError(f"cannot open {str(path)!r}: {err.strerror}") from err
    return b""


def _head(path: Path, size: int) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(size)
    except OSError as err:
        raise SnapshotError(f"cannot open {str(path)!r}: {err.strerror}") from err

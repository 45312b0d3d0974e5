"""The package's user-facing warnings, each issued in one place."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence

import pandas as pd

from rdebug_nb.errors import RdebugWarning, SkippedEntriesWarning, TruncatedWarning
from rdebug_nb.snapshot import SnapshotSkip

_SHOWN = 3


def warn_skips(frame: pd.DataFrame, where: str, stacklevel: int) -> None:
    """Issue one warning counting the entries skipped while building ``frame``."""
    skipped = frame.attrs.get("skips", ())
    if not skipped:
        return
    reasons = Counter(skip.reason.split(":")[0] for skip in skipped)
    examples = "; ".join(f"{skip.key}: {skip.reason}" for skip in skipped[:_SHOWN])
    warnings.warn(
        f"skipped {len(skipped)} unreadable entries in {where} "
        f"({dict(reasons)}), e.g. {examples}. The rest loaded unchanged; "
        "rdebug_nb.skips(frame) lists them all",
        SkippedEntriesWarning,
        stacklevel=stacklevel + 1,
    )


def warn_truncated(where: str, limit: int, stacklevel: int) -> None:
    """Say that ``limit`` cut a result."""
    warnings.warn(
        f"limit={limit} cut the result for {where}: more messages matched; "
        "only the newest are returned. Raise the limit or narrow since/until",
        TruncatedWarning,
        stacklevel=stacklevel + 1,
    )


def warn_unsupported(keys: list[str], stacklevel: int) -> None:
    """Say that keys of types a snapshot cannot hold were left out."""
    warnings.warn(
        f"{len(keys)} keys are not strings, sorted sets or hashes and were left "
        f"out of the snapshot, e.g. {keys[:_SHOWN]}",
        RdebugWarning,
        stacklevel=stacklevel + 1,
    )


def warn_snapshot_skips(
    skipped: Sequence[SnapshotSkip], path: str, stacklevel: int
) -> None:
    """Say how many snapshot lines were not loaded, and why (a few examples)."""
    examples = "; ".join(f"line {s.line}: {s.reason}" for s in skipped[:_SHOWN])
    warnings.warn(
        f"skipped {len(skipped)} lines of {path} that are not keyspace records, "
        f"e.g. {examples}. The rest loaded; the LoadReport's skips list them all",
        SkippedEntriesWarning,
        stacklevel=stacklevel + 1,
    )

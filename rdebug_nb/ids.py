"""GemstoneIDs: decode and encode the 64-bit message ids RusticAI generates.

Two layouts are known:

``"rusticai"`` (the one RusticAI 1.4 writes, the default)
    bit 63-61 priority (3 bits), bit 60-22 milliseconds since 2023-01-01T00:00:00Z
    (39 bits), bit 21-12 machine id (10 bits read, 8 written), bit 11-0 sequence
    (12 bits). Ids of priority 4 and above are at or above 2**63, so they never fit
    a signed 64-bit integer and must never pass through a float.
``"rustic-debug"``
    the layout of the original Rustic Debug design: milliseconds since the Unix
    epoch (42 bits), priority (8 bits), sequence (14 bits), packed big-endian in 8
    bytes and written as unpadded base64url (11 characters). Strings that are not
    all digits are decoded in this layout automatically.

Examples
--------
>>> parts = decode_id(2824971229302112256)
>>> parts.priority, parts.timestamp, parts.machine_id, parts.sequence
(1, 1796301012605, 4, 0)
>>> encode_id(1, 1796301012605, machine_id=4)
2824971229302112256
>>> decode_id("9742500132942774272").priority_name
'NORMAL'
"""

from __future__ import annotations

import base64
import binascii
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import numpy as np
import pandas as pd

from rdebug_nb.errors import InvalidId

Layout = Literal["rusticai", "rustic-debug"]

RUSTICAI_EPOCH_MS: Final = 1_672_531_200_000
"""2023-01-01T00:00:00Z in Unix milliseconds, the zero of RusticAI's id clock."""

PRIORITY_NAMES: Final = (
    "URGENT",
    "IMPORTANT",
    "HIGH",
    "ABOVE_NORMAL",
    "NORMAL",
    "LOW",
    "VERY_LOW",
    "LOWEST",
)
"""RusticAI's priority names, indexed by priority (0 is the most urgent)."""

_U64_MAX: Final = (1 << 64) - 1
_TS_MASK: Final = np.uint64((1 << 39) - 1)
_UTC_MICROSECONDS: Final = pd.DatetimeTZDtype("us", "UTC")
_TS_BITS: Final = 39
_DEBUG_TS_BITS: Final = 42
_DEBUG_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{11}")


@dataclass(frozen=True, slots=True)
class IdParts:
    """The parts packed into one GemstoneID.

    Attributes
    ----------
    id : int
        The id itself, exact.
    priority : int
        0 (URGENT) to 7 (LOWEST) for RusticAI ids; 0-255 in the Rustic Debug layout.
    timestamp : int
        Unix time in milliseconds.
    machine_id : int
        Generator number (always 0 in the Rustic Debug layout).
    sequence : int
        Counter within one millisecond.
    layout : str
        ``"rusticai"`` or ``"rustic-debug"``.
    """

    id: int
    priority: int
    timestamp: int
    machine_id: int
    sequence: int
    layout: Layout = "rusticai"

    @property
    def priority_name(self) -> str:
        """RusticAI's name of the priority, or the number as text beyond 7."""
        if self.priority < len(PRIORITY_NAMES):
            return PRIORITY_NAMES[self.priority]
        return str(self.priority)

    @property
    def datetime(self) -> datetime:
        """The timestamp as a timezone-aware UTC datetime."""
        return datetime.fromtimestamp(self.timestamp / 1000, tz=UTC)


def decode_id(value: int | str | bytes, layout: Layout | None = None) -> IdParts:
    """Decode one GemstoneID into its parts.

    Parameters
    ----------
    value : int, str or bytes
        The id as an integer, a decimal string, or an 11-character base64url
        string (Rustic Debug layout).
    layout : {"rusticai", "rustic-debug"}, optional
        Force a layout; by default decimal values use ``"rusticai"`` and other
        strings ``"rustic-debug"``.

    Returns
    -------
    IdParts

    Raises
    ------
    InvalidId
        If the value cannot be an id in that layout; the message names the value.

    Examples
    --------
    >>> decode_id(9742500132942774272).timestamp
    1796300983041
    >>> decode_id(encode_id(3, 1796300982838, layout="rustic-debug")).priority
    3
    """
    text = value.decode() if isinstance(value, bytes) else value
    chosen = layout or _guess_layout(text)
    if chosen == "rustic-debug":
        return _decode_debug(text)
    number = _to_int(text)
    return IdParts(
        id=number,
        priority=(number >> 61) & 0x7,
        timestamp=((number >> 22) & ((1 << _TS_BITS) - 1)) + RUSTICAI_EPOCH_MS,
        machine_id=(number >> 12) & 0x3FF,
        sequence=number & 0xFFF,
    )


def priority_names(priorities: np.ndarray[Any, Any]) -> pd.Categorical[str]:
    """RusticAI priority names for an array of priorities 0-7, as a categorical.

    >>> list(priority_names(np.array([0, 4], dtype=np.uint8)))
    ['URGENT', 'NORMAL']
    """
    categories = pd.Index(list(PRIORITY_NAMES))
    return pd.Categorical.from_codes(priorities.astype(np.int8), categories=categories)


def try_decode_id(value: Any) -> IdParts | None:
    """Decode an id like :func:`decode_id`, or return None if it cannot be one.

    Examples
    --------
    >>> try_decode_id(-1) is None
    True
    """
    try:
        return decode_id(value)
    except InvalidId:
        return None


def decode_ids(
    values: Iterable[int | str] | np.ndarray[Any, Any] | pd.Series,
) -> pd.DataFrame:
    """Decode many RusticAI ids at once, with unsigned 64-bit numpy arithmetic.

    Parameters
    ----------
    values : iterable of int or str, numpy array or pandas Series
        Ids in the ``"rusticai"`` layout. Floats are refused because ids above
        2**53 cannot survive them.

    Returns
    -------
    pandas.DataFrame
        Columns ``id`` (``UInt64``), ``priority``, ``priority_name``,
        ``timestamp_ms``, ``timestamp`` (UTC), ``machine_id`` and ``sequence``,
        one row per value in input order.

    Raises
    ------
    InvalidId
        If a value is negative, above 2**64 - 1, missing or not an integer.

    Examples
    --------
    >>> parts = decode_ids([2824971229302112256, 9742500132942774272])
    >>> parts[["priority", "machine_id"]]
       priority  machine_id
    0         1           4
    1         4           0
    """
    ids = to_uint64(values)
    stamp = np.right_shift(ids, np.uint64(22))
    np.bitwise_and(stamp, _TS_MASK, out=stamp)
    stamp = stamp.view(np.int64)
    stamp += RUSTICAI_EPOCH_MS
    low, high, top = _id_bytes(ids)
    machine = np.right_shift(low, 12)
    machine |= (high & 0x3F) << 4
    priority = np.right_shift(top, 5)
    return pd.DataFrame(
        {
            "id": pd.arrays.IntegerArray(ids, np.zeros(len(ids), dtype=bool)),
            "priority": priority,
            "priority_name": priority_names(priority),
            "timestamp_ms": stamp,
            "timestamp": pd.array(
                (stamp * 1000).view("M8[us]"), dtype=_UTC_MICROSECONDS
            ),
            "machine_id": machine,
            "sequence": low & np.uint16(0xFFF),
        },
        copy=False,
    )


def _id_bytes(ids: np.ndarray[Any, np.dtype[np.uint64]]) -> tuple[Any, Any, Any]:
    """Bits 0-15 and 16-31 (uint16) and 56-63 (uint8) of each id, as views.

    Reading narrow views of the ids is several times cheaper than shifting and
    masking whole 64-bit copies.
    """
    if sys.byteorder == "little":
        return (
            ids.view(np.uint16)[0::4],
            ids.view(np.uint16)[1::4],
            ids.view(np.uint8)[7::8],
        )
    return (
        (ids & np.uint64(0xFFFF)).astype(np.uint16),
        ((ids >> np.uint64(16)) & np.uint64(0xFFFF)).astype(np.uint16),
        (ids >> np.uint64(56)).astype(np.uint8),
    )


def to_uint64(
    values: Iterable[Any] | np.ndarray[Any, Any] | pd.Series,
) -> np.ndarray[Any, np.dtype[np.uint64]]:
    """Convert ids to a numpy ``uint64`` array without passing through floats.

    Raises
    ------
    InvalidId
        Naming the first value that is not an unsigned 64-bit integer.

    Examples
    --------
    >>> to_uint64(["18446744073709551615"]).tolist()
    [18446744073709551615]
    """
    if isinstance(values, pd.Series):
        values = _series_values(values)
    if isinstance(values, np.ndarray) and values.dtype.kind in "ui":
        if values.dtype.kind == "i" and (values < 0).any():
            raise InvalidId(f"id {int(values[values < 0][0])} is negative")
        return values.astype(np.uint64)
    items = list(values)
    try:
        return np.fromiter(
            (_to_int(item) for item in items), dtype=np.uint64, count=len(items)
        )
    except OverflowError as err:  # pragma: no cover - _to_int range-checks first
        raise InvalidId(f"an id does not fit 64 bits: {err}") from err


def encode_id(
    priority: int,
    timestamp: int,
    machine_id: int = 0,
    sequence: int = 0,
    layout: Layout = "rusticai",
) -> int | str:
    """Pack id parts into a GemstoneID.

    Parameters
    ----------
    priority : int
        0-7 (rusticai) or 0-255 (rustic-debug).
    timestamp : int
        Unix time in milliseconds.
    machine_id : int, default 0
        0-1023 (rusticai only).
    sequence : int, default 0
        0-4095 (rusticai) or 0-16383 (rustic-debug).
    layout : {"rusticai", "rustic-debug"}
        ``"rusticai"`` returns an int, ``"rustic-debug"`` a base64url string.

    Raises
    ------
    InvalidId
        If a part is out of range for the layout.

    Examples
    --------
    >>> encode_id(4, 1796300983041)
    9742500132942774272
    >>> encode_id(4, 1796300983041, layout="rustic-debug")
    'aI74csBBAAA'
    """
    if layout == "rustic-debug":
        return _encode_debug(priority, timestamp, sequence)
    offset = timestamp - RUSTICAI_EPOCH_MS
    _check_range("priority", priority, 7)
    _check_range("timestamp offset from 2023-01-01", offset, (1 << _TS_BITS) - 1)
    _check_range("machine_id", machine_id, 0x3FF)
    _check_range("sequence", sequence, 0xFFF)
    return (priority << 61) | (offset << 22) | (machine_id << 12) | sequence


def _guess_layout(value: Any) -> Layout:
    if isinstance(value, str) and not value.strip().isdigit():
        return "rustic-debug"
    return "rusticai"


def _to_int(value: Any) -> int:
    if isinstance(value, bool) or value is None:
        raise InvalidId(
            f"{value!r} is not a GemstoneID; pass the id as an int or a decimal string"
        )
    if isinstance(value, float | np.floating):
        raise InvalidId(
            f"{value!r} is a float, which cannot hold a 64-bit id exactly; "
            "read ids as int or str"
        )
    try:
        number = int(value)
    except (TypeError, ValueError) as err:
        raise InvalidId(f"{value!r} is not a GemstoneID (not an integer)") from err
    if not 0 <= number <= _U64_MAX:
        raise InvalidId(
            f"{value!r} is not a GemstoneID: it must be between 0 and 2**64 - 1"
        )
    return number


def _series_values(series: pd.Series) -> Any:
    if series.hasnans:
        raise InvalidId(
            f"a missing value in {series.name!r} is not a GemstoneID; "
            "drop missing ids first"
        )
    if str(series.dtype) in {"UInt64", "uint64"}:
        return series.to_numpy(dtype=np.uint64)
    return series.to_numpy()


def _check_range(name: str, value: int, maximum: int) -> None:
    if not 0 <= value <= maximum:
        raise InvalidId(f"{name}={value} is out of range 0..{maximum}")


def _encode_debug(priority: int, timestamp: int, sequence: int) -> str:
    _check_range("timestamp", timestamp, (1 << _DEBUG_TS_BITS) - 1)
    _check_range("priority", priority, 0xFF)
    _check_range("sequence", sequence, 0x3FFF)
    number = (timestamp << 22) | (priority << 14) | sequence
    return base64.urlsafe_b64encode(number.to_bytes(8, "big")).decode().rstrip("=")


def _decode_debug(value: Any) -> IdParts:
    text = str(value)
    if not _DEBUG_PATTERN.fullmatch(text):
        raise InvalidId(
            f"{value!r} is not a GemstoneID: neither decimal digits nor "
            "11 base64url characters (Rustic Debug layout)"
        )
    try:
        raw = base64.urlsafe_b64decode(text + "=")
    except (binascii.Error, ValueError) as err:  # pragma: no cover - pattern checked
        raise InvalidId(f"{value!r} is not a Rustic Debug id: not base64url") from err
    number = int.from_bytes(raw, "big")
    return IdParts(
        id=number,
        priority=(number >> 14) & 0xFF,
        timestamp=number >> 22,
        machine_id=0,
        sequence=number & 0x3FFF,
        layout="rustic-debug",
    )

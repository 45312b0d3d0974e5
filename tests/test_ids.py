"""GemstoneID decoding and encoding, in both layouts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import rdebug_nb as rd
from rdebug_nb.ids import RUSTICAI_EPOCH_MS, to_uint64

# Worked examples from the layout description, decoded with RusticAI's own code.
WORKED = [
    (2824971229302112256, 1, 1796301012605, 4, 0),
    (7436657122877640704, 3, 1796300982838, 1, 0),
    (9742500132942774272, 4, 1796300983041, 0, 0),
]


@pytest.mark.parametrize(("value", "priority", "stamp", "machine", "seq"), WORKED)
def test_decode_id_matches_worked_examples(
    value: int, priority: int, stamp: int, machine: int, seq: int
) -> None:
    parts = rd.decode_id(value)

    assert (parts.priority, parts.timestamp, parts.machine_id, parts.sequence) == (
        priority,
        stamp,
        machine,
        seq,
    )
    assert rd.decode_id(str(value)) == parts
    assert rd.encode_id(priority, stamp, machine, seq) == value


def test_ids_at_and_above_2_63_decode_exactly() -> None:
    top = (1 << 64) - 1
    parts = rd.decode_id(top)

    assert parts.id == top
    assert parts.priority == 7
    assert parts.sequence == 0xFFF
    assert parts.timestamp == ((1 << 39) - 1) + RUSTICAI_EPOCH_MS


def test_decode_ids_is_exact_for_values_that_floats_would_round() -> None:
    values = [9742500132942774272, 9742500132942774273, (1 << 63) + 1]

    frame = rd.decode_ids(values)

    assert frame["id"].dtype == "UInt64"
    assert [int(v) for v in frame["id"]] == values
    assert frame["sequence"].tolist() == [0, 1, 1]


def test_decode_ids_agrees_with_decode_id_on_random_values() -> None:
    rng = np.random.default_rng(7)
    values = rng.integers(0, 2**64 - 1, size=2000, dtype=np.uint64, endpoint=True)

    frame = rd.decode_ids(values)

    for row, value in zip(frame.itertuples(), values.tolist(), strict=True):
        parts = rd.decode_id(value)
        assert (row.priority, row.timestamp_ms, row.machine_id, row.sequence) == (
            parts.priority,
            parts.timestamp,
            parts.machine_id,
            parts.sequence,
        )


def test_decode_ids_accepts_series_of_uint64() -> None:
    series = pd.Series(pd.array([9742500132942774272], dtype="UInt64"), name="id")

    assert rd.decode_ids(series)["priority_name"].tolist() == ["NORMAL"]


@pytest.mark.parametrize(
    "bad",
    [-1, 1 << 64, 9.742500132942774e18, "12ab", None, True, "", "x" * 11 + "!"],
    ids=["negative", "65-bit", "float", "junk", "none", "bool", "empty", "bad-b64"],
)
def test_impossible_values_raise_an_error_naming_them(bad: object) -> None:
    with pytest.raises(rd.InvalidId) as caught:
        rd.decode_id(bad)  # type: ignore[arg-type]

    assert repr(bad)[:20] in str(caught.value)


def test_decode_ids_names_the_bad_value() -> None:
    with pytest.raises(rd.InvalidId, match="-5"):
        rd.decode_ids([1, -5])
    with pytest.raises(rd.InvalidId, match="float"):
        to_uint64([1.0])


def test_rustic_debug_layout_is_detected_for_base64url() -> None:
    text = rd.encode_id(200, 1796300983041, sequence=9000, layout="rustic-debug")

    parts = rd.decode_id(str(text))

    assert len(str(text)) == 11
    assert parts.layout == "rustic-debug"
    assert (parts.priority, parts.timestamp, parts.sequence) == (
        200,
        1796300983041,
        9000,
    )


@pytest.mark.parametrize(
    ("part", "kwargs"),
    [
        ("priority", {"priority": 8, "timestamp": RUSTICAI_EPOCH_MS}),
        ("timestamp", {"priority": 0, "timestamp": RUSTICAI_EPOCH_MS - 1}),
        (
            "machine_id",
            {"priority": 0, "timestamp": RUSTICAI_EPOCH_MS, "machine_id": 1024},
        ),
        ("sequence", {"priority": 0, "timestamp": RUSTICAI_EPOCH_MS, "sequence": 4096}),
    ],
)
def test_encode_id_rejects_out_of_range_parts(
    part: str, kwargs: dict[str, int]
) -> None:
    with pytest.raises(rd.InvalidId, match=part):
        rd.encode_id(
            kwargs["priority"],
            kwargs["timestamp"],
            kwargs.get("machine_id", 0),
            kwargs.get("sequence", 0),
        )

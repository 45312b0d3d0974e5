"""The fact checks that the curated notebooks' runs go through.

The notebooks themselves run under nbval (``notebooks/conftest.py``): each
cell tagged ``fact-<name>`` is checked there by :mod:`tests.notebook_facts`
against the raw capture. Here the checker is fed what the notebooks' fact cells
show, computed by the toolkit for every guild of the capture: it must accept
the right outputs for any guild, and reject each one with a wrong number.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import rdebug_nb as rd
from rdebug_nb.report import NOTEBOOK_DIR
from rdebug_nb.tail import Reconciliation
from tests.notebook_facts import (
    CHECKS,
    Capture,
    FactMismatch,
    Run,
    Shown,
    check_fact,
    load_capture,
)

Output = dict[str, Any]
Cell = Callable[[rd.Bus, str, bool, Path], list[Output]]
DEFAULT_GUILD = "orders-pipeline-01"
LIVE = 17


@pytest.fixture(scope="module")
def raw(capture: Path) -> Capture:
    return load_capture(capture / "keyspace.jsonl")


@pytest.fixture(scope="module")
def offline(capture: Path) -> Iterator[rd.Bus]:
    with rd.open_snapshot(capture / "keyspace.jsonl", progress=False) as bus:
        yield bus


def shown(frame: Any = None, *, printed: str = "") -> list[Output]:
    """Outputs as a kernel sends them: a printed line, then a displayed object."""
    outputs: list[Output] = []
    if printed:
        outputs.append({"output_type": "stream", "name": "stdout", "text": printed})
    if frame is not None:
        data = {"text/plain": repr(frame)}
        if hasattr(frame, "_repr_html_"):
            data["text/html"] = frame._repr_html_()
        outputs.append({"output_type": "execute_result", "data": data})
    return outputs


def first(frame: pd.DataFrame, column: str, where: pd.Series | None = None) -> None:
    """Add one to the first (matching) row of a column."""
    index = frame.index[where][0] if where is not None else frame.index[0]
    frame.loc[index, column] += 1


# Each cell computes what the notebook's fact cell shows; wrong=True changes one
# number of it.


def guilds_cell(bus: rd.Bus, guild: str, wrong: bool, tmp: Path) -> list[Output]:
    table = bus.guilds()
    if wrong:
        first(table, "messages", table["namespace"] == guild)
    return shown(table)


def summary_cell(bus: rd.Bus, guild: str, wrong: bool, tmp: Path) -> list[Output]:
    summary = rd.summarize(bus.messages(guild))
    if wrong:
        summary["deliveries"] += 1
    return shown(summary.to_frame(guild))


def edges_cell(bus: rd.Bus, guild: str, wrong: bool, tmp: Path) -> list[Output]:
    edges = rd.to_edge_table(rd.flow_graph(bus.messages(guild)))
    if wrong:
        first(edges, "count", edges["relation"] == "deliver")
    columns = ["from", "to", "relation", "count", "errors", "p50_ms", "p95_ms"]
    return shown(edges[columns].head(40))


def trace_cell(bus: rd.Bus, guild: str, wrong: bool, tmp: Path) -> list[Output]:
    msgs = bus.messages(guild)
    message_id = int(msgs.sort_values(["hop_count", "timestamp"]).iloc[-1]["id"])
    chain = rd.trace(msgs, message_id)
    depth = chain["depth"].max() - (1 if wrong else 0)
    printed = f"{len(chain)} messages in the chain of {message_id}, {depth} hops deep\n"
    return shown(chain, printed=printed)


def error_groups_cell(bus: rd.Bus, guild: str, wrong: bool, tmp: Path) -> list[Output]:
    groups = rd.errors(bus.messages(guild)).groups
    if wrong:
        first(groups, "deliveries")
    return shown(groups)


def dead_letters_cell(bus: rd.Bus, guild: str, wrong: bool, tmp: Path) -> list[Output]:
    letters = rd.errors(bus.messages(guild)).dead_letters
    if wrong:
        letters = letters.iloc[1:]
    return shown(letters, printed=f"{len(letters)} dead letters\n")


def reconcile_cell(bus: rd.Bus, guild: str, wrong: bool, tmp: Path) -> list[Output]:
    lost = 1 if wrong else 0
    missing = pd.DataFrame(
        {"topic": ["orders.in"] * lost, "id": [1] * lost, "timestamp_ms": [5] * lost}
    )
    arrived = LIVE - lost
    check = Reconciliation(0, 9, LIVE, arrived, arrived, missing, missing.iloc[:0])
    return shown(check)


def offline_cell(bus: rd.Bus, guild: str, wrong: bool, tmp: Path) -> list[Output]:
    msgs = bus.messages(guild)
    failed = msgs[msgs["is_error"]]
    parents = set(failed["in_response_to"].dropna().astype("uint64").tolist())
    selection = msgs[msgs["is_error"] | msgs["id"].isin(parents)]
    path = tmp / "export.jsonl"
    with warnings.catch_warnings():
        # the notebook shows this warning about re-serialised lines; ids are kept
        warnings.simplefilter("ignore", rd.RdebugWarning)
        rd.to_jsonl(selection.iloc[1:] if wrong else selection, path, source=bus.url)
    again = rd.read_jsonl(path)
    printed = f"identical ids: {again['id'].tolist() == selection['id'].tolist()}\n"
    return shown(rd.open_snapshot(path, progress=False).guilds(), printed=printed)


CELLS: dict[str, Cell] = {
    "guilds": guilds_cell,
    "summary": summary_cell,
    "edges": edges_cell,
    "trace": trace_cell,
    "error-groups": error_groups_cell,
    "dead-letters": dead_letters_cell,
    "reconcile": reconcile_cell,
    "offline": offline_cell,
}
FACTS = sorted(CELLS)
GUILDS = [
    "Ht4PqZr8wKd2VnXy6sTbLm",
    "Jd8LbR2hFv6KwZ4yMq9TxC",
    "Qm3sYv7TzA9cXe2RkWpN5d",
    "acme:support:echo",
    "faulty-workers",
    "orders-pipeline-01",
]


def fact_tags() -> dict[str, str]:
    """Each ``fact-*`` tag of the curated notebooks, with its notebook."""
    found = {}
    for path in sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            for tag in cell["metadata"].get("tags", []):
                if tag.startswith("fact-"):
                    found[tag.removeprefix("fact-")] = path.name
    return found


def test_every_fact_tag_has_a_check_and_a_cell_here() -> None:
    assert set(fact_tags()) == set(CHECKS) == set(CELLS)


def test_the_default_guild_is_the_one_with_most_messages(raw: Capture) -> None:
    assert raw.default_guild() == DEFAULT_GUILD
    assert len(raw.messages_of(DEFAULT_GUILD)) == 577
    assert raw.keys == 1148


@pytest.mark.parametrize("guild", GUILDS)
@pytest.mark.parametrize("fact", FACTS)
def test_the_right_output_passes_for_every_guild(
    fact: str, guild: str, offline: rd.Bus, raw: Capture, tmp_path: Path
) -> None:
    outputs = CELLS[fact](offline, guild, False, tmp_path)
    run = Run(fact_tags()[fact], guild, LIVE)

    check_fact(fact, outputs, run, raw)


@pytest.mark.parametrize("fact", FACTS)
def test_a_wrong_number_fails(
    fact: str, offline: rd.Bus, raw: Capture, tmp_path: Path
) -> None:
    outputs = CELLS[fact](offline, DEFAULT_GUILD, True, tmp_path)
    run = Run(fact_tags()[fact], DEFAULT_GUILD, LIVE)

    with pytest.raises(FactMismatch):
        check_fact(fact, outputs, run, raw)


def test_a_fact_needs_the_guild_the_notebook_printed(
    offline: rd.Bus, raw: Capture, tmp_path: Path
) -> None:
    outputs = summary_cell(offline, DEFAULT_GUILD, False, tmp_path)

    with pytest.raises(FactMismatch, match="printed no guild"):
        check_fact("summary", outputs, Run("01_guild_overview.ipynb"), raw)
    with pytest.raises(FactMismatch, match="messages"):
        check_fact("summary", outputs, Run("x", "faulty-workers"), raw)


def test_an_unknown_fact_fails(raw: Capture) -> None:
    with pytest.raises(FactMismatch, match="no check for fact-colour"):
        check_fact("colour", [], Run("x", DEFAULT_GUILD), raw)


@pytest.mark.parametrize(("name", "key"), [(None, ""), ("topic", "topic")])
def test_tables_are_read_from_html_with_the_index_column(
    name: str | None, key: str
) -> None:
    frame = pd.DataFrame({"count": [3, 4]}, index=pd.Index(["a <b>", "c"], name=name))

    table = Shown.from_outputs(shown(frame)).table()

    assert table == [{key: "a <b>", "count": "3"}, {key: "c", "count": "4"}]

"""Run the curated notebooks under nbval against the real capture, and check facts.

``pytest --nbval-lax`` (set in pyproject.toml) makes each code cell of each
notebook here a test item, run in order in one kernel per notebook, with the
notebook's own parameters: only ``RDEBUG_REDIS_URL`` is set, to an embedded
server holding the capture (``tests/notebook_session.py``). So the notebooks run
exactly as a user runs them against their own server.

After a cell tagged ``fact-<name>`` runs, its output is checked against the raw
capture (``tests/notebook_facts.py``); a wrong number fails that cell's item.
Before a cell tagged ``live-traffic`` runs, messages are published into the
guild the notebook announced, so the live tail has traffic to show.

``notebooks/tests/`` holds notebooks that other tests drive; nbval skips them.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import pytest
from nbval.plugin import IPyNbCell, NbCellError  # type: ignore[import-untyped]

from tests.notebook_facts import (
    KEYSPACE,
    FactMismatch,
    Run,
    Shown,
    check_fact,
    find_guild,
    load_capture,
)
from tests.notebook_session import TRAFFIC_TAG, NotebookServer

collect_ignore = ["tests"]

_SERVER = pytest.StashKey[NotebookServer]()


@dataclass
class _Notebook:
    """What one notebook printed so far, and the traffic it was sent."""

    printed: list[str] = field(default_factory=list)
    live_deliveries: int = 0


_NOTEBOOK = pytest.StashKey[_Notebook]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before a notebook's first cell (and its kernel): the server, the capture."""
    if not isinstance(item, IPyNbCell) or _NOTEBOOK in item.parent.stash:
        return
    server = item.config.stash.get(_SERVER, None)
    if server is None:
        if not KEYSPACE.exists():
            pytest.fail(
                f"the fixture capture is missing at {KEYSPACE}; set RDEBUG_SHARED"
            )
        server = item.config.stash[_SERVER] = NotebookServer(KEYSPACE)
        item.config.add_cleanup(server.stop)
        server.start()
    server.restore()
    item.parent.stash[_NOTEBOOK] = _Notebook()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    if not isinstance(item, IPyNbCell):
        return (yield)
    notebook = item.parent.stash[_NOTEBOOK]
    tags = item.cell.metadata.get("tags", [])
    if TRAFFIC_TAG in tags:
        tailed = _guild(item, notebook)
        notebook.live_deliveries += item.config.stash[_SERVER].publish(tailed)
    result = yield
    guild = find_guild("".join(notebook.printed))
    run = Run(item.parent.path.name, guild, notebook.live_deliveries)
    for tag in tags:
        if tag.startswith("fact-"):
            _check(item, tag.removeprefix("fact-"), run)
    notebook.printed += [
        o["text"] for o in item.test_outputs if o.get("output_type") == "stream"
    ]
    return result


def _guild(item: IPyNbCell, notebook: _Notebook) -> str:
    guild = find_guild("".join(notebook.printed))
    if guild is None:
        raise NbCellError(item.cell_num, "no guild printed before", item.cell.source)
    return guild


def _check(item: IPyNbCell, fact: str, run: Run) -> None:
    try:
        check_fact(fact, item.test_outputs, run, load_capture(KEYSPACE))
    except FactMismatch as err:
        shown = Shown.from_outputs(item.test_outputs).text
        message = f"fact-{fact} is wrong on {run.guild}: {err}\n\nOutput:\n{shown}"
        raise NbCellError(item.cell_num, message, item.cell.source) from err

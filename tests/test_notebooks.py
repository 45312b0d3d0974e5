"""Every curated notebook, executed top to bottom against the real capture.

Each notebook runs with papermill in a real kernel, with its parameters pointing at
a server that holds the capture. Cells tagged ``fact-<name>`` state a fact about
the data; their outputs are checked here against numbers taken from the capture
itself (its README or its raw JSON), so a wrong number fails the test.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest

import rdebug_nb as rd
from rdebug_nb.report import NOTEBOOK_DIR, run_notebook

NOTEBOOKS = sorted(path.name for path in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
GUILD_OF = {
    "01_guild_overview.ipynb": "orders-pipeline-01",
    "02_message_flow.ipynb": "orders-pipeline-01",
    "03_trace_message.ipynb": "orders-pipeline-01",
    "04_errors_and_latency.ipynb": "faulty-workers",
    "05_live_tail.ipynb": "acme:support:echo",
    "06_export_and_replay.ipynb": "faulty-workers",
}


@pytest.fixture(scope="module")
def capture_url(valkey_url: str, capture: Path) -> str:
    """A database of the embedded server holding the capture, for the kernels."""
    url = valkey_url.replace("/0", "/13")
    with rd.connect(url, progress=False) as bus:
        bus.client.flushdb()
        bus.load_snapshot(capture / "keyspace.jsonl", expiry="restart")
    return url


def facts(notebook: nbformat.NotebookNode) -> dict[str, str]:
    """The text output of each ``fact-*`` cell, by fact name."""
    found = {}
    for cell in notebook.cells:
        for tag in cell.metadata.get("tags", []):
            if tag.startswith("fact-"):
                found[tag.removeprefix("fact-")] = output_text(cell)
    return found


def output_text(cell: nbformat.NotebookNode) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(output["text"])
        elif "data" in output:
            parts.append(output["data"].get("text/plain", ""))
            parts.append(output["data"].get("text/html", ""))
    return "\n".join(parts)


def number_after(label: str, text: str) -> int:
    match = re.search(rf"^{re.escape(label)}\s+(\d+)", text, re.M)
    assert match, f"{label!r} not in {text!r}"
    return int(match.group(1))


def raw_messages(capture: Path, namespace: str) -> list[dict[str, Any]]:
    """Distinct messages of a namespace, parsed from the raw keyspace file."""
    found: dict[int, dict[str, Any]] = {}
    with (capture / "keyspace.jsonl").open("rb") as handle:
        for line in handle:
            body = json.loads(line)
            if body["type"] != "zset":
                continue
            for member, _ in body["value"]:
                message = json.loads(member)
                topic = message["topic_published_to"] or "dead_letter_queue"
                if body["key"] == f"{namespace}:{topic}":
                    found.setdefault(message["id"], message)
    return list(found.values())


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom(
    name: str, capture_url: str, capture: Path, tmp_path: Path
) -> None:
    params = {"redis_url": capture_url, "guild_id": GUILD_OF[name]}
    if name.startswith("06"):
        params["export_dir"] = str(tmp_path / "exports")

    executed = run_notebook(name, params, out=tmp_path / name)

    errors = [
        output
        for cell in executed.cells
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert errors == []
    assert all(
        cell.get("execution_count")
        for cell in executed.cells
        if cell.cell_type == "code"
    )
    check_facts(name, facts(executed), capture)


def check_facts(name: str, found: dict[str, str], capture: Path) -> None:
    guild = GUILD_OF[name]
    messages = raw_messages(capture, guild)
    if name.startswith("01"):
        summary = found["summary"]
        assert number_after("messages", summary) == len(messages) == 577
        assert number_after("deliveries", summary) == 659
        errors = sum(1 for m in messages if m["is_error_message"])
        assert number_after("errors", summary) == errors
        assert number_after("dead_letters", summary) == 1
        assert found["guilds"].count("\n") >= 7
    elif name.startswith("02"):
        # every later message repeats the history: count each delivered message once
        hops = len(
            {
                hop["origin"]
                for m in messages
                for hop in m["message_history"]
                if hop["from_topic"] == "orders.in"
                and hop["agent"]["id"] == "validator"
            }
        )
        rows = re.findall(r"<tr>.*?</tr>", found["edges"], re.S)
        row = next(r for r in rows if ">orders.in<" in r and ">validator<" in r)
        assert f"<td>{hops}</td>" in row
    elif name.startswith("03"):
        longest = max(len(m["message_history"]) for m in messages)
        deep = re.search(
            r"(\d+) messages in the chain, (\d+) hops deep", found["trace"]
        )
        assert deep
        assert longest == 6
        assert int(deep.group(2)) == longest
        assert int(deep.group(1)) >= longest + 1
    elif name.startswith("04"):
        dead = [m for m in messages if m["sender"]["id"] == "messaging_backend"]
        assert f"{len(dead)} dead letters" in found["dead-letters"]
        assert len(dead) == 4
        assert found["error-groups"].strip()
    elif name.startswith("05"):
        assert "<Reconciliation ok" in found["reconcile"]
        assert "missing 0, extra 0" in found["reconcile"]
    elif name.startswith("06"):
        assert "identical ids: True" in found["offline"]

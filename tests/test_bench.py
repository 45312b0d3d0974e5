"""The benchmark harness still runs: its quick mode, end to end, makes every row.

No timing is asserted; the numbers belong to ``bench/README.md`` (``make bench``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.run import README
from bench.tables import TARGETS, expected_rows
from tests.servers import redis_server_available

pytestmark = pytest.mark.redis_server

ROOT = Path(__file__).resolve().parents[1]


def first_cells(table: str) -> list[str]:
    """The first cell of every Markdown table row."""
    return [
        line.split("|")[1].strip()
        for line in table.splitlines()
        if line.startswith("| ") and not line.startswith("| ---")
    ]


def test_quick_run_makes_a_table_with_every_row(tmp_path: Path) -> None:
    if not redis_server_available():
        pytest.skip("Debian's redis-server is not installed")
    from bench.run import QUICK

    output = tmp_path / "table.md"
    readme_before = README.read_text(encoding="utf-8")

    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    table = output.read_text(encoding="utf-8")
    cells = first_cells(table)
    missing = [row for row in expected_rows(QUICK) if row not in cells]
    assert missing == []
    assert len([c for c in cells if c in {name for name, _ in TARGETS}]) == len(TARGETS)
    assert "Traceback" not in table
    assert "redis-server" in table.splitlines()[0]
    assert README.read_text(encoding="utf-8") == readme_before  # quick never writes


def test_the_readme_keeps_its_result_markers() -> None:
    from bench.run import END, START

    text = README.read_text(encoding="utf-8")
    assert text.count(START) == 1
    assert text.count(END) == 1
    assert text.index(START) < text.index(END)

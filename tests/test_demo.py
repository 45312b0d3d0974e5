"""The README's main job: ``rdebug-nb demo`` end to end, as a user runs it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp("demo") / "demo-report.html"
    command = [sys.executable, "-m", "rdebug_nb.cli", "demo", "--out", str(out)]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "without encryption" not in done.stderr  # kernel start-up noise
    return done.stdout, out


def test_demo_prints_a_summary(demo_run: tuple[str, Path]) -> None:
    stdout, out = demo_run

    assert re.search(r"^guild\s+demo-orders", stdout, re.M)
    assert re.search(r"^topics\s+\d+", stdout, re.M)
    assert re.search(r"^messages\s+\d+ \(\d+ stored copies\)", stdout, re.M)
    assert re.search(
        r"^errors\s+\d+ error messages \(\d+ of them dead letters\)", stdout, re.M
    )
    assert str(out) in stdout


def test_demo_report_exists_and_names_the_guild(demo_run: tuple[str, Path]) -> None:
    _, out = demo_run
    page = out.read_text(encoding="utf-8")

    assert out.stat().st_size > 100_000
    assert "demo-orders" in page
    assert "Guild overview" in page
    assert 'class="rdebug-toc"' in page
    assert not re.search(r'<script[^>]+src="https?://', page)
    assert "Traceback" not in page

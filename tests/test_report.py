"""The HTML report: built from every curated notebook against the capture, then
opened in headless Chromium with the network cut off, as the person it is mailed
to would open it."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

import rdebug_nb as rd
from rdebug_nb.cli import main
from rdebug_nb.report import NOTEBOOK_DIR, build_report, parameter_table, scrub_secrets

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
REPORTED = (
    "01_guild_overview.ipynb",
    "02_message_flow.ipynb",
    "04_errors_and_latency.ipynb",
)


@pytest.fixture(scope="module")
def capture_url(valkey_url: str, capture: Path) -> str:
    """URL of a database of the embedded server holding the capture."""
    url = valkey_url.replace("/0", "/12")
    with rd.connect(url, progress=False) as bus:
        bus.client.flushdb()
        bus.load_snapshot(capture / "keyspace.jsonl", expiry="restart", force=True)
    return url


@pytest.fixture(scope="module")
def report(capture_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    params = {"redis_url": capture_url, "guild_id": "orders-pipeline-01"}
    build_report(REPORTED, out, params, title="orders-pipeline-01")
    return out


def page_text(path: Path) -> str:
    """The text a reader of the page sees: no scripts, styles or tags."""
    page = path.read_text(encoding="utf-8")
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


def test_the_report_is_one_self_contained_file(report: Path) -> None:
    page = report.read_text(encoding="utf-8")

    assert not re.search(r'<(script|link|img)[^>]+(src|href)="(https?:)?//', page)
    assert page.count("Plotly.newPlot") >= 6
    assert 'class="rdebug-toc"' in page
    assert "<th>guild_id</th><td><code>&#x27;orders-pipeline-01&#x27;</code>" in page
    for title in ("Guild overview", "Message flow", "Errors and latency"):
        assert f'href="#{title.replace(" ", "-")}"' in page


@pytest.mark.browser
def test_the_report_renders_offline_in_chromium(report: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    requests: list[str] = []
    console: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(
            offline=True, viewport={"width": 1400, "height": 1200}
        )
        page = context.new_page()
        page.on("request", lambda r: requests.append(r.url))
        page.on(
            "console",
            lambda m: (
                console.append(f"{m.type}: {m.text}") if m.type == "error" else None
            ),
        )
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        page.goto(report.as_uri(), wait_until="load")
        page.wait_for_function(
            "document.querySelectorAll('.js-plotly-plot').length >= 6"
        )
        plots = page.eval_on_selector_all(
            ".js-plotly-plot",
            "els => els.map(e => e.querySelectorAll('svg.main-svg').length)",
        )
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=False)
        browser.close()

    assert len(plots) >= 6
    assert all(count > 0 for count in plots)
    assert console == []
    assert [url for url in requests if not url.startswith("file://")] == []


def test_parameters_are_escaped_and_passwords_hidden() -> None:
    table = parameter_table(
        {"guild_id": "<script>x</script>", "redis_url": "redis://u:pw1@h/0"}
    )

    assert "<script>" not in table
    assert "&lt;script&gt;" in table
    assert "pw1" not in table
    assert scrub_secrets("a pw1 b", {"redis_url": "redis://u:pw1@h/0"}) == "a *** b"


def test_every_curated_notebook_is_committed_without_outputs() -> None:
    import nbformat

    for path in sorted(NOTEBOOK_DIR.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert all(
            not cell.outputs and cell.execution_count is None for cell in code
        ), path
        tags = [cell.metadata.get("tags", []) for cell in code]
        assert sum("parameters" in t for t in tags) == 1, path


WINDOWS = {
    "empty": (
        "2030-01-01",
        [
            "orders-pipeline-01: 0 messages",
            "The time window holds no message of this guild",
            "No messages in the window: no traffic to draw.",
            "No messages in the window: no flow graph to draw.",
            "No message to trace: the time window holds none.",
            "0 error deliveries in 0 groups, 0 dead letters",
            "No message of the window records a hop",
        ],
    ),
    "one message": (
        "2026-12-03T12:30:22.4",
        [
            "orders-pipeline-01: 1 messages",
            "2 messages in the chain of 9742500298143825920",
            "1 error deliveries in 1 groups, 1 dead letters",
            "No message of the window records a hop: there is no latency to show.",
            "No hop latency was measured in the window: nothing to draw.",
        ],
    ),
}


@pytest.mark.parametrize("window", sorted(WINDOWS))
def test_a_report_of_a_small_window_says_what_it_lacks(
    window: str, capture_url: str, tmp_path: Path
) -> None:
    since, sentences = WINDOWS[window]
    out = tmp_path / "report.html"

    status = main(
        [
            "report",
            "--redis-url",
            capture_url,
            "--guild",
            "orders-pipeline-01",
            "--since",
            since,
            "--out",
            str(out),
        ]
    )

    assert status == 0
    text = page_text(out)
    assert [s for s in sentences if s not in text] == []
    drawn = out.read_text(encoding="utf-8").count("Plotly.newPlot")
    assert drawn == 0 if window == "empty" else drawn >= 6


def test_a_report_of_a_server_without_guilds_says_so(
    valkey_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = valkey_url.replace("/0", "/11")
    with rd.connect(url, progress=False) as bus:
        bus.client.flushdb()
    out = tmp_path / "report.html"

    status = main(["report", "--redis-url", url, "--out", str(out)])

    assert status == 1
    assert not out.exists()
    error = capsys.readouterr().err
    assert "GuildNotFound: the server holds no guild" in error
    assert "rd.open_snapshot(path)" in error

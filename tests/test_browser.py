"""The widgets in a real browser: JupyterLab 4 and headless Chromium.

The suite seeds an embedded server with the RusticAI capture, starts JupyterLab
on a copy of ``notebooks/tests/browser_inspector.ipynb`` with ``RDEBUG_REDIS_URL``
pointing at it, runs all cells in Chromium, checks the inspector's rows, publishes
new messages and waits for them in the tail, clicks a row and reads its payload,
then saves the notebook, exports it with nbconvert and checks the static fallback
in the exported page. Screenshots and the export are kept under ``artifacts/``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import msgspec
import nbformat
import pandas as pd
import pytest
import redis
from nbconvert import HTMLExporter
from playwright.sync_api import Page, expect, sync_playwright

from rdebug_nb._query import MessageFilter, filter_messages
from rdebug_nb.bus import Bus
from rdebug_nb.ids import encode_id
from rdebug_nb.server import EmbeddedServer
from tests.servers import free_port
from tests.test_tail import make_member, publish, server_ms

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "tests" / "browser_inspector.ipynb"
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TOKEN = "rdebug-browser-test"  # the server listens on loopback only
GUILD = "orders-pipeline-01"
LIVE_GUILD = "browser-live"
QUERY = 'payload.order_id == "ORD-0001"'
STEP = 60_000  # milliseconds Playwright waits for one step
STARTED = re.compile(r"\[(\*|\d+)\]")
SETTINGS = {
    # every cell stays in the page, so outputs below the fold can be found
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
        "windowingMode": "none",
        "autoStartDefaultKernel": True,
    },
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


@pytest.fixture(scope="module")
def seeded(capture: Path) -> Iterator[Bus]:
    """A Bus on an embedded server holding the capture."""
    server = EmbeddedServer().start()
    client = redis.Redis.from_url(server.url)
    bus = Bus(client, url=server.url, progress=False)
    bus.load_snapshot(capture / "keyspace.jsonl", expiry="restart", force=True)
    yield bus
    client.close()
    server.stop()


@pytest.fixture(scope="module")
def lab(
    seeded: Bus, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """JupyterLab serving a copy of the test notebook; yields (base URL, dir)."""
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed at /usr/bin/chromium")
    home = tmp_path_factory.mktemp("lab")
    shutil.copy(NOTEBOOK, home / NOTEBOOK.name)
    settings = home / ".settings"
    for name, values in SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port = free_port()
    env = dict(
        os.environ,
        RDEBUG_REDIS_URL=seeded_url(seeded),
        RDEBUG_INSPECT_GUILD=GUILD,
        RDEBUG_INSPECT_QUERY=QUERY,
        RDEBUG_LIVE_GUILD=LIVE_GUILD,
        JUPYTER_CONFIG_DIR=str(home / ".config"),
        JUPYTER_RUNTIME_DIR=str(home / ".runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(home / ".workspaces"),
        IPYTHONDIR=str(home / ".ipython"),
    )
    command = [
        str(Path(sys.executable).parent / "jupyter"),
        "lab",
        "--no-browser",
        f"--IdentityProvider.token={TOKEN}",
        "--allow-root",  # CI containers often run as root
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.root_dir={home}",
    ]
    log = home / "lab.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, cwd=home, env=env, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_lab(base, process, log)
        yield base, home
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def seeded_url(bus: Bus) -> str:
    kwargs = bus.client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/0"


def wait_for_lab(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"JupyterLab exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    pytest.fail(f"JupyterLab did not answer:\n{log.read_text()[-3000:]}")


def run_all_cells(page: Page) -> None:
    """Run > Run All Cells, again if the kernel was not ready to take it."""
    first = page.locator(".jp-CodeCell .jp-InputPrompt").first
    for _ in range(6):
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        try:
            expect(first).to_have_text(STARTED, timeout=5000)
        except AssertionError:
            continue
        return
    pytest.fail("the notebook's cells never started running")


def save_notebook(page: Page) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text="File").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Save Notebook").first.click()


def wait_for_saved(path: Path, marker: str) -> nbformat.NotebookNode:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if marker in path.read_text():
            saved: nbformat.NotebookNode = nbformat.reads(  # type: ignore[no-untyped-call]
                path.read_text(), as_version=4
            )
            return saved
        time.sleep(0.2)
    pytest.fail(f"{path} was not saved with its outputs")


def live_members(bus: Bus, count: int) -> list[tuple[str, bytes]]:
    now = server_ms(bus.client)
    return [
        (
            "orders.in",
            make_member(
                "orders.in",
                int(encode_id(4, now, machine_id=9, sequence=i)),
                now,
                {
                    "order_id": f"LIVE-{i}",
                    "note": "<b>published by the browser test</b>",
                },
            ),
        )
        for i in range(count)
    ]


def test_inspector_tail_and_export_in_a_real_browser(
    lab: tuple[str, Path], seeded: Bus
) -> None:
    base, home = lab
    expected = filter_messages(seeded.messages(GUILD), MessageFilter(query=QUERY))
    ARTIFACTS.mkdir(exist_ok=True)
    expect.set_options(timeout=STEP)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1600, "height": 2000})
        page.set_default_timeout(STEP)
        try:
            check_live_notebook(
                page, f"{base}/lab/tree/{NOTEBOOK.name}", seeded, expected
            )
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "browser-failure.png"))
            raise
        saved = wait_for_saved(home / NOTEBOOK.name, "rdebug-inspector-static")
        exporter = HTMLExporter()  # type: ignore[no-untyped-call]
        html, _ = exporter.from_notebook_node(saved)
        export = ARTIFACTS / "browser-inspector.html"
        export.write_text(html)
        check_export(browser.new_page(), export, expected)
        browser.close()


def check_live_notebook(
    page: Page, url: str, seeded: Bus, expected: pd.DataFrame
) -> None:
    """Run the notebook in JupyterLab and use the widgets; save it at the end."""
    wanted = [str(int(mid)) for mid in expected["id"]]
    page.goto(f"{url}?token={TOKEN}")
    cells = len(nbformat.read(NOTEBOOK, as_version=4).cells)  # type: ignore[no-untyped-call]
    expect(page.locator(".jp-Notebook .jp-Cell")).to_have_count(cells)
    kernel = page.locator(".jp-StatusBar-TextItem", has_text="Python 3")
    expect(kernel).to_contain_text("Idle")
    run_all_cells(page)

    inspector = page.locator(".rdebug-inspector").first
    options = inspector.locator(".rdebug-rows select option")
    expect(options).to_have_count(len(wanted))
    assert [label.split()[1] for label in options.all_inner_texts()] == wanted
    expect(page.locator(".rdebug-inspector-static")).to_have_count(0)

    tail = page.locator(".rdebug-tail").first
    expect(tail.locator(".rdebug-tail-table")).to_be_visible()
    members = live_members(seeded, 3)
    publish(seeded.client, LIVE_GUILD, members)
    for _, member in members:
        expect(tail).to_contain_text(str(msgspec.json.decode(member)["id"]))
    expect(tail).to_contain_text("received 3")
    expect(tail).to_contain_text("<b>published by the browser test</b>")
    expect(tail.locator("td b")).to_have_count(0)  # shown as text, escaped

    clicked = expected.iloc[2]
    inspector.locator(".rdebug-rows select option", has_text=wanted[2]).click()
    detail = inspector.locator(f'.rdebug-message[data-message-id="{wanted[2]}"]')
    expect(detail).to_be_visible()
    expect(detail).to_contain_text(clicked["payload"]["order_id"])
    expect(detail).to_contain_text(str(clicked["sender_id"]))
    inspector.locator(".rdebug-rows").evaluate("e => e.scrollIntoView()")
    page.screenshot(path=str(ARTIFACTS / "browser-inspector.png"))
    tail.screenshot(path=str(ARTIFACTS / "browser-tail.png"))
    save_notebook(page)


def check_export(page: Page, export: Path, expected: pd.DataFrame) -> None:
    """The exported page shows the static table and the message selected first."""
    wanted = [str(int(mid)) for mid in expected["id"]]
    page.set_default_timeout(STEP)
    page.goto(export.as_uri(), wait_until="domcontentloaded")
    static = page.locator(".rdebug-inspector-static").first
    expect(static).to_be_visible()
    rows = static.locator("table.rdebug-table tbody tr[data-message-id]")
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.messageId)") == wanted
    selected = static.locator(f'.rdebug-message[data-message-id="{wanted[0]}"]')
    expect(selected).to_be_visible()
    expect(selected).to_contain_text(expected.iloc[0]["payload"]["order_id"])
    page.screenshot(path=str(ARTIFACTS / "browser-export.png"), full_page=True)


def test_the_test_notebook_is_clean() -> None:
    notebook = json.loads(NOTEBOOK.read_text())

    assert all(not cell.get("outputs") for cell in notebook["cells"])
    assert all(cell.get("execution_count") is None for cell in notebook["cells"])
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"

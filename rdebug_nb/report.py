"""Reports: run the curated notebooks with parameters and render one HTML file.

A report is made in two steps: papermill executes each notebook top to bottom with
the given parameters (injected after the cell tagged ``parameters``), then nbconvert
renders the executed cells into one HTML page. The page is self-contained: plotly's
JavaScript is inlined once in the page head, no script or style is fetched
from the network, widgets show their static HTML fallback, code cells are hidden,
and the page opens with the parameters it was run with and a table of contents.
Passwords are removed from everything shown.

Notes
-----
The curated notebooks are looked up in the ``notebooks/`` folder of the checkout
this package was installed from (an editable install, as ``make demo`` makes).
"""

from __future__ import annotations

import html
import logging
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

import nbformat
import plotly.io as pio
from plotly.io.base_renderers import MimetypeRenderer
from plotly.offline import get_plotlyjs

from rdebug_nb.bus import URL_VARIABLE, redact_url
from rdebug_nb.errors import RdebugError

logger = logging.getLogger(__name__)

NOTEBOOK_DIR: Final = Path(__file__).resolve().parents[1] / "notebooks"
"""Where the curated notebooks live in a checkout."""

TEMPLATE_DIR: Final = Path(__file__).resolve().parent / "templates"

_HEADING = re.compile(r'<h([1-3]) id="([^"]+)">(.*?)<a class="anchor-link"', re.S)
_TAGS = re.compile(r"<[^>]+>")


class ReportFailed(RdebugError):
    """A notebook of the report raised; the message names the notebook and cell."""


@dataclass(frozen=True, slots=True)
class Report:
    """A rendered report file.

    Attributes
    ----------
    path : Path
        The HTML file.
    size : int
        Its size in bytes.
    notebooks : tuple of str
        The notebooks it contains, in order.
    """

    path: Path
    size: int
    notebooks: tuple[str, ...]


def notebook_path(name: str | Path) -> Path:
    """Resolve a curated notebook by file name (or return an existing path).

    >>> notebook_path("01_guild_overview.ipynb").name
    '01_guild_overview.ipynb'
    """
    candidate = Path(name)
    if candidate.exists():
        return candidate
    found = NOTEBOOK_DIR / candidate.name
    if not found.exists():
        raise ReportFailed(f"no notebook {str(name)!r} in {NOTEBOOK_DIR}")
    return found


def run_notebook(
    source: str | Path,
    parameters: Mapping[str, Any],
    *,
    out: str | Path | None = None,
    timeout: int = 600,
) -> nbformat.NotebookNode:
    """Execute a notebook top to bottom with papermill and return the result.

    Raises
    ------
    ReportFailed
        If a cell raises; the message names the notebook and the error.
    """
    path = notebook_path(source)
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(out) if out else Path(scratch) / path.name
        _execute(path, target, parameters, timeout)
        logger.info("executed %s", path.name)
        return nbformat.read(target, as_version=4)


def _execute(
    path: Path, target: Path, parameters: Mapping[str, Any], timeout: int
) -> None:
    """Run papermill; a URL carrying secrets reaches the kernel only by environment.

    Papermill writes parameters into the notebook and its debug log, so a URL with
    a password is passed as ``RDEBUG_REDIS_URL`` (inherited by the kernel) and the
    notebook's ``redis_url`` parameter stays empty.
    """
    import papermill

    params, env = dict(parameters), {}
    if _has_secret(params.get("redis_url")):
        env[URL_VARIABLE] = params.pop("redis_url")
        params["redis_url"] = ""
    with _environment(env):
        try:
            papermill.execute_notebook(
                str(path),
                str(target),
                parameters=params,
                cwd=str(path.parent),
                progress_bar=False,
                execution_timeout=timeout,
                kernel_name="python3",
                # The kernel listens on 127.0.0.1 only; its start-up warning
                # about unencrypted TCP is noise on every report.
                extra_arguments=["--IPKernelApp.log_level=ERROR"],
            )
        except papermill.PapermillExecutionError as err:
            where = f"{path.name} failed in cell {err.exec_count}"
            raise ReportFailed(f"{where}: {err.ename}: {err.evalue}") from err


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the kernels started inside, then restore."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def build_report(
    notebooks: Sequence[str | Path],
    out: str | Path,
    parameters: Mapping[str, Any],
    *,
    title: str = "rdebug_nb report",
) -> Report:
    """Execute notebooks and write them as one self-contained HTML report.

    Parameters
    ----------
    notebooks : sequence of str or Path
        Curated notebook names or paths, in report order.
    out : str or Path
        The HTML file to write (its folder is created).
    parameters : mapping
        Values for the notebooks' ``parameters`` cells; ``report_mode`` is set.
    title : str
        The page title.

    Returns
    -------
    Report
    """
    params = {**parameters, "report_mode": True}
    executed = [run_notebook(name, params) for name in notebooks]
    page = render_html(merge_notebooks(executed), params, title=title)
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    names = tuple(notebook_path(name).name for name in notebooks)
    return Report(target, target.stat().st_size, names)


def merge_notebooks(
    notebooks: Sequence[nbformat.NotebookNode],
) -> nbformat.NotebookNode:
    """One notebook holding the cells of several, in order."""
    merged = nbformat.v4.new_notebook(
        metadata=dict(notebooks[0].metadata) if notebooks else {}
    )
    for notebook in notebooks:
        merged.cells.extend(notebook.cells)
    return merged


def render_html(
    notebook: nbformat.NotebookNode, parameters: Mapping[str, Any], *, title: str
) -> str:
    """Render an executed notebook as the report page (code hidden)."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        template_name="rdebug_report",
        extra_template_basedirs=[str(TEMPLATE_DIR)],
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    notebook.metadata["title"] = title
    notebook.metadata.pop("widgets", None)
    resources = {"rdebug_plotly_js": _plotly_js()}
    page, _ = exporter.from_notebook_node(notebook, resources=resources)
    page = page.replace("<!--rdebug-parameters-->", parameter_table(parameters), 1)
    page = page.replace("<!--rdebug-toc-->", table_of_contents(page), 1)
    return scrub_secrets(page, parameters)


def parameter_table(parameters: Mapping[str, Any]) -> str:
    """An HTML table of the parameters, with URL passwords hidden.

    >>> "s3cret" in parameter_table({"redis_url": "redis://:s3cret@h:1/0"})
    False
    """
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th><td><code>{html.escape(_shown(value))}</code></td></tr>"
        for name, value in parameters.items()
    )
    table = f"<h4>Parameters</h4><table>{rows}</table>"
    return f'<section class="rdebug-parameters">{table}</section>'


def table_of_contents(page: str) -> str:
    """A nested list linking to the page's level 1-3 headings."""
    items = [
        _toc_item(int(level), anchor, _TAGS.sub("", text).strip())
        for level, anchor, text in _HEADING.findall(page)
    ]
    return f'<nav class="rdebug-toc"><h4>Contents</h4><ul>{"".join(items)}</ul></nav>'


def _toc_item(level: int, anchor: str, text: str) -> str:
    indent = (level - 1) * 1.2
    return f'<li style="margin-left:{indent}em"><a href="#{anchor}">{text}</a></li>'


def scrub_secrets(page: str, parameters: Mapping[str, Any]) -> str:
    """Replace every password found in URL parameters by ``***``.

    >>> scrub_secrets("x s3cret y", {"redis_url": "redis://u:s3cret@h/0"})
    'x *** y'
    """
    for value in parameters.values():
        for secret in _secrets(value):
            page = page.replace(secret, "***")
    return page


def use_report_renderer() -> None:
    """Render plotly figures for a static report from now on (this kernel).

    Figures become plain HTML that expects ``Plotly`` on the page, which the
    report template inlines once; no MathJax or plotly.js is fetched from a CDN.
    """
    pio.renderers["rdebug_report"] = _ReportRenderer()
    pio.renderers.default = "rdebug_report"


class _ReportRenderer(MimetypeRenderer):  # type: ignore[misc]
    """A plotly renderer whose output is one ``text/html`` div per figure."""

    def to_mimebundle(self, fig_dict: dict[str, Any]) -> dict[str, str]:
        html = pio.to_html(
            fig_dict,
            include_plotlyjs=False,
            include_mathjax=False,
            full_html=False,
            default_width="100%",
            default_height=525,
        )
        return {"text/html": html}


def _plotly_js() -> str:
    script: str = get_plotlyjs()
    return script


def _shown(value: Any) -> str:
    return (
        redact_url(value) if isinstance(value, str) and "://" in value else repr(value)
    )


def _secrets(value: Any) -> list[str]:
    """The password and any password-like query values of a URL."""
    if not isinstance(value, str) or "://" not in value:
        return []
    parts = urlsplit(value)
    found = [parts.password] if parts.password else []
    found += [v for k, v in parse_qsl(parts.query) if "password" in k.lower() and v]
    return found


def _has_secret(value: Any) -> bool:
    return bool(_secrets(value))

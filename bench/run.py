"""The benchmark run: data, measurements in alternating rounds, the result tables."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.data import GUILD, Guild, read_guild
from bench.server import BenchServer

ROOT = Path(__file__).resolve().parents[1]
README = Path(__file__).with_name("README.md")
START = "<!-- bench:results:start -->"
END = "<!-- bench:results:end -->"
WARM_DB, DATA_DB, TAIL_DB = 15, 1, 9
WINDOW_MS = 60_000
MB = 1 << 20


@dataclass(frozen=True)
class Plan:
    """What one run measures, and how often."""

    name: str
    sizes: tuple[int, ...]
    rounds: dict[int, int]
    naive_up_to: int
    graph_size: int
    ids: int
    id_rounds: int
    tail: tuple[float, float, float, float]
    naive_rounds: int = 2
    huge: int | None = None
    huge_memory_gb: float = 16.0


QUICK = Plan(
    name="quick",
    sizes=(2_000, 6_000),
    rounds={2_000: 1, 6_000: 1},
    naive_up_to=6_000,
    graph_size=6_000,
    ids=1_000_000,
    id_rounds=1,
    tail=(200.0, 1_000.0, 1.0, 2.0),
)
FULL = Plan(
    name="full",
    sizes=(10_000, 100_000, 300_000),
    rounds={10_000: 5, 100_000: 5, 300_000: 3, 1_000_000: 1},
    naive_up_to=300_000,
    graph_size=300_000,
    ids=10_000_000,
    id_rounds=5,
    tail=(500.0, 5_000.0, 20.0, 60.0),
    huge=1_000_000,
)


@dataclass
class Sample:
    """Every round of one measurement."""

    op: str
    size: int
    seconds: list[float] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    missing: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    @property
    def peak(self) -> int:
        return max(self.peaks) if self.peaks else 0


@dataclass
class Results:
    """All samples of a run, and what the run was done on."""

    plan: Plan
    machine: dict[str, str]
    raw_bytes: dict[int, int] = field(default_factory=dict)
    samples: dict[tuple[str, int], Sample] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def sample(self, op: str, size: int) -> Sample:
        return self.samples.setdefault((op, size), Sample(op, size))

    def get(self, op: str, size: int) -> Sample | None:
        return self.samples.get((op, size))


def probe(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter and return its JSON result."""
    command = [sys.executable, "-m", "bench.probe", json.dumps(spec)]
    return _run_json(command)


def _run_json(command: list[str], stdin: str | None = None) -> dict[str, Any]:
    done = subprocess.run(
        command,
        cwd=ROOT,
        env=_env(),
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{command[2:4]} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), env.get("PYTHONPATH")])
    )
    return env


def record(results: Results, spec: dict[str, Any], size: int) -> None:
    """Probe once and add the round to the sample of ``spec["op"]``.

    A failed probe is recorded (``Results.errors``) and the run goes on, so one
    failure costs one cell, not the whole table.
    """
    sample = results.sample(spec.get("label", spec["op"]), size)
    try:
        outcome = probe(spec)
    except RuntimeError as err:
        last = str(err).strip().splitlines()[-1]
        results.errors.append(f"{spec['op']} @ {size:,}: {last}")
        sample.missing = sample.missing or f"error: {last}"
        return
    if "missing" in outcome:
        sample.missing = outcome["missing"]
        return
    sample.seconds.append(outcome.pop("seconds"))
    sample.peaks.append(outcome.pop("peak_bytes"))
    for key, value in outcome.items():
        sample.extra.setdefault(key, []).append(value)


def alternate(
    rounds: int, specs: list[dict[str, Any]], act: Callable[[dict[str, Any]], None]
) -> None:
    """Run every spec once per round, in the same order each round."""
    for _ in range(rounds):
        for spec in specs:
            act(spec)


def machine(server: BenchServer) -> dict[str, str]:
    """CPU model, cores, memory, Python, pandas, redis-server version, date."""
    import msgspec
    import numpy
    import pandas

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "memory": f"{_meminfo_gb('MemTotal'):.1f} GB",
        "python": platform.python_version(),
        "libraries": f"pandas {pandas.__version__}, numpy {numpy.__version__}, "
        f"msgspec {msgspec.__version__}, redis-py {_redis_py()}",
        "redis-server": server.version(),
        "load average at start": _load_average(),
    }


def _load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _redis_py() -> str:
    import redis

    return str(redis.__version__)


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def _meminfo_gb(name: str) -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) / (1 << 20)
    return 0.0


class Bench:
    """One run: a private server, the cycled guild, the measurements."""

    def __init__(
        self, plan: Plan, server: BenchServer, say: Callable[[str], None]
    ) -> None:
        self.plan, self.server, self.say = plan, server, say
        self.guild: Guild = read_guild()
        self.results = Results(plan, machine(server))
        self.filled = 0
        self.bytes = 0

    def spec(self, op: str, db: int = DATA_DB, **extra: Any) -> dict[str, Any]:
        return {
            "op": op,
            "guild": GUILD,
            "url": self.server.url(db),
            "warm_url": self.server.url(WARM_DB),
            **extra,
        }

    def run(self) -> Results:
        self.fill(WARM_DB, len(self.guild.templates))
        for size in self.plan.sizes:
            self.at_size(size)
        self.decode_ids()
        self.tail()
        self.huge()
        self.results.machine["load average at end"] = _load_average()
        return self.results

    def fill(self, db: int, count: int) -> int:
        from bench.data import fill

        start = time.perf_counter()
        client = self.server.client(db)
        if db != DATA_DB:
            client.flushdb()
            return fill(client, self.guild, count)
        members = list(self.guild.members(count))[self.filled :]
        pipe = client.pipeline(transaction=False)
        for n, (topic, member, score) in enumerate(members, 1):
            pipe.zadd(f"{self.guild.name}:{topic}", {member: score})
            self.bytes += len(member)
            if n % 2000 == 0:
                pipe.execute()
        pipe.execute()
        self.filled = count
        self.results.raw_bytes[count] = self.bytes
        self.say(
            f"filled {count:,} stored messages in {time.perf_counter() - start:.1f} s"
        )
        return self.bytes

    def at_size(self, size: int) -> None:
        self.fill(DATA_DB, size)
        rounds = self.plan.rounds.get(size, 1)
        loads = [self.spec("bus"), self.spec("floor")]
        naive = self.spec("naive")
        self.say(f"{size:,}: loads, {rounds} rounds")
        for round_ in range(rounds):
            # The naive way is slow and memory-hungry: a few rounds suffice.
            wanted = size <= self.plan.naive_up_to and round_ < self.plan.naive_rounds
            for spec in [*loads, naive] if wanted else loads:
                record(self.results, spec, size)
        topic, since, until = self.window()
        windows = [
            self.spec("window", topic=topic, since=since, until=until),
            self.spec("topic", topic=topic),
        ]
        alternate(rounds, windows, lambda s: record(self.results, s, size))
        self.results.sample("window", size).extra["topic"] = topic
        extra = max(size // 100, 1)
        refresh = [self.spec("refresh", count=size, extra=extra)]
        alternate(rounds, refresh, lambda s: record(self.results, s, size))
        if size == self.plan.graph_size:
            graphs = [self.spec("flow_graph"), self.spec("lineage_graph")]
            self.say(f"{size:,}: graphs")
            alternate(
                max(1, rounds - 1), graphs, lambda s: record(self.results, s, size)
            )

    def window(self) -> tuple[str, int, int]:
        """The largest topic, and one minute in the middle of the loaded time."""
        counts: dict[str, int] = {}
        for template in self.guild.templates:
            counts[template.topic] = counts.get(template.topic, 0) + 1
        topic = max(counts, key=lambda name: (counts[name], name))
        cycles = self.filled / len(self.guild.templates)
        middle = self.guild.first_ms + int(cycles * self.guild.period_ms / 2)
        return topic, middle, middle + WINDOW_MS - 1

    def decode_ids(self) -> None:
        self.say(f"decode_ids on {self.plan.ids:,} ids")
        spec = self.spec("decode_ids", count=self.plan.ids)
        alternate(
            self.plan.id_rounds,
            [spec],
            lambda s: record(self.results, s, self.plan.ids),
        )

    def tail(self) -> None:
        start, top, ramp, hold = self.plan.tail
        self.say(
            f"tail: ramp {start:.0f} -> {top:.0f}/s over {ramp:.0f} s, "
            f"hold {hold:.0f} s"
        )
        try:
            import rdebug_nb.tail  # noqa: F401
        except ImportError as err:
            self.results.sample("tail", int(top)).missing = f"rdebug_nb.tail: {err}"
            return
        url = self.server.url(TAIL_DB)
        self.server.client(TAIL_DB).flushdb()
        sample = self.results.sample("tail", int(top))
        try:
            outcome = tail_ramp(url, start, top, ramp, hold)
        except (RuntimeError, subprocess.TimeoutExpired) as err:
            last = str(err).strip().splitlines()[-1]
            self.results.errors.append(f"tail: {last}")
            sample.missing = f"error: {last}"
            return
        sample.seconds.append(outcome["publisher"]["seconds"])
        sample.peaks.append(outcome["tail"]["peak_bytes"])
        sample.extra.update(outcome)
        self.server.client(TAIL_DB).flushdb()

    def huge(self) -> None:
        size = self.plan.huge
        if size is None:
            return
        available = _meminfo_gb("MemAvailable")
        if available < self.plan.huge_memory_gb:
            self.results.notes.append(
                f"{size:,} skipped: {available:.1f} GB available, "
                f"{self.plan.huge_memory_gb:.0f} GB wanted"
            )
            return
        self.fill(DATA_DB, size)
        rounds = self.plan.rounds.get(size, 1)
        self.say(f"{size:,}: loads, {rounds} rounds")
        loads = [self.spec("bus"), self.spec("floor")]
        alternate(rounds, loads, lambda s: record(self.results, s, size))


def tail_ramp(
    url: str, start: float, top: float, ramp: float, hold: float
) -> dict[str, Any]:
    """Start a tail process, run the publisher, then collect what the tail saw."""
    tail_cmd = [sys.executable, "-m", "bench.tailload", "tail", url, GUILD]
    watcher = subprocess.Popen(
        tail_cmd,
        cwd=ROOT,
        env=_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if watcher.stdout is None or watcher.stdin is None:
            raise RuntimeError("the tail process has no pipes")
        line = watcher.stdout.readline().strip()
        if line != "ready":
            problem = watcher.stderr.read() if watcher.stderr else ""
            raise RuntimeError(f"tail did not start: {line} {problem}")
        pub_cmd = [sys.executable, "-m", "bench.tailload", "publish", url]
        publisher = _run_json([*pub_cmd, *(str(v) for v in (start, top, ramp, hold))])
        watcher.stdin.write(f"{publisher['published']}\n")
        watcher.stdin.flush()
        out, err = watcher.communicate(timeout=300)
        if watcher.returncode != 0:
            raise RuntimeError(f"tail failed:\n{err[-3000:]}")
        seen: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    return {"publisher": publisher, "tail": seen}


def execute(plan: Plan, say: Callable[[str], None] = print) -> Results:
    """Start a private redis-server, run the plan, stop the server."""
    with (
        tempfile.TemporaryDirectory(prefix="rdebug-bench-") as folder,
        BenchServer(Path(folder)) as server,
    ):
        return Bench(plan, server, say).run()


def write_readme(table: str, path: Path = README) -> None:
    """Replace the text between the result markers of ``path`` with ``table``."""
    text = path.read_text(encoding="utf-8") if path.exists() else f"{START}\n{END}\n"
    if START not in text or END not in text:
        text = f"{text.rstrip()}\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{table.strip()}\n{END}{tail}", encoding="utf-8")


def lines(rows: Iterable[Iterable[str]]) -> str:
    """Markdown table rows."""
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)

"""The rdebug-nb command line: reports, JupyterLab, recording and replay.

``rdebug-nb demo``
    start the embedded server, fill it with the simulated demo guild, render the
    guild overview report and print a summary.
``rdebug-nb report``
    render the report notebooks against a server (or a snapshot) into one
    self-contained HTML file.
``rdebug-nb lab``
    open JupyterLab on the curated notebooks, with the connection preset.
``rdebug-nb record``
    capture a guild's live traffic to a JSONL file, nothing lost across
    reconnects, and print counts.
``rdebug-nb replay``
    publish an exported file's messages into a sandbox guild (a dry run unless
    ``--write``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import rdebug_nb as rd
from rdebug_nb.bus import URL_VARIABLE
from rdebug_nb.export import read_jsonl, read_parquet
from rdebug_nb.recording import record
from rdebug_nb.replay import replay
from rdebug_nb.report import NOTEBOOK_DIR, Report, build_report
from rdebug_nb.server import EmbeddedServer

DEMO_GUILD = "demo-orders"
REPORT_NOTEBOOKS = (
    "01_guild_overview.ipynb",
    "02_message_flow.ipynb",
    "03_trace_message.ipynb",
    "04_errors_and_latency.ipynb",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.run(args)
    except rd.RdebugError as err:
        print(f"rdebug-nb: {err}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as err:  # bad option values, unwritable paths
        print(f"rdebug-nb: {err}", file=sys.stderr)
        return 2
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rdebug-nb", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="report on a simulated guild (embedded server)"
    )
    demo.add_argument(
        "--out", default="reports/demo-report.html", help="HTML file to write"
    )
    demo.add_argument(
        "--seed", type=int, default=0, help="seed of the simulated traffic"
    )
    demo.set_defaults(run=_demo)
    report = commands.add_parser("report", help="render the report notebooks to HTML")
    report.add_argument(
        "--redis-url", default="", help="server URL (default $RDEBUG_REDIS_URL)"
    )
    report.add_argument(
        "--snapshot", default="", help="keyspace JSONL snapshot to read instead"
    )
    report.add_argument("--guild", default="", help="guild id (default: the busiest)")
    report.add_argument(
        "--since", default="", help="window start, e.g. '2026-12-03 12:00'"
    )
    report.add_argument("--until", default="", help="window end")
    report.add_argument("--out", required=True, help="HTML file to write")
    report.add_argument(
        "--notebook", action="append", help="notebook(s) to include, in order"
    )
    report.set_defaults(run=_report)
    lab = commands.add_parser("lab", help="open JupyterLab on the curated notebooks")
    lab.add_argument(
        "--redis-url", default="", help="preset $RDEBUG_REDIS_URL for them"
    )
    lab.add_argument("lab_args", nargs=argparse.REMAINDER, help="passed to jupyter lab")
    lab.set_defaults(run=_lab)
    _add_record(commands)
    _add_replay(commands)
    return parser


def _add_record(commands: Any) -> None:
    record = commands.add_parser("record", help="capture live traffic to a JSONL file")
    record.add_argument("--redis-url", required=True, help="server URL")
    record.add_argument("--guild", required=True, help="guild id")
    record.add_argument("--topic", action="append", help="only these topics")
    record.add_argument(
        "--duration",
        type=parse_duration,
        default="60s",
        help="how long, e.g. 90, 60s, 5m, 1h (default 60s; Ctrl-C ends it early)",
    )
    record.add_argument("--out", required=True, help="JSONL file to write")
    record.set_defaults(run=_record)


def _add_replay(commands: Any) -> None:
    replay = commands.add_parser("replay", help="publish a file's messages elsewhere")
    replay.add_argument("source", help="exported JSONL or Parquet file")
    replay.add_argument("--redis-url", default="", help="server to publish into")
    replay.add_argument("--guild", required=True, help="target (sandbox) guild id")
    replay.add_argument("--write", action="store_true", help="really write")
    replay.add_argument(
        "--writable", action="store_true", help="mark the server as a sandbox"
    )
    replay.add_argument("--force", action="store_true", help="override refusals")
    replay.add_argument("--keep-ids", action="store_true", help="keep original ids")
    replay.add_argument("--speed", type=float, help="keep spacing, scaled by this")
    replay.set_defaults(run=_replay)


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``60s``, ``5m`` or ``1h``.

    >>> parse_duration("5m"), parse_duration("90")
    (300.0, 90.0)
    """
    units = {"s": 1, "m": 60, "h": 3600}
    unit = text[-1:] if text[-1:] in units else "s"
    number = text[:-1] if text[-1:] in units else text
    try:
        seconds = float(number) * units[unit]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration") from err
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive duration")
    return seconds


def _record(args: argparse.Namespace) -> int:
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with rd.connect(args.redis_url, progress=False) as bus:
        done = record(
            bus, args.guild, args.out, duration=args.duration, topics=args.topic
        )
    print(done)
    if not done.messages:
        print(
            f"rdebug-nb: nothing arrived on {args.guild!r}; check --guild and "
            "--topic against bus.guilds() and bus.topics()",
            file=sys.stderr,
        )
    return 0 if done.reconciliation.ok else 1


def _replay(args: argparse.Namespace) -> int:
    if args.write and not args.redis_url:
        raise rd.WriteRefused(
            "--write needs --redis-url: without it the messages would go to a "
            "throwaway embedded server and be lost when the command ends"
        )
    msgs = (
        read_parquet(args.source)
        if args.source.endswith(".parquet")
        else read_jsonl(args.source)
    )
    with rd.connect(
        args.redis_url or None, progress=False, writable=args.writable
    ) as bus:
        try:
            plan = replay(
                msgs,
                bus,
                args.guild,
                write=args.write,
                force=args.force,
                keep_ids=args.keep_ids,
                speed=args.speed,
            )
        except rd.WriteRefused as err:
            raise rd.WriteRefused(
                f"{err} (on the command line: --writable marks the server as a "
                "sandbox, --force overrides)"
            ) from err
    print(plan)
    if not plan.written:
        print(_REPLAY_FLAGS if plan.refusal else "  (dry run: add --write to write)")
    return 0


_REPLAY_FLAGS: Final = (
    "  on the command line: --write writes, --writable marks the server as a "
    "sandbox, --force overrides the refusal"
)


def _demo(args: argparse.Namespace) -> int:
    started = time.monotonic()
    with (
        EmbeddedServer() as server,
        rd.connect(server.url, progress=False, writable=True) as bus,
    ):
        bus.load_demo(seed=args.seed, guild_id=DEMO_GUILD)
        summary = rd.summarize(bus.messages(DEMO_GUILD))
        topics = len(bus.topics(DEMO_GUILD))
        params = {"redis_url": server.url, "guild_id": DEMO_GUILD}
        report = build_report(
            REPORT_NOTEBOOKS, args.out, params, title=f"Guild overview: {DEMO_GUILD}"
        )
    print(f"guild      {DEMO_GUILD} (simulated, seed {args.seed})")
    print(f"topics     {topics}")
    print(f"messages   {summary['messages']} ({summary['deliveries']} stored copies)")
    errors, dead = summary["errors"], summary["dead_letters"]
    print(f"errors     {errors} error messages ({dead} of them dead letters)")
    _print_report(report, started)
    return 0


def _report(args: argparse.Namespace) -> int:
    if args.snapshot and args.redis_url:
        raise ValueError(
            "give --redis-url or --snapshot, not both: the report reads one source"
        )
    started = time.monotonic()
    params = {
        "redis_url": args.redis_url,
        "snapshot_path": args.snapshot,
        "guild_id": args.guild,
        "since": args.since,
        "until": args.until,
    }
    notebooks = tuple(args.notebook or REPORT_NOTEBOOKS)
    report = build_report(
        notebooks, args.out, params, title=f"rdebug_nb report {args.guild}".strip()
    )
    _print_report(report, started)
    return 0


def _lab(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    if args.redis_url:
        env[URL_VARIABLE] = args.redis_url
    command = [sys.executable, "-m", "jupyterlab", f"--notebook-dir={NOTEBOOK_DIR}"]
    extra = [arg for arg in args.lab_args if arg != "--"]
    return subprocess.call([*command, *extra], env=env)


def _print_report(report: Report, started: float) -> None:
    seconds = time.monotonic() - started
    print(f"report     {report.path} ({report.size / 1e6:.1f} MB, {seconds:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())

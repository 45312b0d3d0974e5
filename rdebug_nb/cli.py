"""The ``rdebug-nb`` command line.

``rdebug-nb demo``
    start the embedded server, fill it with the simulated demo guild, render the
    guild overview report and print a summary.
``rdebug-nb report``
    render the report notebooks against a server (or a snapshot) into one
    self-contained HTML file.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import rdebug_nb as rd
from rdebug_nb.report import Report, build_report
from rdebug_nb.server import EmbeddedServer

DEMO_GUILD = "demo-orders"
REPORT_NOTEBOOKS = ("01_guild_overview.ipynb",)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.run(args)
    except rd.RdebugError as err:
        print(f"rdebug-nb: {err}", file=sys.stderr)
        return 1
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
    return parser


def _demo(args: argparse.Namespace) -> int:
    started = time.monotonic()
    with EmbeddedServer() as server, rd.connect(server.url, progress=False) as bus:
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
    print(f"errors     {errors} error messages, {dead} dead letters")
    _print_report(report, started)
    return 0


def _report(args: argparse.Namespace) -> int:
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


def _print_report(report: Report, started: float) -> None:
    seconds = time.monotonic() - started
    print(f"report     {report.path} ({report.size / 1e6:.1f} MB, {seconds:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())

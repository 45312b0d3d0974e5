"""``python -m bench [--quick] [--output FILE] [--no-readme]``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench.run import FULL, QUICK, README, execute, write_readme
from bench.tables import render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 round")
    parser.add_argument("--output", type=Path, help="also write the tables here")
    parser.add_argument(
        "--readme",
        type=Path,
        default=None,
        help=f"README to update between the markers (full run default: {README})",
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    began = time.perf_counter()
    results = execute(plan, say=lambda text: print(f"[bench] {text}", flush=True))
    table = render(results)
    print(table)
    if args.output:
        args.output.write_text(table, encoding="utf-8")
    readme = args.readme or (None if args.quick else README)
    if readme:
        write_readme(table, readme)
    print(f"[bench] done in {time.perf_counter() - began:.0f} s", flush=True)
    for error in results.errors:
        print(f"[bench] failed: {error}", file=sys.stderr)
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())

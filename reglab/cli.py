"""`reglab report` and `reglab record-expected`: the command line."""
from __future__ import annotations

import argparse
import sys

from .config import ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reglab", description="reglab: regularization and learning dynamics, measured.")
    sub = parser.add_subparsers(dest="command", required=True)
    report = sub.add_parser("report", help="run every theme notebook headless and write reports/index.html")
    report.add_argument("--only", nargs="+", metavar="NAME", help="notebooks to run (name or number prefix)")
    report.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="override a notebook parameter, as with papermill")
    report.add_argument("--out", "--output", dest="out", default="reports", help="output folder (default: reports)")
    record = sub.add_parser("record-expected", help="re-record a notebook's expected outputs for the regression tests")
    record.add_argument("notebook", help="notebook name, e.g. 00_quickstart")
    record.add_argument("--case", default="ci", help="case name (tests/expected/<notebook>/<case>.json)")
    golden = sub.add_parser("golden", help="re-run notebooks at their defaults and keep only their golden outputs")
    golden.add_argument("notebooks", nargs="+", help="notebook names, e.g. 00_quickstart")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from .notebook import parse_value

    try:
        if args.command == "report":
            from .report import build

            params = {name: parse_value(value) for name, value in args.parameter}
            pages, ok = build(args.only, params, args.out)
            failed = [p["notebook"] for p in pages if p["error"]]
            from .report import tally

            tally = tally([c for p in pages for c in p.get("claims", [])])
            print(f"reglab report: {len(pages)} notebooks, {tally}, "
                  f"{len(failed)} failed{': ' + ', '.join(failed) if failed else ''} → {args.out}/index.html")
            return 0 if ok else 1
        if args.command == "record-expected":
            from .expected import record_case

            path = record_case(args.notebook, args.case)
            print(f"recorded {path}")
            return 0
        if args.command == "golden":
            from .notebook import notebook_paths, refresh_golden

            for path in notebook_paths(args.notebooks):
                print(f"{path.stem}:\n{''.join(refresh_golden(path))}")
            return 0
    except ConfigError as err:
        print(f"reglab: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

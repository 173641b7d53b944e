"""`reglab report`, `reglab sweep`, `reglab course build`, `reglab record-expected` and `reglab golden`: the command line."""
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
    sweep = sub.add_parser("sweep", help="train a grid of configs as batched ensembles, here or on a Ray cluster")
    sweep.add_argument("grid", help="a YAML file: base (RunConfig fields) and grid ({field: [values]})")
    sweep.add_argument("--cluster", default=None, help="local, ray or ray://host:port (default: this process)")
    sweep.add_argument("--store", default=None, help="folder for finished chunks (the same command resumes)")
    sweep.add_argument("--out", "--output", dest="out", default="sweep.csv", help="summary table (default: sweep.csv)")
    record = sub.add_parser("record-expected", help="re-record a notebook's expected outputs for the regression tests")
    record.add_argument("notebook", help="notebook name, e.g. 00_quickstart")
    record.add_argument("--case", default="ci", help="case name (tests/expected/<notebook>/<case>.json)")
    golden = sub.add_parser("golden", help="re-run notebooks at their defaults and keep only their golden outputs")
    golden.add_argument("notebooks", nargs="+", help="notebook names, e.g. 00_quickstart")
    course = sub.add_parser("course", help="course material: instructor and student notebooks, a static site")
    course_sub = course.add_subparsers(dest="course_command", required=True)
    course_build = course_sub.add_parser("build", help="write OUT/instructor, OUT/student (nbgrader) and OUT/site")
    course_build.add_argument("out", help="output folder, e.g. course-out")
    course_build.add_argument("--only", nargs="+", metavar="NAME", help="notebooks to include (name or number prefix)")
    course_build.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                              help="override a notebook parameter for the instructor run")
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
        if args.command == "sweep":
            import yaml

            from .config import RunConfig
            from .sweep import sweep

            spec = yaml.safe_load(open(args.grid, encoding="utf-8")) or {}
            unknown = sorted(set(spec) - {"base", "grid"})
            if unknown or "grid" not in spec:
                raise ConfigError(f"{args.grid} must hold 'grid' (and optionally 'base'); got {', '.join(spec) or 'nothing'}.")
            result = sweep(RunConfig.from_dict(spec.get("base") or {}), spec["grid"], cluster=args.cluster,
                           store=args.store)
            result.summary.to_csv(args.out, index=False)
            print(f"reglab sweep: {len(result.configs)} runs in {result.chunks} chunks ({result.trained} trained now) "
                  f"→ {args.out}")
            return 0
        if args.command == "course":
            from .course import build as build_course
            from .report import tally

            params = {name: parse_value(value) for name, value in args.parameter}
            built = build_course(args.out, args.only, params)
            pages = built["pages"]
            failed = [p["notebook"] for p in pages if p["error"]]
            print(f"reglab course: {len(pages)} notebooks, {tally([c for p in pages for c in p.get('claims', [])])}, "
                  f"{len(failed)} failed{': ' + ', '.join(failed) if failed else ''} → {args.out}/site/index.html")
            return 0 if built["ok"] else 1
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

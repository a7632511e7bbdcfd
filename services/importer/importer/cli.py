"""``orgdir-import``: import an export, or generate a synthetic one.

    orgdir-import PATH [--dry-run] [--at DATE] [--full-sync --from DATE [--allow-mass-change]]
    orgdir-import generate --size small|municipality --seed N OUT/ [--json]

Exit codes: 0 everything imported (or planned), 1 some records were rejected
(each reported with its file and line), 2 bad usage or unreadable input,
3 refused (``--full-sync`` above the threshold without ``--allow-mass-change``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from importer.generate import PRESETS, generate
from importer.readers import open_source, write_csv, write_json
from importer.service import Options, run_import
from importer.settings import ImportSettings


def today() -> date:
    """Today where the municipality is (the services' default day, too)."""
    return datetime.now(ZoneInfo("Europe/Copenhagen")).date()


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def import_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="orgdir-import", description="Import an HR export into Orgdir (idempotent).")
    p.add_argument("path", type=Path, help="a directory of CSV files (units.csv, persons.csv …) or a .json file")
    p.add_argument("--dry-run", action="store_true", help="print the plan; write nothing")
    p.add_argument("--at", type=_day, default=None, help="the day to compare on and change from (default today)")
    p.add_argument("--full-sync", action="store_true", help="terminate what is in force but missing from the export")
    p.add_argument("--from", dest="from_", type=_day, help="with --full-sync: the first day the missing no longer hold")
    p.add_argument("--allow-mass-change", action="store_true", help="allow --full-sync above the threshold")
    p.add_argument("--threshold", type=int, default=500, help="most --full-sync terminations without the flag")
    p.add_argument("--concurrency", type=int, default=None, help="requests in flight (ORGDIR_IMPORT_CONCURRENCY)")
    p.add_argument("--batch", type=int, default=None, help="PUTs per registry request (ORGDIR_IMPORT_BATCH)")
    p.add_argument("--examples", type=int, default=3, help="examples per kind and action in the plan")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    return p


def generate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="orgdir-import generate", description="Write a synthetic municipality's export.")
    p.add_argument("--size", choices=sorted(PRESETS), default="small")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="one export.json instead of CSV files")
    p.add_argument("out", type=Path, help="the directory to write to")
    return p


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["generate"]:
        return _generate(generate_parser().parse_args(args[1:]))
    if args[:1] == ["import"]:
        args = args[1:]
    return _import(import_parser().parse_args(args))


def _generate(ns: argparse.Namespace) -> int:
    export = generate(ns.size, ns.seed)
    if ns.json:
        write_json(export, ns.out / "export.json")
    else:
        write_csv(export, ns.out)
    counts = ", ".join(f"{n} {k}" for k, n in export.counts().items())
    print(f"{ns.out}: {counts} (size {ns.size}, seed {ns.seed})")
    return 0


def _import(ns: argparse.Namespace) -> int:
    if ns.full_sync and ns.from_ is None:
        print("--full-sync needs --from DATE (the first day what is missing no longer holds)", file=sys.stderr)
        return 2
    try:
        source = open_source(ns.path)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    settings = ImportSettings()
    if ns.concurrency:
        settings = replace(settings, concurrency=ns.concurrency)
    if ns.batch:
        settings = replace(settings, batch=ns.batch)
    options = Options(
        day=ns.at or today(),
        dry_run=ns.dry_run,
        full_sync_from=ns.from_ if ns.full_sync else None,
        allow_mass_change=ns.allow_mass_change,
        threshold=ns.threshold,
        examples=ns.examples,
        progress=not ns.no_progress,
    )
    report = asyncio.run(run_import(source, settings, options))
    print(report.summary(), file=sys.stderr)
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())

"""``make bench``: every benchmark on this machine, one report: ``bench/results.json`` and a Markdown table.

Each benchmark runs as its own process (its own private servers, as when run
alone); its output goes to stderr as it runs and its figures are parsed from
it (``bench_municipality`` writes JSON). The load average is taken before and
after each one: on a shared machine the figures mean little without it.

    python benchmarks/report.py                       # municipality preset, full sizes
    python benchmarks/report.py --size small --quick  # what fits in ~15 minutes on 2 busy cores
    python benchmarks/report.py --only bus,notifier   # a subset
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from machine import describe_shares  # beside this script

HERE = Path(__file__).resolve().parent
NUMBER = r"([\d,]+(?:\.\d+)?)"


def num(text: str) -> float:
    return float(text.replace(",", ""))


def find(pattern: str, out: str) -> float | None:
    m = re.search(pattern, out)
    return num(m.group(1)) if m else None


# --------------------------------------------------------------------------- parsers of the benches' output


def parse_bus(out: str) -> dict[str, Any]:
    return {
        "raw_aio_pika_msg_per_s": find(rf"raw aio-pika publish\(confirm\)\+consume\(ack\):\s+{NUMBER}", out),
        "orgdir_events_per_s": find(rf"orgdir relay → broker → consumer:\s+{NUMBER}", out),
        "writes_per_s": find(rf"wrote \d+ aggregates with their events: {NUMBER} writes/s", out),
    }


def parse_notifier(out: str) -> dict[str, Any]:
    runs = []
    blocks = re.split(r"\n\[\d+/\d+\]\n", "\n" + out)
    for block in blocks:
        head = re.search(r"mode: (\w+); (\d+) writes/s for (\d+) s; (\d+) replica", block)
        if not head:
            continue
        lat = re.search(rf"p50 {NUMBER} ms, p99 {NUMBER} ms, max {NUMBER} ms", block)
        runs.append(
            {
                "mode": head.group(1),
                "rate": int(head.group(2)),
                "seconds": int(head.group(3)),
                "replicas": int(head.group(4)),
                "written": find(r"(\d+) answered", block),
                "delivered": find(r"delivered: (\d+)/", block),
                "deliveries_per_s": find(rf"deliveries/s: {NUMBER}", block),
                "p50_ms": num(lat.group(1)) if lat else None,
                "p99_ms": num(lat.group(2)) if lat else None,
                "max_ms": num(lat.group(3)) if lat else None,
                "outbox_backlog_end": find(rf"{NUMBER} at the end", block),
                "sustained": (m.group(1) == "yes") if (m := re.search(r"sustained: (yes|no)", block)) else None,
            }
        )
    best = {
        int(r): num(v) for v, r in re.findall(rf"highest sustained rate: {NUMBER} writes/s .* with (\d+) replica", out)
    }
    return {"runs": runs, "highest_sustained_per_s": best}


def parse_orgunits(out: str) -> dict[str, Any]:
    reads = {
        m.group(1).strip(): {"p50_ms": num(m.group(2)), "p99_ms": num(m.group(3))}
        for m in re.finditer(rf"^(.+?)\s+p50\s+{NUMBER} ms\s+p99\s+{NUMBER} ms", out, re.M)
    }
    return {"units_per_s": find(rf"units in [\d.]+ s: {NUMBER} units/s", out), "reads": reads}


def parse_registry(out: str) -> dict[str, Any]:
    search = re.search(rf"search: (\d+) queries, p50 {NUMBER} ms, p99 {NUMBER} ms", out)
    return {
        "persons_per_s": find(rf"persons: \d+ in [\d.]+ s = {NUMBER} persons/s", out),
        "engagements_per_s": find(rf"= {NUMBER} engagements/s", out),
        "search_p50_ms": num(search.group(2)) if search else None,
        "search_p99_ms": num(search.group(3)) if search else None,
    }


def parse_access(out: str) -> dict[str, Any]:
    return {
        "events_per_s": find(rf"throughput: {NUMBER} events/s", out),
        "move_to_last_event_s": find(rf"move event → last resulting event: {NUMBER}s", out),
    }


def parse_refresh(out: str) -> dict[str, Any]:
    return {"events_per_s": find(rf"refresh job .*?: +{NUMBER} events/s", out)}


# --------------------------------------------------------------------------- running


def machine() -> dict[str, Any]:
    model = ""
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    mem_kb = 0
    try:
        mem_kb = int(
            next(
                line.split()[1]
                for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")
            )
        )
    except (OSError, StopIteration):
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def run(
    name: str, argv: list[str], parse: Callable[[str], dict[str, Any]] | None, json_out: Path | None = None
) -> dict[str, Any]:
    """Run one bench; its output is shown on stderr and kept for parsing."""
    print(f"\n=== {name}: {' '.join(argv)}", file=sys.stderr, flush=True)
    load_before = os.getloadavg()
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, *argv], cwd=HERE.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stderr.write(line)
        lines.append(line)
    proc.wait()
    out = "".join(lines)
    result: dict[str, Any] = {
        "command": " ".join(["python", *argv]),
        "exit": proc.returncode,
        "seconds": round(time.monotonic() - started, 1),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        if json_out is not None and json_out.is_file():
            result["figures"] = json.loads(json_out.read_text())
        elif parse is not None:
            result["figures"] = parse(out)
    except Exception as exc:  # a bench that failed half-way: keep what it printed
        result["parse_error"] = str(exc)
    if proc.returncode != 0:
        result["tail"] = out[-2000:]
    return result


def plan(
    args: argparse.Namespace, tmp: Path
) -> dict[str, tuple[list[str], Callable[[str], dict[str, Any]] | None, Path | None]]:
    quick = args.quick
    people = {"tiny": 120, "small": 2000, "municipality": 30000}.get(args.size, 30000)
    return {
        "municipality": (
            [
                "benchmarks/bench_municipality.py",
                "--size",
                args.size,
                "--reads",
                "100" if quick else "200",
                "--json",
                str(tmp / "municipality.json"),
            ],
            None,
            tmp / "municipality.json",
        ),
        "bus": (["benchmarks/bench_bus.py", "--events", "2000" if quick else "3000"], parse_bus, None),
        "notifier": (
            [
                "benchmarks/bench_notifier.py",
                "--matrix",
                "--seconds",
                "15" if quick else "20",
                "--find-max",
                "--max-seconds",
                "20" if quick else "60",
            ],
            parse_notifier,
            None,
        ),
        "orgunits": (["benchmarks/bench_orgunits.py", *(["--units", "1000"] if quick else [])], parse_orgunits, None),
        "registry": (
            ["benchmarks/bench_registry.py", "--persons", str(min(people, 5000) if quick else people)],
            parse_registry,
            None,
        ),
        "access": (["benchmarks/bench_access.py", *(["--people", "500"] if quick else [])], parse_access, None),
        "refresh": (
            ["benchmarks/bench_refresh.py", "--persons", str(min(people, 5000) if quick else people)],
            parse_refresh,
            None,
        ),
        "portal": (
            ["benchmarks/bench_portal.py", "--samples", "20" if quick else "50", "--json", str(tmp / "portal.json")],
            None,
            tmp / "portal.json",
        ),
    }


# --------------------------------------------------------------------------- the table


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        value = f"{value:,.1f}" if value < 100 else f"{value:,.0f}"
    elif isinstance(value, int):
        value = f"{value:,}"
    return f"{value}{unit}"


def table(report: dict[str, Any]) -> str:
    b = report["benches"]
    fig = {name: r.get("figures", {}) for name, r in b.items()}
    raw = fig.get("bus", {}).get("raw_aio_pika_msg_per_s")

    def ratio(x: float | None) -> str:
        return f"{x / raw:.2f}" if x and raw else "-"

    def load(name: str) -> str:
        r = b.get(name)
        if not r:
            return "-"
        before, after = r.get("load_before"), r.get("load_after")  # a run merged by hand may lack one
        return f"{f'{before[0]:.1f}' if before else '?'}→{f'{after[0]:.1f}' if after else '?'}"

    rows = [("figure", "value", "x raw aio-pika", "load 1 min (before→after)")]
    if "bus" in fig:
        rows += [
            ("raw aio-pika publish(confirm)+consume(ack), msg/s", fmt(raw), "1.00", load("bus")),
            (
                "orgdir outbox → relay → broker → consumer, events/s",
                fmt(fig["bus"].get("orgdir_events_per_s")),
                ratio(fig["bus"].get("orgdir_events_per_s")),
                load("bus"),
            ),
        ]
    m = fig.get("municipality", {})
    if m.get("import"):
        i = m["import"]
        counts = ", ".join(f"{n:,} {kind}" for kind, n in i["counts"].items())
        preset = f"{m.get('preset')} preset ({counts})"
        rows += [
            (f"import {preset}: units/s", fmt(i.get("units_per_s")), ratio(i.get("units_per_s")), load("municipality")),
            ("import: persons/s", fmt(i.get("persons_per_s")), ratio(i.get("persons_per_s")), ""),
            ("import: engagements/s", fmt(i.get("engagements_per_s")), ratio(i.get("engagements_per_s")), ""),
            ("import: total", fmt(i.get("total_seconds"), " s"), "", ""),
        ]
        if share := i.get("cpu_share"):
            rows.append(("import: CPU cores used per process (the bottleneck)", describe_shares(share), "", ""))
    for r in fig.get("notifier", {}).get("runs", []):
        rows.append(
            (
                f"{r['rate']} writes/s, {r['replicas']} replica(s): write → webhook p50 / p99 / max",
                f"{fmt(r['p50_ms'])} / {fmt(r['p99_ms'])} / {fmt(r['max_ms'])} ms; "
                f"{fmt(r['delivered'])}/{fmt(r['written'])} delivered, {fmt(r['deliveries_per_s'])}/s, "
                f"outbox backlog at the end {fmt(r.get('outbox_backlog_end'))}",
                ratio(r["deliveries_per_s"]),
                load("notifier"),
            )
        )
    for replicas, best in fig.get("notifier", {}).get("highest_sustained_per_s", {}).items():
        rows.append(
            (
                f"highest write rate sustained without a growing backlog, {replicas} replica(s)",
                f"{fmt(best)} writes/s",
                ratio(best),
                load("notifier"),
            )
        )
    for name, r in m.get("reads", {}).items():
        extra = f" ({r['people']:,} people)" if "people" in r else ""
        extra = f" ({r['persons']:,} persons)" if "persons" in r else extra
        rows.append((f"read {name}{extra}: p50 / p99", f"{fmt(r['p50_ms'])} / {fmt(r['p99_ms'])} ms", "", ""))
        if g := r.get("registry_full_gc"):
            rows.append((f"registry full garbage collections during read {name}",
                         f"{g['count']} ({fmt(g['seconds'], ' s')} in all, {g['over_half_a_second']} over 0.5 s)",
                         "", ""))
    for name, mb in m.get("peak_rss_mb", {}).items():
        rows.append((f"peak RSS {name}", fmt(mb, " MB"), "", ""))
    if "access_rights_caught_up_seconds" in m:
        caught = m["access_rights_caught_up_seconds"]
        rows.append(("access-rights: every import event taken in, after the import's last write",
                     fmt(caught, " s") if caught is not None else "not within the bench's wait", "", ""))
    if "database_bson_mb" in m:
        rows.append(("database: documents as BSON (dbStats dataSize, all services)",
                     fmt(m["database_bson_mb"], " MB"), "", ""))
    if "database_mb" in m:
        rows.append(("database on disk (H2 file, all services)", fmt(m["database_mb"], " MB"), "", ""))
    if o := fig.get("orgunits"):
        rows.append(
            (
                "orgunits: units created/s (own bench)",
                fmt(o.get("units_per_s")),
                ratio(o.get("units_per_s")),
                load("orgunits"),
            )
        )
    if g := fig.get("registry"):
        rows.append(
            (
                "registry: search p50 / p99 (own bench)",
                f"{fmt(g.get('search_p50_ms'))} / {fmt(g.get('search_p99_ms'))} ms",
                "",
                load("registry"),
            )
        )
    if a := fig.get("access"):
        rows.append(
            (
                "access-rights: events/s after a subtree move",
                fmt(a.get("events_per_s")),
                ratio(a.get("events_per_s")),
                load("access"),
            )
        )
    if f := fig.get("refresh"):
        rows.append(
            ("refresh job: events/s", fmt(f.get("events_per_s")), ratio(f.get("events_per_s")), load("refresh"))
        )
    for data_set, p in fig.get("portal", {}).items():
        if isinstance(p, dict) and "pages" in p:
            for page, r in p["pages"].items():
                rows.append((f"portal {page} ({data_set}, {p['units']:,} units): browser p50 / p99",
                             f"{fmt(r['p50_ms'])} / {fmt(r['p99_ms'])} ms", "", load("portal")))
    failed = [name for name, r in b.items() if r["exit"] != 0]
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows[1:]]
    mach = report["machine"]
    lines.append("")
    lines.append(
        f"Machine: {mach['cpus']} x {mach['cpu']}, {mach['memory_gb']} GB; load average at the start "
        f"{report['load_start']}, at the end {report['load_end']}; {report['date']}."
    )
    if failed:
        lines.append(f"Failed (see bench/results.json): {', '.join(failed)}.")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--size",
        default=os.environ.get("BENCH_SIZE", "municipality"),
        help="importer preset for the import and read figures (BENCH_SIZE)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        default=bool(os.environ.get("BENCH_QUICK")),
        help="smaller sizes for the component benches (BENCH_QUICK=1)",
    )
    parser.add_argument(
        "--only",
        default="",
        help="run only these (bus,notifier,municipality,orgunits,registry,"
        "access,refresh,portal), merged into an existing results file",
    )
    parser.add_argument("--out", type=Path, default=HERE.parent / "bench" / "results.json")
    args = parser.parse_args()
    started = datetime.now(UTC)
    report: dict[str, Any] = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "load_start": [round(x, 2) for x in os.getloadavg()],
        "size": args.size,
        "quick": args.quick,
        "benches": {},
    }
    if args.only and args.out.is_file():  # a subset run again: merged into the last full report
        report["benches"] = json.loads(args.out.read_text()).get("benches", {})
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        for name, (argv, parse, json_out) in plan(args, Path(tmp)).items():
            if args.only and name not in args.only.split(","):
                continue
            report["benches"][name] = run(name, argv, parse, json_out)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2))  # after every bench: a crash keeps the rest
    report["load_end"] = [round(x, 2) for x in os.getloadavg()]
    report["seconds"] = round((datetime.now(UTC) - started).total_seconds())
    args.out.write_text(json.dumps(report, indent=2))
    print(table(report))
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0 if all(r["exit"] == 0 for r in report["benches"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())

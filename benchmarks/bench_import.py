"""Import benchmark: the ``municipality`` preset into an empty stack through the importer.

Generates the export (3,000 units, 30,000 persons, 36,000 engagements,
managers, leaves) as CSV, starts RabbitMQ and mongo-java-server with
orgdir_tools.localservers (unless AMQP_URL / MONGODB_URL point at running
ones) and the four services as processes on fresh databases, runs the import
as ``orgdir-import`` would, and prints units/s, persons/s, engagements/s and
the total. Then it runs the import again: nothing may be written.

    make bench-import            # or: python benchmarks/bench_import.py --size small
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

from machine import CpuMeter, describe_shares, rss_peak_mb  # beside this script

from importer.generate import generate
from importer.readers import CsvSource, write_csv
from importer.records import KINDS
from importer.service import Options, run_import
from importer.settings import ImportSettings
from orgdir.settings import Settings
from orgdir_tools.localservers import bench_servers
from orgdir_tools.testkit import ServiceProcess, bench_settings_for

SERVICES = {"orgunits": "orgunits", "registry": "registry", "access-rights": "access_rights", "notifier": "notifier"}


async def bench(args: argparse.Namespace, amqp_url: str, mongodb_url: str) -> None:
    t0 = time.monotonic()
    export = generate(args.size, args.seed)
    out = Path(tempfile.mkdtemp(prefix="bench-import-"))
    write_csv(export, out)
    counts = export.counts()
    print(f"generated {args.size} (seed {args.seed}) in {time.monotonic() - t0:.1f} s: {counts}")
    ns = f"bench{uuid.uuid4().hex[:6]}"
    async with contextlib.AsyncExitStack() as es:
        procs: dict[str, ServiceProcess] = {}
        for service, package in SERVICES.items():
            s = bench_settings_for(Settings, ns=ns, service=service, amqp_url=amqp_url, mongodb_url=mongodb_url,
                             declare_topology=True)
            procs[service] = ServiceProcess(package, s)
            es.callback(procs[service].stop)
        t1 = time.monotonic()
        await asyncio.gather(*(p.start() for p in procs.values()))
        print(f"stack up in {time.monotonic() - t1:.1f} s (empty databases)")
        settings = ImportSettings(orgunits_url=procs["orgunits"].url, registry_url=procs["registry"].url,
                                  access_rights_url=procs["access-rights"].url, token="dev-admin",
                                  concurrency=args.concurrency)
        options = Options(day=date.today(), progress=True)
        # The database and the broker are not among the pids: what the machine was busy with
        # beyond the named processes is theirs (and anything else running).
        meter = CpuMeter({**{name: p.proc.pid if p.proc else None for name, p in procs.items()},
                          "importer": os.getpid()})
        report = await run_import(CsvSource(out), settings, options, sys.stdout, sys.stderr)
        shares = meter.shares()
        print(report.summary(), file=sys.stderr)
        secs = report.kind_seconds
        for kind in KINDS:
            n = report.written[kind]
            if n:
                print(f"  {kind:<12} {n:>7} in {secs.get(kind, 0):6.1f} s  {n / max(secs.get(kind, 0), 1e-9):7.0f}/s")
        print(f"  total        {sum(report.written.values()):>7} in {report.seconds:6.1f} s "
              f"(reading state and planning included)  concurrency {args.concurrency}")
        print(f"  CPU cores used: {describe_shares(shares)}; the rest of the {os.cpu_count()} cores: "
              "database, broker, anything else")
        peaks = {name: rss_peak_mb(p.proc.pid if p.proc else None) for name, p in procs.items()}
        print("  peak resident memory: " + ", ".join(f"{name} {mb} MB" for name, mb in peaks.items()))
        again = await run_import(CsvSource(out), settings, Options(day=date.today(), progress=False),
                                 sys.stdout, sys.stderr)
        print(f"second run: {again.requests} writes, {sum(again.plan.unchanged.values())} unchanged, "
              f"{again.seconds:.1f} s")
    shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="municipality")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with bench_servers("import") as (amqp_url, mongodb_url):
        asyncio.run(bench(args, amqp_url, mongodb_url))

if __name__ == "__main__":
    main()

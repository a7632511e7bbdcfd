"""bench-municipality: a preset imported through the APIs, then the reads an IT department times.

Starts RabbitMQ and mongo-java-server (``--backend memory`` by default;
``--backend h2`` keeps a file, at a cost: its unique-index lookups serialise
keys to compare them, which made the database server the import's bottleneck;
AMQP_URL / MONGODB_URL point it at running servers instead) and the four
services as processes on fresh databases, then:

1. imports the preset with the HR importer (units/s, persons/s, engagements/s, total);
2. engages ``--big`` people (default 1,100; at most half the preset) in one
   extra unit, and gives that unit a role (the preset's own 400 assignments
   give the rest of the municipality its rights during the import; a role on
   the whole municipality, 30,000 recomputations in one request, is not a read
   and is left out: see docs/performance.md);
3. times reads with one client, HTTP round trip included (p50/p99/max):
   the whole tree, the big unit's people (every page), a person overview,
   address-book search and a person's rights with reasons, once access-rights has
   taken in the import's events and given the big unit its role (it waits at
   most ``--catch-up`` seconds, then reads without the rights), and once the
   machine is quiet (``machine.quiet``: the other consumers may still be working);
4. reads each service's peak resident memory (``VmHWM``) and the database size
   (``dbStats``: the documents' BSON size, what a MongoDB stores before
   compression; with ``--backend h2`` also the file's size).

    python benchmarks/bench_municipality.py --size small --json bench/municipality.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import httpx
from machine import CpuMeter, quiet, rss_peak_mb  # beside this script
from output import emit
from pymongo import AsyncMongoClient

from importer.generate import generate
from importer.readers import CsvSource, write_csv
from importer.service import Options, run_import
from importer.settings import ImportSettings
from orgdir.settings import Settings
from orgdir_tools.localservers import ServerSet, bench_database_heap, run_dir
from orgdir_tools.testkit import ADMIN, ServiceProcess, bench_settings_for
from orgunits.vocabulary import class_uuid

SERVICES = {"orgunits": "orgunits", "registry": "registry", "access-rights": "access_rights", "notifier": "notifier"}
QUERIES = ["jens", "hansen", "skole", "anne", "mette nielsen", "pedersen", "sø", "lars", "børnehus", "kirsten"]


def percentiles(ms: list[float]) -> dict[str, float]:
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return {"p50_ms": round(q[49], 1), "p99_ms": round(q[98], 1), "max_ms": round(max(ms), 1), "n": len(ms)}


async def timed(n: int, call: Any) -> dict[str, float]:
    ms = []
    for i in range(n):
        t = time.perf_counter()
        await call(i)
        ms.append((time.perf_counter() - t) * 1000)
    return percentiles(ms)


async def until_ok(call: Any, within: float = 300, every: float = 0.5) -> None:
    deadline = time.monotonic() + within
    while not await call():
        if time.monotonic() > deadline:
            raise RuntimeError("not within the time allowed")
        await asyncio.sleep(every)


async def first_root(client: httpx.AsyncClient) -> str:
    """A unit without a parent, from every page (at 3,000 units the first page may hold none)."""
    cursor: str | None = None
    while True:
        params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
        body = (await client.get("/api/v1/orgunits", params=params)).raise_for_status().json()
        for unit in body["items"]:
            if unit.get("parent") is None:
                return str(unit["uuid"])
        cursor = body.get("next_cursor")
        if not cursor:
            raise RuntimeError("no root unit")


async def bench(args: argparse.Namespace, servers: ServerSet | None, amqp_url: str, mongodb_url: str) -> dict[str, Any]:
    results: dict[str, Any] = {"preset": args.size}
    export = generate(args.size, args.seed)
    out = Path(tempfile.mkdtemp(prefix="bench-municipality-"))
    write_csv(export, out)
    ns = f"benchm{uuid.uuid4().hex[:6]}"
    today = date.today()
    async with contextlib.AsyncExitStack() as es:
        procs: dict[str, ServiceProcess] = {}
        for service, package in SERVICES.items():
            s = bench_settings_for(Settings, ns=ns, service=service, amqp_url=amqp_url, mongodb_url=mongodb_url,
                             declare_topology=True)
            procs[service] = ServiceProcess(package, s)
            es.callback(procs[service].stop)
        await asyncio.gather(*(p.start() for p in procs.values()))
        http = {name: await es.enter_async_context(httpx.AsyncClient(base_url=p.url, headers=ADMIN, timeout=120))
                for name, p in procs.items()}

        pids = {name: p.proc.pid if p.proc else None for name, p in procs.items()}
        if servers is not None and servers.mongo is not None:
            pids["mongo-java-server"] = servers.mongo.pid
        if servers is not None and servers.rabbit is not None:
            pids["rabbitmq"] = servers.rabbit.pid

        # 1. The import (and where its CPU went: the bottleneck, measured).
        meter = CpuMeter({**pids, "importer (this process)": os.getpid()})
        settings = ImportSettings(orgunits_url=procs["orgunits"].url, registry_url=procs["registry"].url,
                                  access_rights_url=procs["access-rights"].url, token="dev-admin",
                                  concurrency=args.concurrency)
        try:
            report = await run_import(CsvSource(out), settings, Options(day=today, progress=True), sys.stderr,
                                      sys.stderr)
        except Exception:  # which process went away, and how (-9: killed from outside)
            print(f"exit codes: { {name: p.proc.poll() if p.proc else None for name, p in procs.items()} }",
                  file=sys.stderr)
            raise
        secs = report.kind_seconds
        results["import"] = {
            "counts": dict(export.counts()),
            **{f"{kind}_per_s": round(report.written[kind] / max(secs.get(kind, 0), 1e-9))
               for kind in ("units", "persons", "engagements") if report.written[kind]},
            "total_seconds": round(report.seconds, 1),
            "written": sum(report.written.values()),
            "concurrency": args.concurrency,
        }
        results["import"]["cpu_share"] = meter.shares()
        print(f"import: {results['import']}", file=sys.stderr, flush=True)
        t_import_end = time.monotonic()

        # 2. One big unit, and roles.
        root = await first_root(http["orgunits"])
        big = str(uuid.uuid4())
        r = await http["orgunits"].put(f"/api/v1/orgunits/{big}", json={
            "user_key": "BENCH-JOBCENTER", "name": "Jobcentret", "parent": root, "validity": {"from": "2020-01-01"},
            "unit_type": class_uuid("unit_type", "forvaltning"), "unit_level": class_uuid("unit_level", "center")})
        r.raise_for_status()
        persons: list[str] = []
        cursor = None
        while True:
            page = (await http["registry"].get("/api/v1/persons", params={
                "limit": 1000, **({"cursor": cursor} if cursor else {})})).json()
            persons += [p["uuid"] for p in page["items"]]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        n_big = min(args.big, len(persons) // 2)
        engaged = random.Random(1).sample(persons, n_big)
        sem = asyncio.Semaphore(16)

        async def engage(person: str) -> None:
            body = {"person": person, "unit": big, "primary": False,
                    "job_function": class_uuid("job_function", "sagsbehandler"),
                    "engagement_type": class_uuid("engagement_type", "ansat"), "validity": {"from": "2021-01-01"}}
            async with sem:
                async def put() -> bool:
                    r = await http["registry"].put(f"/api/v1/engagements/{uuid.uuid4()}", json=body)
                    return r.status_code in (200, 201)
                await until_ok(put)

        t = time.monotonic()
        await asyncio.gather(*(engage(p) for p in engaged))
        print(f"{n_big} people engaged in one unit in {time.monotonic() - t:.1f} s", file=sys.stderr, flush=True)
        it, roles = str(uuid.uuid4()), [str(uuid.uuid4())]
        always = {"from": "2020-01-01", "to": None}
        (await http["access-rights"].put(f"/api/v1/it-systems/{it}", json={
            "validity": always, "user_key": "AD", "name": "AD", "username_rule": "{given:3}{surname:3}",
            "offboarding": "disable", "grace_days": 0})).raise_for_status()
        for role, name in zip(roles, ("Jobcenter",), strict=True):
            (await http["access-rights"].put(f"/api/v1/roles/{role}", json={
                "validity": always, "it_system": it, "name": name, "sensitive": False})).raise_for_status()
        for role, unit, inherit in ((roles[0], big, False),):
            aid = str(uuid.uuid4())  # one per assignment: a retry after a lost answer writes nothing new

            async def assign(role: str = role, unit: str = unit, inherit: bool = inherit, aid: str = aid) -> bool:
                r = await http["access-rights"].put(f"/api/v1/assignments/{aid}", json={
                    "validity": always, "role": role, "unit": unit, "inherit": inherit})
                if r.status_code not in (200, 201):
                    print(f"assignment: {r.status_code} {r.text[:200]}", file=sys.stderr, flush=True)
                return r.status_code in (200, 201)
            # access-rights learns the units from events: at this size it can be minutes behind the import
            assigning = asyncio.create_task(until_ok(assign, within=args.catch_up))

        async def people_all(_: int = 0) -> int:
            n, cursor = 0, None
            while True:
                r = await http["registry"].get(f"/api/v1/orgunits/{big}/people", params={
                    "limit": 1000, **({"cursor": cursor} if cursor else {})})
                r.raise_for_status()
                body = r.json()
                n += len(body["items"])
                cursor = body.get("next_cursor")
                if not cursor:
                    return n

        await until_ok(lambda: _eq(people_all(), n_big))

        async def rights_done() -> bool:  # every big-unit person holds the role: access-rights caught up
            r = await http["access-rights"].get(f"/api/v1/roles/{roles[0]}/holders", params={"limit": 1000})
            return r.status_code == 200 and len(r.json()["items"]) >= min(n_big, 1000)

        # 3. Reads, once access-rights has taken in the import's events (measured under its catch-up,
        # the reads shared two saturated cores: the big unit's p99 was 2.4 s).
        caught_up = True
        try:
            await assigning
            # Every 5 s: a role's holders are computed per candidate (1,100 here), about a second of
            # access-rights' CPU per call, which polling every 0.5 s took from its consumer.
            await until_ok(rights_done, within=max(60.0, args.catch_up - (time.monotonic() - t_import_end)), every=5)
        except RuntimeError:
            caught_up = False
            results["access_rights_caught_up_seconds"] = None
            print(f"access-rights had not taken in the import's events {args.catch_up:.0f} s after it: "
                  "reads under its load, no rights read", file=sys.stderr, flush=True)
        else:
            results["access_rights_caught_up_seconds"] = round(time.monotonic() - t_import_end, 1)
            print(f"access-rights caught up {results['access_rights_caught_up_seconds']} s after the import",
                  file=sys.stderr, flush=True)
        waited, busy = await quiet()
        results["quiet_before_reads"] = {"waited_seconds": waited, "machine_busy": busy}
        print(f"reads start {waited} s later, the machine {busy:.0%} busy", file=sys.stderr, flush=True)
        rng = random.Random(2)
        sample = [rng.choice(engaged) for _ in range(args.reads)]
        reads: dict[str, Any] = {}
        results["reads"] = reads

        async def get(client: httpx.AsyncClient, path: str, **params: Any) -> None:
            r = await client.get(path, params=params)
            r.raise_for_status()

        reads["tree"] = await timed(max(20, args.reads // 5), lambda i: get(http["orgunits"], "/api/v1/tree"))
        gc0 = await full_collections(http["registry"])
        reads["unit_people"] = await timed(max(20, args.reads // 5), people_all)
        reads["unit_people"]["people"] = n_big
        gc1 = await full_collections(http["registry"])
        # the registry's full garbage collections while the big unit was read: does the p99 wait for one?
        reads["unit_people"]["registry_full_gc"] = {
            "count": int(gc1[0] - gc0[0]),
            "seconds": round(gc1[1] - gc0[1], 3),
            "over_half_a_second": int(gc1[2] - gc0[2]),
        }
        reads["person_overview"] = await timed(args.reads, lambda i: get(
            http["registry"], f"/api/v1/persons/{sample[i]}/overview"))
        reads["search"] = await timed(args.reads, lambda i: get(http["registry"], "/api/v1/search",
                                                                 q=QUERIES[i % len(QUERIES)]))
        reads["search"]["persons"] = len(persons)
        if caught_up:
            reads["rights_with_reasons"] = await timed(args.reads, lambda i: get(
                http["access-rights"], f"/api/v1/persons/{sample[i]}/rights"))
        for name, figures in reads.items():
            print(f"{name:<22} p50 {figures['p50_ms']:7.1f} ms  p99 {figures['p99_ms']:7.1f} ms  "
                  f"max {figures['max_ms']:7.1f} ms", file=sys.stderr, flush=True)

        # 4. Memory and storage.
        results["database_bson_mb"] = await bson_mb(mongodb_url, [p.settings.database for p in procs.values()])
        results["peak_rss_mb"] = {name: rss_peak_mb(p.proc.pid if p.proc else None) for name, p in procs.items()}
        if servers is not None:
            if servers.mongo is not None:
                results["peak_rss_mb"]["mongo-java-server"] = rss_peak_mb(servers.mongo.pid)
            if servers.rabbit is not None:
                results["peak_rss_mb"]["rabbitmq"] = rss_peak_mb(servers.rabbit.pid)
    if servers is not None and servers.mongo is not None and servers.mongo.data_file.is_file():
        results["database_mb"] = round(servers.mongo.data_file.stat().st_size / 1e6, 1)
    shutil.rmtree(out, ignore_errors=True)
    return results


async def full_collections(client: httpx.AsyncClient) -> tuple[float, float, float]:
    """A service's full (generation 2) garbage collections so far: count, seconds, count over 0.5 s."""
    text = (await client.get("/metrics")).text
    count = total = upto_half = 0.0
    for line in text.splitlines():
        if not line.startswith("orgdir_gc_pause_seconds") or 'generation="2"' not in line:
            continue
        value = float(line.rsplit(" ", 1)[1])
        if line.startswith("orgdir_gc_pause_seconds_count"):
            count = value
        elif line.startswith("orgdir_gc_pause_seconds_sum"):
            total = value
        elif 'le="0.5"' in line:
            upto_half = value
    return count, total, count - upto_half


async def bson_mb(mongodb_url: str, databases: list[str]) -> float:
    """The services' documents as BSON (``dbStats.dataSize``), indexes left out."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_url)
    try:
        sizes = [await client[name].command("dbstats") for name in databases]
    finally:
        await client.close()
    return round(sum(float(s.get("dataSize", 0)) for s in sizes) / 1e6, 1)


async def _eq(value: Any, want: Any) -> bool:
    return bool(await value == want)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="municipality", help="importer preset: tiny, small, municipality")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--big", type=int, default=1100, help="people engaged in one unit")
    parser.add_argument("--reads", type=int, default=200, help="timed requests per read (tree and unit: a fifth)")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    parser.add_argument("--backend", choices=("memory", "h2"), default="memory", help="mongo-java-server's backend")
    parser.add_argument("--catch-up", type=float, default=1800,
                        help="seconds access-rights may take after the import before the rights read is dropped")
    args = parser.parse_args()
    servers = None
    amqp_url, mongodb_url = os.environ.get("AMQP_URL"), os.environ.get("MONGODB_URL")
    base = run_dir() / f"bench-municipality-{os.getpid()}"
    if not (amqp_url and mongodb_url):
        bench_database_heap()
        servers = ServerSet.for_dir(base, rabbit_name=f"benchmun{os.getpid()}", mongo_backend=args.backend)
        servers.start()
        amqp_url, mongodb_url = servers.amqp_url, servers.mongodb_url
    try:
        results = asyncio.run(bench(args, servers, amqp_url, mongodb_url))
    except BaseException:
        if servers is not None and servers.mongo is not None and servers.mongo.log_file.is_file():
            kept = run_dir() / "bench-municipality-mongo.log"  # why the database went away, if it did
            shutil.copy(servers.mongo.log_file, kept)
            print(f"database server log kept in {kept}", file=sys.stderr)
        raise
    finally:
        if servers is not None:
            servers.stop()
            shutil.rmtree(base, ignore_errors=True)
    emit(results, args.json)


if __name__ == "__main__":
    main()

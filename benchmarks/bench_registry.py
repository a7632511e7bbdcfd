"""Registry benchmark: bulk import through the API with concurrent clients, then address-book search.

Starts RabbitMQ and mongo-java-server with orgdir_tools.localservers (unless AMQP_URL /
MONGODB_URL are set), runs the registry under uvicorn in a subprocess, feeds
the unit tree and the vocabulary as orgunits events on the bus (the way the
orgunits service publishes them), then PUTs persons and engagements with
concurrent clients and times ``GET /api/v1/search``.

    python benchmarks/bench_registry.py                 # 30,000 persons, 36,000 engagements, 3,000 units
    python benchmarks/bench_registry.py --persons 5000  # smaller: engagements = 1.2x, units = persons/10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from orgdir.bus import declare_consumer_queue
from orgdir.settings import Settings
from orgdir_tools.localservers import bench_servers
from orgdir_tools.registry_support import OrgFeed
from orgdir_tools.testkit import ServiceProcess, bench_settings_for
from registry.settings import RegistrySettings

ROOT = Path(__file__).resolve().parents[1]
GIVEN = [
    "Søren",
    "Mette",
    "Anders",
    "Anne",
    "Jens",
    "Kirsten",
    "Lars",
    "Hanne",
    "Peter",
    "Lone",
    "Mads",
    "Ida",
    "Niels",
    "Birgitte",
    "Ole",
    "Karen",
    "Rasmus",
    "Freja",
    "Jørgen",
    "Åse",
    "Frederik",
    "Sofie",
    "Mikkel",
    "Emma",
    "Thomas",
    "Louise",
    "Henrik",
    "Camilla",
    "Bjørn",
    "Signe",
]
SURNAMES = [
    "Jensen",
    "Nielsen",
    "Hansen",
    "Pedersen",
    "Andersen",
    "Christensen",
    "Larsen",
    "Sørensen",
    "Rasmussen",
    "Jørgensen",
    "Petersen",
    "Madsen",
    "Kristensen",
    "Olsen",
    "Thomsen",
    "Christiansen",
    "Poulsen",
    "Johansen",
    "Møller",
    "Mortensen",
    "Kjær",
    "Bæk",
    "Lund",
    "Holm",
    "Østergaard",
    "Ågaard",
    "Dahl",
    "Friis",
    "Nørgaard",
    "Bach",
]
WORDS = [
    "Løn",
    "Børn",
    "Skole",
    "Ældre",
    "Kultur",
    "Miljø",
    "Vej",
    "Park",
    "Sundhed",
    "Jobcenter",
    "Plan",
    "Byg",
    "IT",
    "Økonomi",
    "Borger",
    "Havn",
    "Natur",
    "Idræt",
    "Bibliotek",
    "Trafik",
]
CITIES = [
    "Århus",
    "Aalborg",
    "Odense",
    "Esbjerg",
    "Randers",
    "Kolding",
    "Horsens",
    "Vejle",
    "Ærøskøbing",
    "Næstved",
]


def uid(kind: str, n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench-registry:{kind}:{n}"))


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


async def feed_org(feed: OrgFeed, n_units: int) -> tuple[list[str], dict[str, str]]:
    """Classes and a tree of ``n_units`` (fan-out ~8, depth ≤ 5) as orgunits events."""
    classes: dict[str, str] = {}
    for facet, key, name in [
        ("job_function", "konsulent", "Konsulent"),
        ("job_function", "paedagog", "Pædagog"),
        ("job_function", "leder", "Leder"),
        ("engagement_type", "ansat", "Ansat"),
        ("engagement_type", "timeloennet", "Timelønnet"),
    ]:
        classes[key] = await feed.cls(facet, key, name)
    units: list[str] = []
    rng = random.Random(7)
    for i in range(n_units):
        parent = None if i == 0 else units[(i - 1) // 8]
        name = f"{rng.choice(WORDS)} {rng.choice(CITIES)} {i}"
        units.append(await feed.unit(name, parent))
    return units, classes


async def wait_projection(http: httpx.AsyncClient, n_units: int, within: float = 300) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        count, cursor = 0, None
        while True:
            r = await http.get(
                "/api/v1/projection/orgunits",
                params={"limit": 1000, **({"cursor": cursor} if cursor else {})},
            )
            body = r.json()
            count += len(body["items"])
            cursor = body["next_cursor"]
            if not cursor:
                break
        if count >= n_units:
            return
        await asyncio.sleep(0.5)
    raise SystemExit("the registry did not receive the unit tree in time")


async def run_parallel(
    http: httpx.AsyncClient, jobs: list[tuple[str, dict[str, Any]]], clients: int, label: str
) -> tuple[float, int]:
    """PUT every job with ``clients`` concurrent workers, printing progress every 10 s."""
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    for j in jobs:
        queue.put_nowait(j)
    errors = 0

    async def worker() -> None:
        nonlocal errors
        while not queue.empty():
            url, body = queue.get_nowait()
            for _attempt in range(3):
                r = await http.put(url, json=body)
                if r.status_code in (200, 201):
                    break
                if r.status_code < 500:
                    errors += 1
                    if errors <= 3:
                        print(f"  refused: {r.status_code} {r.text[:300]}", flush=True)
                    break
            else:
                errors += 1

    async def report() -> None:
        while True:
            await asyncio.sleep(10)
            done = len(jobs) - queue.qsize()
            rate = done / (time.perf_counter() - started)
            print(f"  {label}: {done:,}/{len(jobs):,} sent, {rate:.0f}/s", flush=True)

    started = time.perf_counter()
    reporter = asyncio.create_task(report())
    try:
        await asyncio.gather(*(worker() for _ in range(clients)))
    finally:
        reporter.cancel()
    return time.perf_counter() - started, errors


async def bench(args: argparse.Namespace, amqp_url: str, mongodb_url: str) -> None:
    n_persons = args.persons
    n_units = max(10, n_persons // 10)
    n_engagements = n_persons + n_persons // 5
    ns = f"bench{os.getpid()}"
    # The outbox fast path publishes each write; the crash-recovery sweep scans every
    # collection (a full scan), so run it rarely during a bulk import.
    registry_settings = bench_settings_for(
        RegistrySettings, ns=ns, service="registry", amqp_url=amqp_url, mongodb_url=mongodb_url
    )
    feed_settings = bench_settings_for(
        Settings, ns=ns, service="orgunits", amqp_url=amqp_url, mongodb_url=mongodb_url
    )
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with ServiceProcess(
        "registry", registry_settings, env={"ORGDIR_RELAY_SWEEP_SECONDS": "60"}
    ) as registry:
        async with httpx.AsyncClient(
            base_url=registry.url,
            headers={"Authorization": "Bearer dev-writer"},
            timeout=60,
            limits=limits,
        ) as http:
            print(
                f"size: {n_persons} persons, {n_engagements} engagements, {n_units} units, {args.clients} clients",
                flush=True,
            )
            t0 = time.perf_counter()
            async with OrgFeed(feed_settings) as feed:
                # The registry declares its queue in the background; declare it here too
                # (same arguments) so no event published before that is unroutable for it.
                assert feed.bus.connection is not None
                channel = await feed.bus.connection.channel()
                await declare_consumer_queue(
                    channel,
                    f"{ns}.events",
                    f"{ns}.registry.orgunits",
                    ["class.*", "facet.*", "orgunit.*"],
                    Settings().delivery_limit,
                )
                await channel.close()
                units, classes = await feed_org(feed, n_units)
            await wait_projection(http, n_units)
            print(
                f"units fed as events and projected: {n_units} in {time.perf_counter() - t0:.1f} s",
                flush=True,
            )

            rng = random.Random(42)
            names: list[tuple[str, str]] = []
            persons = []
            for i in range(n_persons):
                given, surname = rng.choice(GIVEN), rng.choice(SURNAMES)
                names.append((given, surname))
                mail = (
                    f"{given}.{surname}{i}@kommune.dk".lower()
                    .replace("ø", "oe")
                    .replace("å", "aa")
                    .replace("æ", "ae")
                )
                persons.append(
                    (
                        f"/api/v1/persons/{uid('person', i)}",
                        {
                            "given_name": given,
                            "surname": surname,
                            "user_key": f"P{i:06d}",
                            "validity": {"from": "2015-01-01"},
                            "addresses": [
                                {"scope": "email", "value": mail},
                                {"scope": "phone", "value": f"+45 {20000000 + i}"},
                            ],
                        },
                    )
                )
            elapsed, errors = await run_parallel(http, persons, args.clients, "persons")
            print(
                f"persons: {n_persons} in {elapsed:.1f} s = {n_persons / elapsed:.0f} persons/s ({errors} errors)",
                flush=True,
            )

            engagements = []
            for i in range(n_engagements):
                person = i if i < n_persons else rng.randrange(n_persons)
                engagements.append(
                    (
                        f"/api/v1/engagements/{uid('engagement', i)}",
                        {
                            "person": uid("person", person),
                            "unit": units[rng.randrange(n_units)],
                            "job_function": classes[rng.choice(["konsulent", "paedagog", "leder"])],
                            "engagement_type": classes["ansat" if i < n_persons else "timeloennet"],
                            "primary": i < n_persons,
                            "fraction": 1.0 if i < n_persons else 0.2,
                            "user_key": f"E{i:06d}",
                            "validity": {"from": "2020-01-01"},
                        },
                    )
                )
            elapsed_e, errors = await run_parallel(http, engagements, args.clients, "engagements")
            print(
                f"engagements: {n_engagements} in {elapsed_e:.1f} s = "
                f"{n_engagements / elapsed_e:.0f} engagements/s ({errors} errors)",
                flush=True,
            )
            total = elapsed + elapsed_e
            print(
                f"import: {n_persons} persons + {n_engagements} engagements in {total:.1f} s = "
                f"{n_persons / total:.0f} persons/s including their engagements",
                flush=True,
            )

            queries = []
            for _ in range(args.queries):
                kind = rng.random()
                g, s = names[rng.randrange(n_persons)]
                if kind < 0.3:
                    queries.append(f"{g} {s}")
                elif kind < 0.5:
                    queries.append(s[:3].replace("ø", "o").replace("å", "aa"))
                elif kind < 0.7:
                    queries.append(rng.choice(CITIES).replace("Å", "Aa"))
                elif kind < 0.85:
                    queries.append(f"{20000000 + rng.randrange(n_persons)}")
                else:
                    queries.append(f"{g.lower()} {rng.choice(WORDS)}")
            for q in queries[:20]:  # warm up
                await http.get("/api/v1/search", params={"q": q})
            lat: list[float] = []
            hits = 0
            for q in queries:
                t = time.perf_counter()
                r = await http.get("/api/v1/search", params={"q": q})
                lat.append((time.perf_counter() - t) * 1000)
                hits += bool(r.json()["items"])
            print(
                f"search: {len(lat)} queries, p50 {statistics.median(lat):.1f} ms, p99 {pct(lat, 99):.1f} ms, "
                f"max {max(lat):.1f} ms ({hits} with hits; one client, HTTP round trip included)",
                flush=True,
            )
            metrics = (await http.get("/metrics")).text
            for line in metrics.splitlines():
                if (
                    line.startswith("orgdir_http_request_duration_seconds_sum")
                    and "/api/v1/search" in line
                ):
                    print(
                        f"server-side search time total: {float(line.rsplit(' ', 1)[1]) * 1000:.0f} ms",
                        flush=True,
                    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--persons", type=int, default=30000, help="persons (engagements = 1.2x, units = /10)"
    )
    parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients")
    parser.add_argument("--queries", type=int, default=1000, help="search queries to time")
    args = parser.parse_args()
    with bench_servers("registry") as (amqp_url, mongodb_url):
        asyncio.run(bench(args, amqp_url, mongodb_url))

if __name__ == "__main__":
    main()

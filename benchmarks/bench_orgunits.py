"""Benchmark of services/orgunits: build a 3,000-unit tree of depth 8 through the API, read it whole.

Starts its own RabbitMQ and mongo-java-server (unless AMQP_URL / MONGODB_URL are set),
runs the service under uvicorn in a subprocess on a free port, and drives it
with concurrent httpx clients. Prints:

- units/s created (PUT with client UUIDs, parents before children, N clients);
- p50/p99 of ``GET /api/v1/tree`` for the whole tree (the service caches the
  rendered tree per date until the next write);
- p50/p99 of the same right after a write (the tree view is rebuilt), and for
  dates never asked before (built from the unit cache).

Usage: ``python benchmarks/bench_orgunits.py [--units 3000] [--depth 8] [--clients 16]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

import httpx

from orgdir.settings import Settings
from orgdir_tools.cli import wait_ready
from orgdir_tools.localservers import ServerSet, free_port, port_open, run_dir
from orgdir_tools.testkit import auth_environment, settings_for

ROOT = Path(__file__).resolve().parents[1]
HEADERS = {"Authorization": "Bearer dev-admin"}


def level_sizes(units: int, depth: int) -> list[int]:
    """Sizes per level: one root, then growing by a common factor to reach ``units`` at ``depth``."""
    lo, hi = 1.0, 50.0
    for _ in range(60):
        f = (lo + hi) / 2
        total = sum(round(f**i) for i in range(depth))
        lo, hi = (f, hi) if total < units else (lo, f)
    sizes = [max(1, round(lo**i)) for i in range(depth)]
    sizes[-1] += units - sum(sizes)
    return sizes


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def report(what: str, ms: list[float]) -> None:
    print(f"{what:<45} p50 {pct(ms, 50):7.1f} ms   p99 {pct(ms, 99):7.1f} ms   (n={len(ms)})", flush=True)


async def build_tree(base: str, sizes: list[int], clients: int) -> tuple[int, float, list[str]]:
    rng = random.Random(42)
    start = (date.today() - timedelta(days=365)).isoformat()
    queue: asyncio.Queue[tuple[str, dict[str, object]]] = asyncio.Queue()
    errors: list[str] = []
    ids: list[list[str]] = []
    n = 0

    async def worker(http: httpx.AsyncClient) -> None:
        while True:
            uid, body = await queue.get()
            try:
                for attempt in range(5):
                    r = await http.put(f"/api/v1/orgunits/{uid}", json=body)
                    if r.status_code in (200, 201):
                        break
                    if r.status_code < 500 and r.status_code != 409:
                        errors.append(f"{r.status_code} {r.text[:200]}")
                        break
                    await asyncio.sleep(0.05 * (attempt + 1))
            finally:
                queue.task_done()

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, headers=HEADERS, limits=limits, timeout=60) as http:
        workers = [asyncio.create_task(worker(http)) for _ in range(clients)]
        started = time.perf_counter()
        for depth, size in enumerate(sizes):
            level = [str(uuid.uuid4()) for _ in range(size)]
            for uid in level:
                parent = rng.choice(ids[-1]) if ids else None
                n += 1
                queue.put_nowait((uid, {
                    "user_key": f"U{n:05d}",
                    "name": f"Enhed {n} (niveau {depth + 1})",
                    "parent": parent,
                    "unit_type": "afdeling",
                    "validity": {"from": start},
                }))
            await queue.join()  # parents exist before their children are written
            ids.append(level)
            print(f"  level {depth + 1}: {size} units, {n} in {time.perf_counter() - started:.1f} s", flush=True)
        elapsed = time.perf_counter() - started
        for w in workers:
            w.cancel()
    return n, elapsed, errors


async def wait_published(http: httpx.AsyncClient, build_seconds: float, limit: float = 60) -> None:
    """Let the outbox relay catch up, so reads are measured without its load (the gauge is the sweep's)."""
    started = time.perf_counter()
    backlog = -1.0
    while time.perf_counter() - started < limit:
        text = (await http.get("/metrics")).text
        values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith("orgdir_outbox_backlog{")]
        backlog = sum(values) if values else -1.0
        if values and backlog == 0:
            break
        await asyncio.sleep(1)
    waited = time.perf_counter() - started
    if backlog == 0:
        print(f"outbox drained {waited:.0f} s after the last write: all events published within "
              f"{build_seconds + waited:.0f} s of the first write", flush=True)
    else:
        print(f"outbox NOT drained {waited:.0f} s after the last write: {backlog:.0f} events still waiting "
              "(reads below are measured with the relay still busy)", flush=True)


async def time_gets(http: httpx.AsyncClient, path: str, params: list[dict[str, str]]) -> list[float]:
    out: list[float] = []
    for p in params:
        t = time.perf_counter()
        r = await http.get(path, params=p)
        out.append((time.perf_counter() - t) * 1000)
        r.raise_for_status()
    return out


async def bench(base: str, units: int, depth: int, clients: int) -> None:
    sizes = level_sizes(units, depth)
    print(f"tree: {units} units, depth {depth}, level sizes {sizes}, {clients} concurrent clients")
    n, elapsed, errors = await build_tree(base, sizes, clients)
    print(f"created {n} units in {elapsed:.1f} s: {n / elapsed:.0f} units/s ({len(errors)} errors)")
    for e in errors[:5]:
        print("  error:", e)
    async with httpx.AsyncClient(base_url=base, headers=HEADERS, timeout=60) as http:
        await wait_published(http, elapsed)
        r = await http.get("/api/v1/tree")
        body = r.json()
        print(f"GET /api/v1/tree: {body['count']} units, {len(r.content) / 1e6:.2f} MB")
        await time_gets(http, "/api/v1/tree", [{}] * 5)
        warm = await time_gets(http, "/api/v1/tree", [{}] * 200)
        report("GET /api/v1/tree (whole tree)", warm)
        rebuilt: list[float] = []
        leaf = body["roots"][0]
        while leaf.get("children"):
            leaf = leaf["children"][0]
        for i in range(30):
            r = await http.patch(f"/api/v1/orgunits/{leaf['uuid']}", json={"name": f"Omdøbt {i}"})
            r.raise_for_status()
            rebuilt += await time_gets(http, "/api/v1/tree", [{}])
        report("GET /api/v1/tree (right after a write)", rebuilt)
        days = [{"at": (date.today() + timedelta(days=i + 1)).isoformat()} for i in range(40)]
        cold = await time_gets(http, "/api/v1/tree", days)
        report("GET /api/v1/tree?at=<new date each time>", cold)
        search = await time_gets(http, "/api/v1/orgunits", [{"q": f"enhed {i}"} for i in range(1, 101)])
        report("GET /api/v1/orgunits?q=…", search)
        print(f"(mean of cached tree reads: {statistics.mean(warm):.1f} ms)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--units", type=int, default=3000)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()

    work = run_dir() / f"bench-orgunits-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    servers = ServerSet.for_dir(work, rabbit_name=f"benchou{os.getpid()}")
    servers.start()
    port = free_port()
    ns = f"b{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "ORGDIR_MONGODB_URL": servers.mongodb_url,
        "ORGDIR_AMQP_URL": servers.amqp_url,
        "ORGDIR_DATABASE": f"{ns}_orgunits",
        "ORGDIR_EXCHANGE": f"{ns}.events",
        "ORGDIR_QUEUE_PREFIX": f"{ns}.",
        "ORGDIR_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
        # the same auth settings as the tests (static dev tokens, explicitly allowed)
        **auth_environment(settings_for(Settings, ns=ns, service="orgunits", amqp_url=servers.amqp_url,
                                        mongodb_url=servers.mongodb_url)),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "orgunits.app:create_app",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"],
        env=env, cwd=ROOT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        asyncio.run(wait_ready(base, proc, 60, "orgunits"))
        assert port_open(port)
        asyncio.run(asyncio.wait_for(bench(base, args.units, args.depth, args.clients), 600))
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        servers.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

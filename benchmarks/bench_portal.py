"""bench-portal: time to a usable portal page, measured in the browser (Debian's chromium, headless).

Starts RabbitMQ and mongo-java-server (or uses AMQP_URL / MONGODB_URL), the four services and the
portal as processes on a fresh namespace, and times two data sets one after the other:

* ``demo``: the hand-made demo municipality (``orgdir_tools.demo``), plus a unit with ``--big``
  (1,100) people engaged and a role on the whole tree (so person pages carry rights with reasons);
* ``tree3000``: the same, with a generated municipality of 3,000 units (``--units``) imported beside
  it through the HR importer (the tree, its branches and unit search then span 3,000+ units).

Signed in as the dev admin, it times, p50/p99/max:

* full pages (``tree``, ``unit`` with 1,100 people, ``person``, ``people search``): Navigation Timing
  from the start of navigation to the end of the load event (HTML, CSS and the deferred htmx script
  done, so the page responds), after checking the page's content is there;
* htmx fragments (``tree branch`` opened, ``unit search`` as you type): from the trigger to the
  fragment swapped into the page (``htmx:afterSwap``), measured in the page with ``performance.now()``.
  Search-as-you-type waits 200 ms after the last keystroke before it asks (debounce, on purpose);
  that wait is left out: the figure is what the user waits after it.

    python benchmarks/bench_portal.py                  # both data sets (about 10 minutes on 2 busy cores)
    python benchmarks/bench_portal.py --only demo --samples 20 --json bench/portal.json
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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx
from output import emit  # beside this script
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from orgdir.settings import Settings
from orgdir_tools import demo
from orgdir_tools.browser import headless_chromium
from orgdir_tools.localservers import ServerSet, run_dir
from orgdir_tools.testkit import ADMIN, ServiceProcess, bench_settings_for
from orgunits.vocabulary import class_uuid
from portal.settings import PortalSettings

SERVICES = {"orgunits": "orgunits", "registry": "registry", "access-rights": "access_rights", "notifier": "notifier"}
UNIT_QUERIES = ["skole", "oe", "børn", "center", "team", "aa", "pleje", "adm", "dag", "hus"]
PEOPLE_QUERIES = ["anne", "hansen", "mette", "jensen", "søren", "lars", "nielsen", "kirsten"]
GIVEN = ["Anne", "Mette", "Hanne", "Kirsten", "Søren", "Lars", "Jens", "Peter", "Åse", "Ida", "Mads", "Emma"]
SURNAMES = ["Nielsen", "Jensen", "Hansen", "Pedersen", "Andersen", "Sørensen", "Larsen", "Møller", "Østergaard"]
ALWAYS = {"from": "2020-01-01", "to": None}
GOAL_MS = 300.0

# In the page: the navigation's timing once its load event has ended.
NAVIGATION = """
const n = performance.getEntriesByType('navigation')[0];
return n && n.loadEventEnd > 0 ? {ttfb: n.responseStart - n.startTime, dcl: n.domContentLoadedEventEnd - n.startTime,
                                  usable: n.loadEventEnd - n.startTime} : null;
"""
# In the page: trigger an htmx request on an element and report when its answer is swapped in.
FRAGMENT = """
const [selector, value, trigger, done] = arguments;
const el = document.querySelector(selector);
const t0 = performance.now();
document.body.addEventListener('htmx:afterSwap', (e) => done(performance.now() - t0), {once: true});
if (value !== null) { el.value = value; }
if (trigger === 'click') { el.click(); } else { htmx.trigger(el, trigger); }
"""


def percentiles(ms: list[float]) -> dict[str, float]:
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return {"p50_ms": round(q[49], 1), "p99_ms": round(q[98], 1), "max_ms": round(max(ms), 1), "n": len(ms)}


async def until_ok(call: Callable[[], Any], within: float = 300) -> None:
    deadline = time.monotonic() + within
    while not await call():
        if time.monotonic() > deadline:
            raise RuntimeError("not within the time allowed")
        await asyncio.sleep(0.3)


@dataclass
class Data:
    """What a data set holds that the pages are timed on."""

    root: str = ""
    big: str = ""
    branches: list[str] = field(default_factory=list)  # children of a root that have children of their own
    persons: list[str] = field(default_factory=list)  # engaged in the big unit
    units: int = 0


@contextlib.asynccontextmanager
async def stack(amqp_url: str, mongodb_url: str) -> AsyncIterator[tuple[dict[str, httpx.AsyncClient], str]]:
    """The four services and the portal as processes on a fresh namespace; admin clients and the portal URL."""
    ns = f"benchp{uuid.uuid4().hex[:6]}"
    async with contextlib.AsyncExitStack() as es:
        procs = {}
        for service, package in SERVICES.items():
            s = bench_settings_for(Settings, ns=ns, service=service, amqp_url=amqp_url, mongodb_url=mongodb_url,
                             declare_topology=True)
            procs[service] = ServiceProcess(package, s)
            es.callback(procs[service].stop)
        portal = ServiceProcess("portal", bench_settings_for(PortalSettings, ns=ns, service="portal", amqp_url=amqp_url,
                                                       mongodb_url=mongodb_url), env={
            "ORGDIR_ORGUNITS_URL": procs["orgunits"].url, "ORGDIR_REGISTRY_URL": procs["registry"].url,
            "ORGDIR_ACCESS_RIGHTS_URL": procs["access-rights"].url, "ORGDIR_NOTIFIER_URL": procs["notifier"].url})
        es.callback(portal.stop)
        await asyncio.gather(*(p.start() for p in [*procs.values(), portal]))
        http = {name: await es.enter_async_context(httpx.AsyncClient(base_url=p.url, headers=ADMIN, timeout=120))
                for name, p in procs.items()}
        yield http, portal.url


async def load_demo(http: dict[str, httpx.AsyncClient]) -> None:
    """The hand-made demo (the notifier's subscriptions left out: nobody receives them here)."""
    for name, load in demo.LOADERS:
        if name != "notifier":
            await load(http[name])


async def load_generated(http: dict[str, httpx.AsyncClient], units: int) -> None:
    """A generated municipality of ``units`` units (few people: the big unit brings its own) via the importer."""
    from importer.generate import Size, generate
    from importer.readers import CsvSource, write_csv
    from importer.service import Options, run_import
    from importer.settings import ImportSettings

    export = generate(Size(units=units, people=300, engagements=330, levels=8, it_systems=3, roles=10,
                           assignments=10, associations=20), 1)
    out = Path(tempfile.mkdtemp(prefix="bench-portal-"))
    try:
        write_csv(export, out)
        settings = ImportSettings(orgunits_url=str(http["orgunits"].base_url),
                                  registry_url=str(http["registry"].base_url),
                                  access_rights_url=str(http["access-rights"].base_url), token="dev-admin",
                                  concurrency=16)
        report = await run_import(CsvSource(out), settings, Options(day=date.today(), progress=True), sys.stderr,
                                  sys.stderr)
        if report.exit_code != 0:
            raise RuntimeError(f"import failed: {report.summary()}")
    finally:
        shutil.rmtree(out, ignore_errors=True)


async def big_unit(http: dict[str, httpx.AsyncClient], n: int) -> Data:
    """A unit under the root with ``n`` people engaged, and a role on the whole tree (rights with reasons)."""
    data = Data()
    roots = (await http["orgunits"].get("/api/v1/orgunits", params={"roots": "true", "limit": 10})).json()["items"]
    data.root = roots[0]["uuid"]
    data.big = str(uuid.uuid4())
    r = await http["orgunits"].put(f"/api/v1/orgunits/{data.big}", json={
        "user_key": "BENCH-JOBCENTER", "name": "Jobcentret", "parent": data.root, "validity": ALWAYS,
        "unit_type": class_uuid("unit_type", "forvaltning"), "unit_level": class_uuid("unit_level", "center")})
    r.raise_for_status()
    rng = random.Random(3)
    sem = asyncio.Semaphore(16)

    async def engage(i: int) -> str:
        person = str(uuid.uuid4())
        async with sem:
            r = await http["registry"].put(f"/api/v1/persons/{person}", json={
                "given_name": rng.choice(GIVEN), "surname": f"{rng.choice(SURNAMES)} {i}",
                "validity": {"from": "1980-01-01"}})
            r.raise_for_status()

            async def put() -> bool:  # the registry learns the new unit from orgunits' events
                r = await http["registry"].put(f"/api/v1/engagements/{uuid.uuid4()}", json={
                    "person": person, "unit": data.big, "primary": True, "validity": {"from": "2021-01-01"},
                    "job_function": class_uuid("job_function", "sagsbehandler"),
                    "engagement_type": class_uuid("engagement_type", "ansat")})
                return r.status_code in (200, 201)

            await until_ok(put)
        return person

    t = time.monotonic()
    data.persons = list(await asyncio.gather(*(engage(i) for i in range(n))))
    print(f"  {n} people engaged in one unit in {time.monotonic() - t:.1f} s", file=sys.stderr, flush=True)
    it, role = str(uuid.uuid4()), str(uuid.uuid4())
    acc = http["access-rights"]
    (await acc.put(f"/api/v1/it-systems/{it}", json={
        "validity": ALWAYS, "user_key": "BENCH-AD", "name": "Bench AD", "username_rule": "{given:3}{surname:3}",
        "offboarding": "disable", "grace_days": 0})).raise_for_status()
    (await acc.put(f"/api/v1/roles/{role}", json={
        "validity": ALWAYS, "it_system": it, "name": "Fællesdrev", "sensitive": False})).raise_for_status()

    async def assign() -> bool:
        r = await acc.put(f"/api/v1/assignments/{uuid.uuid4()}", json={
            "validity": ALWAYS, "role": role, "unit": data.root, "inherit": True})
        return r.status_code in (200, 201)

    await until_ok(assign)

    async def rights_caught_up() -> bool:  # the last person engaged has the role: access-rights caught up
        r = await acc.get(f"/api/v1/persons/{data.persons[-1]}/rights")
        return r.status_code == 200 and bool(r.json()["rights"])

    await until_ok(rights_caught_up, within=600)
    return data


async def tree_now(http: dict[str, httpx.AsyncClient], data: Data) -> None:
    """The tree's size, and the branches the tree page offers to open (children of a root with children)."""
    data.units = int((await http["orgunits"].get("/api/v1/tree")).json()["count"])
    roots = (await http["orgunits"].get("/api/v1/orgunits", params={"roots": "true", "limit": 10})).json()["items"]
    data.branches = []
    for root in roots:
        node = (await http["orgunits"].get(f"/api/v1/orgunits/{root['uuid']}/subtree", params={"depth": 1})).json()
        data.branches += [c["uuid"] for c in node.get("children", []) if c.get("child_count")]


# --------------------------------------------------------------------------- the browser


def sign_in(driver: WebDriver, portal: str) -> None:
    driver.delete_all_cookies()
    driver.get(f"{portal}/signin")
    driver.find_element(By.ID, "token-admin").click()
    deadline = time.monotonic() + 30
    while not driver.current_url.endswith("/units"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"sign-in did not reach the tree: {driver.current_url}")
        time.sleep(0.05)


def open_page(driver: WebDriver, url: str, ready: str, at_least: int = 1) -> float:
    """Navigate; check the content is there (``at_least`` elements match ``ready``); ms to usable."""
    driver.get(url)
    timing = None
    deadline = time.monotonic() + 10
    while timing is None:
        timing = driver.execute_script(NAVIGATION)
        if time.monotonic() > deadline:
            raise RuntimeError(f"no navigation timing on {url}")
    found = len(driver.find_elements(By.CSS_SELECTOR, ready))
    if found < at_least:
        raise RuntimeError(f"{url}: {found} x {ready!r}, expected at least {at_least}")
    return float(timing["usable"])


def fragment(driver: WebDriver, selector: str, value: str | None, trigger: str) -> float:
    """Ms from triggering an htmx request on ``selector`` to its answer swapped into the page."""
    return float(driver.execute_async_script(FRAGMENT, selector, value, trigger))


def measure(driver: WebDriver, portal: str, data: Data, samples: int) -> dict[str, dict[str, float]]:
    rng = random.Random(4)
    times: dict[str, list[float]] = {k: [] for k in
                                     ("tree", "tree branch", "unit (1,100 people)", "person", "unit search",
                                      "people search")}
    for i in range(samples + 2):  # the first two rounds warm up (templates, connection pools), not counted
        keep = i >= 2
        t = open_page(driver, f"{portal}/units", "ul.tree li.node")
        branch = data.branches[i % len(data.branches)] if data.branches else None
        b = fragment(driver, f"li[data-uuid='{branch}'] button.twisty", None, "click") if branch else None
        s = fragment(driver, "#unit-q", UNIT_QUERIES[i % len(UNIT_QUERIES)], "search")
        u = open_page(driver, f"{portal}/units/{data.big}", "#people table.people tbody tr", 100)
        p = open_page(driver, f"{portal}/persons/{rng.choice(data.persons)}", "main table tbody tr", 2)
        q = open_page(driver, f"{portal}/persons?q={PEOPLE_QUERIES[i % len(PEOPLE_QUERIES)]}", "main section.card")
        if keep:
            times["tree"].append(t)
            if b is not None:
                times["tree branch"].append(b)
            times["unit (1,100 people)"].append(u)
            times["unit search"].append(s)
            times["person"].append(p)
            times["people search"].append(q)
    return {name: percentiles(ms) for name, ms in times.items() if ms}


# --------------------------------------------------------------------------- running


def report(name: str, data: Data, pages: dict[str, dict[str, float]], load: tuple[float, float]) -> dict[str, Any]:
    print(f"\n[{name}] {data.units} units, {len(data.persons)} people in one unit; load average (1 min) "
          f"{load[0]:.1f} → {load[1]:.1f}", file=sys.stderr)
    for page, f in pages.items():
        flag = "" if f["p99_ms"] < GOAL_MS else f"  (over the {GOAL_MS:.0f} ms goal)"
        print(f"  {page:<22} p50 {f['p50_ms']:7.1f} ms  p99 {f['p99_ms']:7.1f} ms  max {f['max_ms']:7.1f} ms"
              f"  n={f['n']}{flag}", file=sys.stderr, flush=True)
    return {"units": data.units, "people_in_big_unit": len(data.persons), "pages": pages,
            "load_1min": [round(x, 2) for x in load]}


async def run(args: argparse.Namespace, amqp_url: str, mongodb_url: str) -> dict[str, Any]:
    """One stack: the demo (and the big unit) timed; then the generated tree imported beside it, timed again."""
    sets = args.only.split(",")
    results: dict[str, Any] = {}
    print("[stack] starting the services and the portal", file=sys.stderr, flush=True)
    async with stack(amqp_url, mongodb_url) as (http, portal):
        t = time.monotonic()
        await load_demo(http)
        data = await big_unit(http, args.big)
        print(f"  demo and big unit loaded in {time.monotonic() - t:.0f} s", file=sys.stderr, flush=True)
        driver = headless_chromium()
        driver.set_script_timeout(30)
        try:
            sign_in(driver, portal)
            for name in sets:
                if name == "tree3000":
                    t = time.monotonic()
                    await load_generated(http, args.units)
                    print(f"  {args.units} units imported in {time.monotonic() - t:.0f} s", file=sys.stderr)
                await tree_now(http, data)
                before = os.getloadavg()[0]
                pages = await asyncio.to_thread(measure, driver, portal, data, args.samples)
                results[name] = report(name, data, pages, (before, os.getloadavg()[0]))
        finally:
            driver.quit()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="demo,tree3000", help="data sets: demo, tree3000")
    parser.add_argument("--units", type=int, default=3000, help="units of the generated tree (tree3000)")
    parser.add_argument("--big", type=int, default=1100, help="people engaged in one unit")
    parser.add_argument("--samples", type=int, default=50, help="timed rounds over the pages per data set")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()
    servers = None
    amqp_url, mongodb_url = os.environ.get("AMQP_URL"), os.environ.get("MONGODB_URL")
    base = run_dir() / f"bench-portal-{os.getpid()}"
    if not (amqp_url and mongodb_url):
        servers = ServerSet.for_dir(base, rabbit_name=f"benchportal{os.getpid()}")
        servers.start()
        amqp_url, mongodb_url = servers.amqp_url, servers.mongodb_url
    results: dict[str, Any] = {"goal_p99_ms": GOAL_MS, "cpus": os.cpu_count()}
    try:
        results.update(asyncio.run(run(args, amqp_url, mongodb_url)))
    finally:
        if servers is not None:
            servers.stop()
            shutil.rmtree(base, ignore_errors=True)
    emit(results, args.json)


if __name__ == "__main__":
    main()

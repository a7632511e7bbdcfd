"""``orgdir`` / ``python -m orgdir_tools.cli``: the local stack and the catalogue docs.

``run`` starts RabbitMQ, the MongoDB-wire server and the four services in
the foreground, loads the demo data once every service answers (the
hand-made Kolding Kommune, and on first start the generated ``small``
municipality through the HR importer), prints the URLs and stops everything
on Ctrl-C. ``up`` / ``down`` do the same in the
background. ``ORGDIR_REPLICAS=N`` starts N processes of each service: replica
k listens on the service's base port + 10·k, and all share one database and
one broker, as replicas behind a load balancer do. ``ORGDIR_RABBITMQ_NODES=3``
runs RabbitMQ as a cluster of three nodes; the services get every node's URL
and fail over between them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx

from importer.generate import generate
from importer.readers import CsvSource, write_csv
from importer.service import Options, run_import
from importer.settings import ImportSettings
from orgdir_tools import demo, localservers
from orgdir_tools.localservers import ServerError, ServerSet, progress


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    package: str
    port: int


SERVICES = [
    ServiceSpec("orgunits", "orgunits", 8101),
    ServiceSpec("registry", "registry", 8102),
    ServiceSpec("access-rights", "access_rights", 8103),
    ServiceSpec("notifier", "notifier", 8104),
]
# The web interface: one process over the services' public APIs (replica 0 of each).
PORTAL = ServiceSpec("portal", "portal", 8100)
DEMO_TOKEN = "dev-admin"


def port_of(spec: ServiceSpec, replica: int = 0) -> int:
    return int(os.environ.get(f"ORGDIR_PORT_{spec.package.upper()}", spec.port)) + 10 * replica


def replicas() -> int:
    try:
        count = int(os.environ.get("ORGDIR_REPLICAS", "1"))
    except ValueError as exc:
        raise ServerError("ORGDIR_REPLICAS must be a whole number") from exc
    if not 1 <= count <= 9:
        raise ServerError("ORGDIR_REPLICAS must be between 1 and 9")
    return count


def instances() -> list[tuple[ServiceSpec, int]]:
    """Every (service, replica) the stack runs."""
    return [(spec, k) for spec in SERVICES for k in range(replicas())]


def instance_name(spec: ServiceSpec, replica: int) -> str:
    return spec.name if replica == 0 else f"{spec.name}-{replica}"


def stack_dir() -> Path:
    return localservers.run_dir() / "stack"


def _servers() -> ServerSet:
    # H2: the stack's data survives ``make down`` / ``make up``.
    node = os.environ.get("ORGDIR_STACK_NODE", "orgdir")
    nodes = localservers.rabbit_nodes()  # ORGDIR_RABBITMQ_NODES=3: a cluster of three, as in production
    return ServerSet.for_dir(stack_dir(), rabbit_name=node, mongo_backend="h2", rabbit_nodes=nodes)


def install() -> int:
    """Install what the local servers need (rabbitmq-server, the mongo-java-server build), once."""
    if not os.environ.get("AMQP_URL"):
        localservers.ensure_rabbitmq_installed()
    if not os.environ.get("MONGODB_URL"):
        localservers.ensure_mongo_server()
    return 0


def _start_servers() -> ServerSet:
    servers = _servers()
    managed = [s for s in (servers.rabbit, servers.mongo) if s is not None]
    if not (managed and all(s.is_running() for s in managed)):
        progress("starting RabbitMQ and mongo-java-server (RabbitMQ takes 10-20 s)")
        servers.start()
    return servers


def uvicorn_command(package: str, port: int) -> list[str]:
    """How a service runs on one machine: its app factory under uvicorn on loopback."""
    uvicorn = [sys.executable, "-m", "uvicorn", "--factory", f"{package}.app:create_app"]
    return [*uvicorn, "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]


def portal_environment() -> dict[str, str]:
    """Where the portal finds each API (``ORGDIR_ORGUNITS_URL`` …)."""
    return {f"ORGDIR_{spec.package.upper()}_URL": f"http://127.0.0.1:{port_of(spec)}" for spec in SERVICES}


def _spawn(
    spec: ServiceSpec, replica: int, servers: ServerSet, detach: bool, extra: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    log_dir = stack_dir() / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {
        # The local stack runs on the dev tokens and the public development key, explicitly
        # (the services refuse to start without auth configuration); an ORGDIR_AUTH_MODE set wins.
        "ORGDIR_AUTH_MODE": "static",
        "ORGDIR_ALLOW_STATIC_TOKENS": "true",
        **os.environ,
        "ORGDIR_SERVICE_NAME": spec.name,
        "ORGDIR_AMQP_URL": servers.amqp_url,
        "ORGDIR_MONGODB_URL": servers.mongodb_url,
        **(extra or {}),
    }
    cmd = uvicorn_command(spec.package, port_of(spec, replica))
    out = open(log_dir / f"{instance_name(spec, replica)}.log", "ab")
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=detach)


async def wait_ready(
    base: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 90, name: str = "service"
) -> None:
    """Poll ``/readyz`` until 200; fail early if the process died (stack start, benchmarks)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base, timeout=2) as client:
        while True:
            if proc is not None and proc.poll() is not None:
                raise ServerError(f"{name} exited with {proc.returncode} during start")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/readyz")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise ServerError(f"{name} not ready after {timeout:.0f} s")
            await asyncio.sleep(0.3)


async def _wait_ready(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for spec, k in instances():
        name = instance_name(spec, k)
        log = stack_dir() / "logs" / f"{name}.log"
        try:
            await wait_ready(f"http://127.0.0.1:{port_of(spec, k)}", procs.get(name), name=name)
        except ServerError as exc:
            raise ServerError(f"{exc}; see {log}") from exc
        progress(f"{name} ready on :{port_of(spec, k)}")
    await wait_ready(f"http://127.0.0.1:{port_of(PORTAL)}", procs.get(PORTAL.name), name=PORTAL.name)


async def _load_demo() -> None:
    """The demo data (``orgdir_tools.demo``), service by service in dependency order, through the HTTP APIs."""
    headers = {"Authorization": f"Bearer {DEMO_TOKEN}"}
    specs = {spec.name: spec for spec in SERVICES}
    for name, load in demo.LOADERS:
        base = f"http://127.0.0.1:{port_of(specs[name])}"
        progress(f"loading demo data into {name}")
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
            await load(client)
        progress(f"{name} demo data loaded in {time.monotonic() - started:.1f} s")


#: the generated municipality the stack imports on first start: ``ORGDIR_DEMO_IMPORT`` = a preset or ``none``
DEMO_IMPORT_SEED = 1


async def _import_generated() -> None:
    """On first start only: the generated municipality (``small``, seed 1) through the HR importer, with progress.

    The hand-made demo shows the features; this one gives the stack a
    realistic size, loaded the way a municipality loads its HR export. A
    marker next to the stack's data says it is done, so later starts skip it
    (the import is idempotent anyway: an interrupted first import resumes).
    """
    preset = os.environ.get("ORGDIR_DEMO_IMPORT", "small")
    if preset == "none":
        progress("generated municipality: not imported (ORGDIR_DEMO_IMPORT=none)")
        return
    marker = stack_dir() / f"imported-{preset}-seed{DEMO_IMPORT_SEED}"
    where = stack_dir() / "import" / f"{preset}-seed{DEMO_IMPORT_SEED}"
    if marker.exists():
        progress(f"generated municipality ({preset}, seed {DEMO_IMPORT_SEED}): imported on first start from {where}")
        return
    export = generate(preset, DEMO_IMPORT_SEED)
    write_csv(export, where)
    root = export.units[0].name
    counts = ", ".join(f"{n} {k}" for k, n in export.counts().items() if n)
    progress(f"importing the generated {root} ({preset}, seed {DEMO_IMPORT_SEED}: {counts}) from {where} "
             "through the HR importer (first start only)")
    specs = {spec.name: spec for spec in SERVICES}
    url = lambda name: f"http://127.0.0.1:{port_of(specs[name])}"  # noqa: E731
    settings = ImportSettings(orgunits_url=url("orgunits"), registry_url=url("registry"),
                              access_rights_url=url("access-rights"), token=DEMO_TOKEN)
    day = datetime.now(ZoneInfo("Europe/Copenhagen")).date()
    report = await run_import(CsvSource(where), settings, Options(day=day))
    print(report.summary(), file=sys.stderr)
    if report.exit_code == 0:
        marker.write_text(f"{datetime.now().isoformat()}\n")
    else:
        progress("the generated municipality was not wholly imported; the next start tries again")


def _print_urls(servers: ServerSet) -> None:
    print("\nOrgdir is running:")
    print(f"  {PORTAL.name:<16} http://127.0.0.1:{port_of(PORTAL)}/  (the web interface; sign in with a dev token)")
    for spec, k in instances():
        print(f"  {instance_name(spec, k):<16} http://127.0.0.1:{port_of(spec, k)}/api/v1/docs")
    print(f"  RabbitMQ       {servers.amqp_url}")
    print(f"  MongoDB wire   {servers.mongodb_url}")
    print(f"  token          Authorization: Bearer {DEMO_TOKEN}  (also dev-writer, dev-reader)")
    print(f"  logs           {stack_dir() / 'logs'}")
    print("  try            curl -H 'Authorization: Bearer dev-reader' http://127.0.0.1:8101/api/v1/tree\n")


def _start_stack(detach: bool) -> tuple[ServerSet, dict[str, subprocess.Popen[bytes]]]:
    servers = _start_servers()
    procs = {instance_name(spec, k): _spawn(spec, k, servers, detach) for spec, k in instances()}
    procs[PORTAL.name] = _spawn(PORTAL, 0, servers, detach, portal_environment())
    (stack_dir() / "services.json").write_text(json.dumps({n: p.pid for n, p in procs.items()}))
    try:
        asyncio.run(_wait_ready(procs))
        asyncio.run(_load_demo())
        asyncio.run(_import_generated())
    except BaseException:
        _stop_services(procs)
        raise
    return servers, procs


def _stop_services(procs: dict[str, subprocess.Popen[bytes]] | None = None) -> None:
    pids: dict[str, int] = {n: p.pid for n, p in (procs or {}).items()}
    pid_file = stack_dir() / "services.json"
    if not pids and pid_file.is_file():
        pids = json.loads(pid_file.read_text())
    for name, pid in pids.items():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            progress(f"stopping {name}")
    deadline = time.monotonic() + 10
    for pid in pids.values():
        while localservers.pid_alive(pid) and time.monotonic() < deadline:
            if procs:
                for p in procs.values():
                    p.poll()
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)


def run() -> int:
    servers, procs = _start_stack(detach=False)
    _print_urls(servers)
    print("Press Ctrl-C to stop.")
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop:
            for name, p in procs.items():
                if p.poll() is not None:
                    progress(f"{name} exited with {p.returncode}; stopping the stack")
                    stop = True
            time.sleep(0.5)
    finally:
        _stop_services(procs)
        servers.stop()
    return 0


def up() -> int:
    servers, _ = _start_stack(detach=True)
    _print_urls(servers)
    print("Stop it with `make down`.")
    return 0


def down() -> int:
    _stop_services()
    _servers().stop()
    return 0


def status() -> int:
    ok = localservers.cmd_status() == 0
    for spec, k in [*instances(), (PORTAL, 0)]:
        try:
            r = httpx.get(f"http://127.0.0.1:{port_of(spec, k)}/readyz", timeout=2)
            state = "ready" if r.status_code == 200 else f"not ready ({r.status_code})"
        except httpx.HTTPError:
            state, ok = "down", False
        print(f"{instance_name(spec, k)}: {state} on :{port_of(spec, k)}")
    return 0 if ok else 1


def docs(out: str) -> int:
    """The vendor site (``orgdir_tools.site``): event catalogue, the four APIs, the consumer guide; a warning fails."""
    import orgdir.contracts  # noqa: F401  (registers every event type)
    from orgdir_tools.site import build

    warnings = build(Path(out))
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    return 1 if warnings else 0


def rotate_keys(urls: list[str], token: str) -> int:
    """``POST /api/v1/rotate-keys`` on each service: re-encrypt what it stores under the current key."""
    failed = 0
    for url in urls:
        try:
            r = httpx.post(f"{url.rstrip('/')}/api/v1/rotate-keys", headers={"Authorization": f"Bearer {token}"},
                           timeout=3600)
        except httpx.HTTPError as exc:
            print(f"{url}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{url}: {r.status_code} {r.text}")
        failed += r.status_code != 200
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orgdir", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("install", "run", "up", "down", "status"):
        sub.add_parser(name)
    d = sub.add_parser("docs")
    d.add_argument("out", nargs="?", default="docs/events")
    nc = sub.add_parser("new-consumer", help="render a consumer project from templates/consumer")
    nc.add_argument("name", help="service and queue name, e.g. vendor-ad")
    nc.add_argument("--dir", help="target directory (default ./NAME)")
    rk = sub.add_parser("rotate-keys", help="re-encrypt stored personal data and secrets under the current key")
    rk.add_argument("urls", nargs="*", help="service base URLs (default: the local stack's registry and notifier)")
    rk.add_argument("--token", default=os.environ.get("ORGDIR_TOKEN", DEMO_TOKEN), help="an orgdir:admin token")
    args = parser.parse_args(argv)
    try:
        if args.command == "rotate-keys":
            specs = {spec.name: spec for spec in SERVICES}
            default = [f"http://127.0.0.1:{port_of(specs[n])}" for n in ("registry", "notifier")]
            return rotate_keys(args.urls or default, args.token)
        if args.command == "docs":
            return docs(args.out)
        if args.command == "new-consumer":
            from orgdir_tools.template import TemplateError, new_consumer

            try:
                return new_consumer(args.name, args.dir)
            except TemplateError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
        return {"install": install, "run": run, "up": up, "down": down, "status": status}[args.command]()
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

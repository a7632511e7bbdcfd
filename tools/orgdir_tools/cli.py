"""``orgdir`` / ``python -m orgdir_tools.cli``: the local stack and the catalogue docs.

``run`` starts RabbitMQ, the MongoDB-wire server and the four services in
the foreground, loads the demo data once every service answers, prints the
URLs and stops everything on Ctrl-C. ``up`` / ``down`` do the same in the
background. ``ORGDIR_REPLICAS=N`` starts N processes of each service: replica
k listens on the service's base port + 10·k, and all share one database and
one broker, as replicas behind a load balancer do.
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
from pathlib import Path

import httpx

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
    return ServerSet.for_dir(stack_dir(), rabbit_name=node, mongo_backend="h2")


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


def _spawn(spec: ServiceSpec, replica: int, servers: ServerSet, detach: bool) -> subprocess.Popen[bytes]:
    log_dir = stack_dir() / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "ORGDIR_SERVICE_NAME": spec.name,
        "ORGDIR_AMQP_URL": servers.amqp_url,
        "ORGDIR_MONGODB_URL": servers.mongodb_url,
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


def _print_urls(servers: ServerSet) -> None:
    print("\nOrgdir is running:")
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
    (stack_dir() / "services.json").write_text(json.dumps({n: p.pid for n, p in procs.items()}))
    try:
        asyncio.run(_wait_ready(procs))
        asyncio.run(_load_demo())
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
    for spec, k in instances():
        try:
            r = httpx.get(f"http://127.0.0.1:{port_of(spec, k)}/readyz", timeout=2)
            state = "ready" if r.status_code == 200 else f"not ready ({r.status_code})"
        except httpx.HTTPError:
            state, ok = "down", False
        print(f"{instance_name(spec, k)}: {state} on :{port_of(spec, k)}")
    return 0 if ok else 1


def docs(out: str) -> int:
    """Write the event catalogue as JSON Schema and AsyncAPI 3."""
    import orgdir.contracts  # noqa: F401  (registers every event type)
    from orgdir.events import asyncapi_document, catalogue_json_schema

    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    (target / "events.schema.json").write_text(json.dumps(catalogue_json_schema(), indent=2, default=str))
    (target / "asyncapi.json").write_text(json.dumps(asyncapi_document(), indent=2, default=str))
    print(f"wrote {target / 'events.schema.json'} and {target / 'asyncapi.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orgdir", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("install", "run", "up", "down", "status"):
        sub.add_parser(name)
    d = sub.add_parser("docs")
    d.add_argument("out", nargs="?", default="docs/events")
    args = parser.parse_args(argv)
    try:
        if args.command == "docs":
            return docs(args.out)
        return {"install": install, "run": run, "up": up, "down": down, "status": status}[args.command]()
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Real RabbitMQ and MongoDB-wire servers as private processes of the current user.

Local runs and tests use the same brokers and databases as production speaks to
(never an in-process mock), so each server is a real process on a free loopback
port with its data under ``<repo>/.run/`` (``ORGDIR_RUN_DIR`` overrides). Only
Python, Java 17, Maven and make are assumed: RabbitMQ comes from apt; the
MongoDB-wire server is mongo-java-server (jars from Maven Central, our own
launcher in ``scripts/mongo-java-server``), built once and cached in
``~/.cache/orgdir/``.

CLI: ``python -m orgdir_tools.localservers up|down|status|env``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import fcntl
import functools
import itertools
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pymongo

T = TypeVar("T")

MONGO_SERVER_VERSION = "1.47.0"
# Names the cached build: bump the suffix whenever scripts/mongo-java-server changes.
MONGO_SERVER_BUILD = f"{MONGO_SERVER_VERSION}-orgdir.2"
MONGO_LAUNCHER = "orgdir.MongoLauncher"
MONGO_BACKENDS = ("memory", "h2")
# Full JIT on purpose: C1 alone (-XX:TieredStopAtLevel=1) started 0.1 s sooner (0.58 vs 0.67 s)
# but halved guarded updates at 20,000 documents (~250/s vs ~450/s; a filter beyond _id scans
# the collection). The heap starts at 1 GB with a 512 MB young generation: from 32 MB, the
# serial collector took 40 % of the server's wall time under the chaos run's load (116 s of
# 290 s in the JVM's "VM Thread", where the collector runs); with these, 5 %.
MONGO_JVM_FLAGS = ("-XX:+UseSerialGC", "-Xss512k", "-Xms1g", "-Xmn512m", "-Xmx2g", "-XX:-UsePerfData")
RABBITMQ_DIRS = (Path("/usr/sbin"), Path("/usr/lib/rabbitmq/bin"))
# Ports never handed out: epmd, and the range rabbitmqctl itself listens on.
_RESERVED_PORTS = frozenset({4369, *range(35672, 35683)})


class ServerError(RuntimeError):
    """A local server could not be installed, built, started or stopped."""


def progress(message: str) -> None:
    """Print a progress line on stderr, so stdout stays clean for ``env``."""
    print(f"==> {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- paths


def repo_root() -> Path:
    """The monorepo root: the first ancestor holding the Makefile (or the server's pom.xml)."""
    for start in (Path(__file__).resolve().parent, Path.cwd().resolve()):
        for candidate in (start, *start.parents):
            if (candidate / "Makefile").is_file() or (candidate / "scripts/mongo-java-server/pom.xml").is_file():
                return candidate
    raise ServerError(f"cannot find the repository root above {Path(__file__).resolve()}")


def run_dir() -> Path:
    """Where server data and logs live: ``$ORGDIR_RUN_DIR`` or ``<repo>/.run``."""
    override = os.environ.get("ORGDIR_RUN_DIR")
    path = Path(override) if override else repo_root() / ".run"
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def cache_dir() -> Path:
    """Per-user cache for built binaries, shared by all checkouts."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "orgdir"


# --------------------------------------------------------------------------- processes and ports

_port_lock = threading.Lock()
_ports_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nobody listens on, never the same twice in this process.

    Servers bind it a moment later; remembering what was handed out keeps two
    servers started concurrently from getting the same one.
    """
    with _port_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in _RESERVED_PORTS and port not in _ports_handed_out:
                _ports_handed_out.add(port)
                return port
    raise ServerError("no free loopback port found")


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """True for a live process; zombies count as dead (our init may not reap them)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _proc_strings(pid: int, what: str) -> list[str]:
    """NUL-separated /proc/<pid>/{cmdline,environ}; empty when gone or unreadable."""
    try:
        return Path(f"/proc/{pid}/{what}").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    return not pid_alive(pid)


def _terminate(pid: int, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if not pid_alive(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if _wait_dead(pid, wait):
            return
    raise ServerError(f"process {pid} survived SIGKILL")


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path})"


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _run(
    cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run a helper command, capturing its output for error messages.

    It gets its own process group, killed whole on timeout, so a hanging
    helper leaves no stray children behind. Output goes to temporary files,
    not pipes: a daemon the helper starts (epmd) may keep inherited pipes
    open long after the helper exited, and reading them would never end.
    """
    with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:
        with subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out_file,
            stderr=err_file,
            text=True,
            start_new_session=True,
        ) as proc:
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                code = 124
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read(), err_file.read()
    if code == 124:
        err = f"{err}\ntimed out after {timeout} s"
    return subprocess.CompletedProcess(cmd, code, out, err)


def _check(result: subprocess.CompletedProcess[str], what: str) -> str:
    if result.returncode != 0:
        raise ServerError(
            f"{what} failed (exit {result.returncode}): {' '.join(map(str, result.args))}\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result.stdout


# --------------------------------------------------------------------------- Chromium (browser tests)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
_chromium_lock = threading.Lock()


def ensure_chromium_installed() -> tuple[Path, Path]:
    """Debian's ``chromium`` and ``chromium-driver`` (installed with apt when missing), for the portal's
    browser tests: Selenium drives this browser, so nothing downloads a browser build of its own."""
    with _chromium_lock, _file_lock(cache_dir() / "chromium-install.lock"):
        if os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK):
            return CHROMIUM, CHROMEDRIVER
        sudo = [] if _is_root() else ["sudo"]
        progress("installing chromium and chromium-driver with apt (about a minute, once)")
        started = time.monotonic()
        _check(_run([*sudo, "apt-get", "update"], timeout=600), "apt-get update")
        install = [*sudo, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y"]
        _check(_run([*install, "chromium", "chromium-driver"], timeout=900), "apt-get install chromium chromium-driver")
        if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
            raise ServerError(f"chromium was installed but {CHROMIUM} or {CHROMEDRIVER} is missing")
        progress(f"chromium installed in {time.monotonic() - started:.0f} s")
        return CHROMIUM, CHROMEDRIVER


# --------------------------------------------------------------------------- RabbitMQ

_install_lock = threading.Lock()


def _is_root() -> bool:
    return os.geteuid() == 0


def find_rabbitmq_tools() -> tuple[Path, Path] | None:
    """Paths of ``rabbitmq-server`` and ``rabbitmqctl``, or None when not installed.

    Root uses Debian's /usr/sbin wrappers, which drop to the ``rabbitmq`` user
    (with HOME=/var/lib/rabbitmq for server and CLI alike, so they share the
    Erlang cookie). Other users must bypass those wrappers (they refuse, and
    run the server in the foreground) and run the real scripts as themselves.
    """
    on_path = shutil.which("rabbitmq-server")
    dirs = [Path(on_path).parent] if on_path else []
    dirs += list(RABBITMQ_DIRS) if _is_root() else list(reversed(RABBITMQ_DIRS))
    for directory in dirs:
        server, ctl = directory / "rabbitmq-server", directory / "rabbitmqctl"
        if not (os.access(server, os.X_OK) and os.access(ctl, os.X_OK)):
            continue
        if not _is_root() and server.resolve().name == "rabbitmq-script-wrapper":
            continue
        return server, ctl
    return None


def ensure_rabbitmq_installed() -> tuple[Path, Path]:
    """Install Debian's rabbitmq-server with apt when it is missing; return its tools."""
    with _install_lock:
        found = find_rabbitmq_tools()
        if found:
            return found
        sudo = [] if _is_root() else ["sudo"]
        progress("installing rabbitmq-server (about 30 s)")
        started = time.monotonic()
        progress("apt-get update")
        _check(_run([*sudo, "apt-get", "update"], timeout=600), "apt-get update")
        progress("apt-get install -y rabbitmq-server")
        install = [*sudo, "env", "DEBIAN_FRONTEND=noninteractive"]
        install += ["apt-get", "install", "-y", "rabbitmq-server"]
        _check(_run(install, timeout=900), "apt-get install rabbitmq-server")
        found = find_rabbitmq_tools()
        if not found:
            raise ServerError("rabbitmq-server was installed but its scripts are not found")
        progress(f"rabbitmq-server installed in {time.monotonic() - started:.0f} s")
        return found


def _rabbitmq_ids() -> tuple[int, int] | None:
    """uid/gid of the ``rabbitmq`` user when the server will run as it (we are root)."""
    if not _is_root():
        return None
    import grp
    import pwd

    try:
        return pwd.getpwnam("rabbitmq").pw_uid, grp.getgrnam("rabbitmq").gr_gid
    except KeyError:
        return None


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            with contextlib.suppress(FileNotFoundError):
                os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def _reachable_by(path: Path, uid: int, gid: int) -> bool:
    """Whether uid/gid can traverse every ancestor of path (e.g. not under /root)."""
    for directory in (path, *path.parents):
        if not directory.exists():
            continue
        st = directory.stat()
        if st.st_uid == uid:
            ok = bool(st.st_mode & 0o100)
        elif st.st_gid == gid:
            ok = bool(st.st_mode & 0o010)
        else:
            ok = bool(st.st_mode & 0o001)
        if not ok:
            return False
    return True


class LocalServer:
    """Start/stop/restart shared by both servers, plus awaitable variants.

    The blocking calls take seconds (RabbitMQ ~5 s); async tests that stop a
    server under a running app await the ``a*`` variants so the app's event
    loop keeps running meanwhile.
    """

    def start(self, timeout: float = 90) -> float:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def restart(self, timeout: float = 90) -> float:
        """Stop and start again with the same data and port."""
        self.stop()
        return self.start(timeout)

    async def astart(self) -> float:
        return await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    async def arestart(self) -> float:
        return await asyncio.to_thread(self.restart)


class RabbitNode(LocalServer):
    """A private RabbitMQ node: own name, ports, data and logs, described by env vars.

    Start and stop touch only this node; epmd (shared by all Erlang nodes on the
    machine) is left running. The AMQP port is kept across restarts (also
    across processes: it is saved in ``server.json``) so URLs stay valid.
    """

    def __init__(
        self,
        name: str,
        base_dir: Path,
        *,
        port: int | None = None,
        dist_port: int | None = None,
        home: Path | None = None,
    ) -> None:
        self.name = name
        self.home = home  # shared by the nodes of a cluster: one Erlang cookie (unused as root)
        self.node = f"{name}@localhost"
        self.base_dir = base_dir.resolve()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self._choose_data_dir()
        saved = _load_json(self.data_dir / "server.json")
        self.port: int = port or saved.get("port") or free_port()
        self.dist_port: int = dist_port or saved.get("dist_port") or free_port()
        self.start_seconds: float | None = None

    def _choose_data_dir(self) -> Path:
        """The node's directory; outside the repo if the rabbitmq user cannot reach it."""
        ids = _rabbitmq_ids()
        if ids is None or _reachable_by(self.base_dir, *ids):
            return self.base_dir
        fallback = Path("/var/tmp/orgdir-rabbitmq") / str(self.base_dir).strip("/").replace("/", "_")
        fallback.mkdir(parents=True, exist_ok=True)
        os.chmod(fallback.parent, 0o755)
        link = self.base_dir / "data"
        if not link.is_symlink():
            link.symlink_to(fallback)
        return fallback

    def __repr__(self) -> str:
        return f"RabbitNode({self.node!r}, port={self.port}, dir={str(self.data_dir)!r})"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "node.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "log" / f"{self.node}.log"

    def env(self) -> dict[str, str]:
        """Environment for rabbitmq-server and rabbitmqctl: everything about this node."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        d = self.data_dir
        env.update(
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(d / "mnesia"),
            RABBITMQ_LOG_BASE=str(d / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(d / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(d / "rabbitmq"),
            RABBITMQ_FEATURE_FLAGS_FILE=str(d / "feature_flags"),
            RABBITMQ_CONF_ENV_FILE=str(d / "rabbitmq-env.conf"),
            RABBITMQ_PID_FILE=str(self.pid_file),
            ERL_CRASH_DUMP=str(self.crash_dump),
            # Erlang distribution on loopback only; the node is private.
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        if _rabbitmq_ids() is not None:
            # As root every node runs as the rabbitmq user, whose one cookie would let any two nodes
            # of this machine (a test session's, a killed private node, a cluster) connect: a node
            # killed while connected can hang the others' distribution. A cookie per node (per
            # cluster) keeps each apart.
            cookie = self.cookie()
            env["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"] += f" -setcookie {cookie}"
            env["RABBITMQ_CTL_ERL_ARGS"] = f"-setcookie {cookie}"
        if _rabbitmq_ids() is None:
            # Running as ourselves: a HOME of the node's own keeps its cookie private.
            env["HOME"] = str(self.home or d / "home")
        return env

    def _prepare(self) -> None:
        d = self.data_dir
        for sub in ("mnesia", "log", "home"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "enabled_plugins").write_text("[].\n")
        # balanced: a cluster's quorum queue leaders spread over the nodes, not all on the declaring one
        (d / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\nqueue_leader_locator = balanced\n"
        )
        (d / "rabbitmq-env.conf").write_text("# intentionally empty: all settings come from env\n")
        (d / "server.json").write_text(json.dumps({"node": self.node, "port": self.port, "dist_port": self.dist_port}))
        ids = _rabbitmq_ids()
        if ids:
            _chown_tree(d, *ids)

    def pids(self) -> list[int]:
        """Live beam processes of this node (pid file first, else a /proc scan)."""
        marker = f"RABBITMQ_MNESIA_BASE={self.data_dir / 'mnesia'}"
        node = f"RABBITMQ_NODENAME={self.node}"

        def ours(pid: int) -> bool:
            environ = _proc_strings(pid, "environ")
            return node in environ and marker in environ and pid_alive(pid)

        pid = _read_pid(self.pid_file)
        if pid and ours(pid):
            return [pid]
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and "beam" in "".join(_proc_strings(int(entry.name), "cmdline")):
                if ours(int(entry.name)):
                    found.append(int(entry.name))
        return found

    @property
    def pid(self) -> int | None:
        pids = self.pids()
        return pids[0] if pids else None

    def is_running(self) -> bool:
        return bool(self.pids()) and port_open(self.port)

    def cookie(self) -> str:
        """This node's Erlang cookie (its cluster's, when it has a shared home), kept across restarts."""
        where = self.home or self.base_dir
        where.mkdir(parents=True, exist_ok=True)
        path = where / "erlang-cookie"
        if not path.is_file():  # written whole, and only by the first writer (nodes start at once)
            tmp = where / f"erlang-cookie.{os.getpid()}.{secrets.token_hex(4)}"
            tmp.write_text(secrets.token_hex(20).upper())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
            tmp.unlink()
        return path.read_text().strip()

    def _ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        _, ctl = ensure_rabbitmq_installed()
        cmd = [str(ctl), "-n", self.node]
        if _rabbitmq_ids() is not None:
            cmd += ["--erlang-cookie", self.cookie()]
        return _run([*cmd, *args], env=self.env(), cwd=self.data_dir, timeout=timeout)

    @property
    def crash_dump(self) -> Path:
        return self.data_dir / "erl_crash.dump"

    def _crash_reason(self) -> str:
        """The 'Slogan' of Erlang's crash dump: why the node died while booting."""
        try:
            with self.crash_dump.open(errors="replace") as dump:
                for line in dump:
                    if line.startswith("Slogan:"):
                        return line.strip()
        except OSError:
            pass
        return ""

    def start(self, timeout: float = 90) -> float:
        """Start the node and wait until it serves AMQP; return the seconds it took."""
        if self.is_running():
            return 0.0
        if port_open(self.port):
            raise ServerError(f"{self}: port {self.port} is taken by another process")
        if port_open(self.dist_port):
            self.dist_port = free_port()  # not part of any URL, so just take another
        server, _ = ensure_rabbitmq_installed()
        self._prepare()
        self.crash_dump.unlink(missing_ok=True)
        progress(f"starting RabbitMQ node {self.node} on 127.0.0.1:{self.port}")
        started = time.monotonic()
        detached = _run([str(server), "-detached"], env=self.env(), cwd=self.data_dir, timeout=60)
        (self.data_dir / "startup.log").write_text(detached.stdout + detached.stderr)
        _check(detached, "rabbitmq-server -detached")
        last, seen, ready = detached, False, False
        while not ready and time.monotonic() < started + timeout:
            # Fails at once until the node has registered with epmd, hence the loop.
            last = self._ctl("await_startup", "--timeout", "10", timeout=30)
            ready = last.returncode == 0 and port_open(self.port)
            if not ready:
                alive = bool(self.pids())
                seen |= alive
                if not alive and (seen or time.monotonic() - started > 15):
                    break  # the node died (or never came up): no use waiting
                time.sleep(0.5)
        if not ready:
            self.stop()
            raise ServerError(
                f"RabbitMQ node {self.node} did not start "
                f"({time.monotonic() - started:.0f} s) {self._crash_reason()}\n"
                f"rabbitmqctl: {last.stdout[-1500:]}{last.stderr[-1500:]}\n"
                f"log {self.log_file}:\n{_tail(self.log_file)}"
            )
        self.start_seconds = time.monotonic() - started
        progress(f"RabbitMQ {self.node} up in {self.start_seconds:.1f} s: {self.url}")
        return self.start_seconds

    def kill(self) -> None:
        """SIGKILL every process of the node: no clean shutdown, as when a machine dies."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_dead(pid, 10)
        deadline = time.monotonic() + 10
        while port_open(self.port) and time.monotonic() < deadline:  # the kernel closes the sockets a moment later
            time.sleep(0.1)
        progress(f"RabbitMQ {self.node} killed")

    def stop(self) -> None:
        """Stop this node only (rabbitmqctl stop, then signals as a fallback)."""
        pids = self.pids()
        if not pids:
            return
        result = self._ctl("stop", timeout=60)
        for pid in pids:
            if not _wait_dead(pid, 30 if result.returncode == 0 else 1):
                _terminate(pid)
        progress(f"RabbitMQ {self.node} stopped")


class RabbitCluster(LocalServer):
    """Private RabbitMQ nodes joined into one cluster (``rabbitmqctl join_cluster``), as a municipality runs it.

    Quorum queues declared after the join get a member on every node, so one
    node may die and the others elect new leaders: what the chaos test and
    ``ORGDIR_RABBITMQ_NODES=3`` exercise. The nodes share one Erlang cookie
    (the ``rabbitmq`` user's when we are root, else one in a home of the
    cluster's own). ``url`` lists every node, comma separated, which is what
    the services' ``ORGDIR_AMQP_URL`` accepts.
    """

    def __init__(self, name: str, base_dir: Path, size: int = 3) -> None:
        if size < 1:
            raise ServerError("a RabbitMQ cluster needs at least one node")
        self.base_dir = base_dir.resolve()
        self.home = self.base_dir / "home"
        self.nodes = [RabbitNode(f"{name}n{i}", self.base_dir / f"node{i}", home=self.home) for i in range(size)]
        self.start_seconds: float | None = None

    def __repr__(self) -> str:
        return f"RabbitCluster({[n.node for n in self.nodes]})"

    @property
    def node(self) -> str:
        return self.nodes[0].node

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def url(self) -> str:
        return ",".join(self.urls)

    @property
    def pid(self) -> int | None:
        return self.nodes[0].pid

    def is_running(self) -> bool:
        return all(n.is_running() for n in self.nodes)

    def _cookie(self) -> None:
        """One cookie for all nodes and their rabbitmqctl, written before any node starts (else each makes its own)."""
        if _rabbitmq_ids() is not None:
            # root: the nodes get ``-setcookie`` from ``RabbitNode.cookie``, which the first caller
            # writes; made here, before the nodes start at once, so two never write their own.
            self.nodes[0].cookie()
            return
        self.home.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        if not cookie.is_file():
            cookie.write_text(secrets.token_hex(20))
            cookie.chmod(0o400)

    def members(self, via: RabbitNode | None = None) -> set[str]:
        """The nodes the cluster knows (running or not), as ``via`` (default: the first running node) sees it."""
        via = via or next((n for n in self.nodes if n.is_running()), self.nodes[0])
        result = via._ctl("cluster_status", "--formatter", "json", timeout=60)
        if result.returncode != 0:
            return set()
        try:
            return set(json.loads(result.stdout).get("disk_nodes", []))
        except ValueError:
            return set()

    def start(self, timeout: float = 180) -> float:
        """Start every node (concurrently), then join each to the first; return the seconds it took."""
        started = time.monotonic()
        self._cookie()
        run_concurrently(*(functools.partial(n.start, timeout) for n in self.nodes))
        first = self.nodes[0]
        for node in self.nodes[1:]:
            if first.node in self.members(node):
                continue  # joined before (data kept): a restart rejoins by itself
            progress(f"joining {node.node} to {first.node}")
            for args in (("stop_app",), ("join_cluster", first.node), ("start_app",)):
                _check(node._ctl(*args, timeout=120), f"rabbitmqctl {' '.join(args)} on {node.node}")
        _check(first._ctl("await_online_nodes", str(len(self.nodes)), "--timeout", "60", timeout=90),
               "rabbitmqctl await_online_nodes")
        self.start_seconds = time.monotonic() - started
        progress(f"RabbitMQ cluster of {len(self.nodes)} up in {self.start_seconds:.1f} s")
        return self.start_seconds

    def stop(self) -> None:
        """Stop every node at once (one by one would make the last ones wait for the first)."""
        run_concurrently(*(n.stop for n in self.nodes))

    def quorum_leaders(self) -> dict[str, str]:
        """Quorum queue name -> the node leading it (``rabbitmqctl list_queues``)."""
        via = next((n for n in self.nodes if n.is_running()), self.nodes[0])
        result = via._ctl("list_queues", "name", "type", "leader", "--formatter", "json", "-q", timeout=60)
        _check(result, "rabbitmqctl list_queues")
        rows = json.loads(result.stdout or "[]")
        return {r["name"]: r["leader"] for r in rows if r.get("type") == "quorum" and r.get("leader")}

    def queue_messages(self) -> dict[str, int]:
        """Queue name -> messages in it (ready and unacknowledged), as a running node reports it."""
        via = next((n for n in self.nodes if n.is_running()), self.nodes[0])
        result = via._ctl("list_queues", "name", "messages", "--formatter", "json", "-q", timeout=60)
        _check(result, "rabbitmqctl list_queues")
        return {r["name"]: int(r.get("messages") or 0) for r in json.loads(result.stdout or "[]")}

    def queue_table(self) -> list[dict[str, Any]]:
        """Every queue with its ready and unacknowledged messages and its consumers: where a backlog sits."""
        via = next((n for n in self.nodes if n.is_running()), self.nodes[0])
        result = via._ctl("list_queues", "name", "messages_ready", "messages_unacknowledged", "consumers",
                          "--formatter", "json", "-q", timeout=60)
        _check(result, "rabbitmqctl list_queues")
        rows: list[dict[str, Any]] = json.loads(result.stdout or "[]")
        return rows

    def busiest_leader(self) -> RabbitNode:
        """The running node that leads the most quorum queues."""
        counts = collections.Counter(self.quorum_leaders().values())
        running = [n for n in self.nodes if n.is_running()]
        return max(running, key=lambda n: counts.get(n.node, 0))


# --------------------------------------------------------------------------- mongo-java-server


def _java_tool(name: str) -> str:
    """``java``, ``javac`` ($JAVA_HOME/bin first) or ``mvn`` (PATH), with a clear error when missing."""
    home = os.environ.get("JAVA_HOME")
    if home and name != "mvn" and os.access(Path(home, "bin", name), os.X_OK):
        return str(Path(home, "bin", name))
    found = shutil.which(name)
    if not found:
        raise ServerError(
            f"{name} not found: the local MongoDB-wire server needs Java 17+ and Maven "
            "(Debian: apt-get install openjdk-17-jdk-headless maven)"
        )
    return found


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (two test sessions building at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def mongo_server_dir() -> Path:
    """The cached build: ``lib/`` (jars from Maven Central) and ``classes/`` (our launcher)."""
    return cache_dir() / f"mongo-java-server-{MONGO_SERVER_BUILD}"


def _mongo_server_built(home: Path) -> bool:
    return (home / "classes" / "orgdir" / "MongoLauncher.class").is_file()


def ensure_mongo_server() -> Path:
    """The server's cached build, made from ``scripts/mongo-java-server`` on first use.

    Only the jars come from Maven Central; the launcher (a port, a backend and a
    wire version PyMongo accepts) is ours. Built in a scratch directory and
    renamed into place, under a lock, so concurrent sessions never see half a build.
    """
    home = mongo_server_dir()
    if _mongo_server_built(home):
        return home
    with _file_lock(cache_dir() / ".mongo-java-server.lock"):
        if not _mongo_server_built(home):
            _build_mongo_server(home)
    return home


def _build_mongo_server(home: Path) -> None:
    source = repo_root() / "scripts" / "mongo-java-server"
    mvn, javac = _java_tool("mvn"), _java_tool("javac")
    progress(f"building mongo-java-server {MONGO_SERVER_BUILD} (Maven Central jars + our launcher, ~10 s)")
    started = time.monotonic()
    partial = home.with_name(f"{home.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        fetch = [mvn, "-B", "-q", "-f", str(source / "pom.xml"), "dependency:copy-dependencies"]
        fetch += [f"-DoutputDirectory={partial / 'lib'}", "-DincludeScope=runtime"]
        _check(_run(fetch, cwd=source, timeout=900), "mvn dependency:copy-dependencies")
        launcher = source / "src" / "main" / "java" / "orgdir" / "MongoLauncher.java"
        compile_ = [javac, "--release", "17", "-cp", str(partial / "lib" / "*"), "-d", str(partial / "classes")]
        _check(_run([*compile_, str(launcher)], timeout=300), "javac MongoLauncher")
        shutil.rmtree(home, ignore_errors=True)
        os.replace(partial, home)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    progress(f"mongo-java-server built in {time.monotonic() - started:.0f} s: {home}")


class MongoServer(LocalServer):
    """A private mongo-java-server (MongoDB wire protocol) in a JVM of its own.

    ``memory`` keeps data only while the process lives (tests: fast, nothing
    on disk); ``h2`` keeps it in one file, ``data/orgdir.mv``, across stop and
    start (the stack). Conditional updates are atomic (writes to a collection
    are serialised), unlike FerretDB 1.x. The process runs in its own session
    so ``localservers up`` can exit and leave it running; it is found again
    through its pid file. The port is kept in ``server.json`` across restarts.
    """

    def __init__(self, base_dir: Path, *, port: int | None = None, backend: str = "memory") -> None:
        if backend not in MONGO_BACKENDS:
            raise ServerError(f"unknown mongo backend {backend!r}; use one of {', '.join(MONGO_BACKENDS)}")
        self.base_dir = base_dir.resolve()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        saved = _load_json(self.base_dir / "server.json")
        self.port: int = port or saved.get("port") or free_port()
        self.backend = backend
        self.start_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"MongoServer(port={self.port}, backend={self.backend!r}, dir={str(self.base_dir)!r})"

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    @property
    def data_file(self) -> Path:
        """The H2 backend's one file (unused by ``memory``)."""
        return self.base_dir / "data" / "orgdir.mv"

    @property
    def pid_file(self) -> Path:
        return self.base_dir / "mongo.pid"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "mongo.log"

    @property
    def pid(self) -> int | None:
        pid = _read_pid(self.pid_file)
        if pid and pid_alive(pid):
            args = _proc_strings(pid, "cmdline")
            if MONGO_LAUNCHER in args and ("--port", str(self.port)) in itertools.pairwise(args):
                return pid
        return None

    def is_running(self) -> bool:
        return self.pid is not None and port_open(self.port)

    def ping(self) -> bool:
        """A real MongoDB ``ping`` round trip, not just an open port."""
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            self.url,
            directConnection=True,
            serverSelectionTimeoutMS=1000,
            connectTimeoutMS=1000,
            socketTimeoutMS=2000,
        )
        try:
            client.admin.command("ping")
            return True
        except pymongo.errors.PyMongoError:
            return False
        finally:
            client.close()

    def command(self) -> list[str]:
        """The JVM command line (``ORGDIR_MONGO_JAVA_OPTS`` adds flags, e.g. ``-Xmx512m``)."""
        home = ensure_mongo_server()
        classpath = f"{home / 'classes'}{os.pathsep}{home / 'lib' / '*'}"
        extra = shlex.split(os.environ.get("ORGDIR_MONGO_JAVA_OPTS", ""))
        args = ["--host", "127.0.0.1", "--port", str(self.port), "--backend", self.backend]
        if self.backend == "h2":
            args += ["--file", str(self.data_file)]
        return [_java_tool("java"), *MONGO_JVM_FLAGS, *extra, "-cp", classpath, MONGO_LAUNCHER, *args]

    def start(self, timeout: float = 60) -> float:
        """Start the server and wait until it answers ``ping``; return the seconds it took."""
        if self.is_running():
            return 0.0
        if port_open(self.port):
            raise ServerError(f"{self}: port {self.port} is taken by another process")
        cmd = self.command()  # builds on first use, before the clock starts
        (self.base_dir / "server.json").write_text(json.dumps({"port": self.port, "backend": self.backend}))
        progress(f"starting mongo-java-server ({self.backend}) on 127.0.0.1:{self.port}")
        started = time.monotonic()
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{self._process.pid}\n")
        while time.monotonic() < started + timeout:
            if self._process.poll() is not None:
                break
            if port_open(self.port) and self.ping():
                self.start_seconds = time.monotonic() - started
                progress(f"mongo-java-server up in {self.start_seconds:.1f} s: {self.url}")
                return self.start_seconds
            time.sleep(0.05)
        self.stop()
        raise ServerError(
            f"mongo-java-server did not start within {timeout:.0f} s\nlog {self.log_file}:\n{_tail(self.log_file)}"
        )

    def stop(self) -> None:
        """SIGTERM (the JVM's shutdown hook closes the H2 file), SIGKILL if stuck; reap it if ours."""
        pid = self.pid
        if pid is None and self._process is not None and self._process.poll() is None:
            pid = self._process.pid
        if pid is not None:
            _terminate(pid, grace=30)
            progress(f"mongo-java-server on port {self.port} stopped")
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=5)
            self._process = None
        self.pid_file.unlink(missing_ok=True)


# --------------------------------------------------------------------------- both at once


def run_concurrently(*tasks: Callable[[], T]) -> list[T]:
    """Run blocking callables in threads; re-raise the first failure after all finished."""
    results: list[Any] = [None] * len(tasks)
    errors: list[BaseException] = []

    def runner(index: int, task: Callable[[], T]) -> None:
        try:
            results[index] = task()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=runner, args=(i, t), daemon=True) for i, t in enumerate(tasks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


@dataclass
class ServerSet:
    """The RabbitMQ and MongoDB-wire server a stack or a test session uses.

    A URL given from outside (``AMQP_URL`` / ``MONGODB_URL``) means that
    server is not ours: it is neither started nor stopped.
    """

    base_dir: Path
    rabbit: RabbitNode | RabbitCluster | None = None
    mongo: MongoServer | None = None
    external: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_dir(
        cls,
        base_dir: Path,
        *,
        rabbit_name: str,
        env: dict[str, str] | None = None,
        mongo_backend: str = "memory",
        rabbit_nodes: int = 1,
    ) -> ServerSet:
        """Servers under base_dir, skipping those the environment already provides.

        Tests use the ``memory`` backend (fastest); the stack asks for ``h2`` so
        its data survives ``make down``. ``ORGDIR_MONGO_BACKEND`` overrides both.
        ``rabbit_nodes`` > 1 starts a RabbitMQ cluster of that many nodes.
        """
        env = dict(os.environ if env is None else env)
        external = {k: env[k] for k in ("AMQP_URL", "MONGODB_URL") if env.get(k)}
        backend = env.get("ORGDIR_MONGO_BACKEND") or mongo_backend
        rabbit: RabbitNode | RabbitCluster = (
            RabbitCluster(rabbit_name, base_dir / "rabbitmq-cluster", rabbit_nodes)
            if rabbit_nodes > 1
            else RabbitNode(rabbit_name, base_dir / "rabbitmq")
        )
        return cls(
            base_dir=base_dir,
            rabbit=None if "AMQP_URL" in external else rabbit,
            mongo=None if "MONGODB_URL" in external else MongoServer(base_dir / "mongo", backend=backend),
            external=external,
        )

    @property
    def amqp_url(self) -> str:
        return self.rabbit.url if self.rabbit else self.external["AMQP_URL"]

    @property
    def mongodb_url(self) -> str:
        return self.mongo.url if self.mongo else self.external["MONGODB_URL"]

    def start(self) -> None:
        """Start both concurrently (apt install and Maven build, if needed, as well)."""
        tasks = [s.start for s in (self.rabbit, self.mongo) if s is not None]
        try:
            run_concurrently(*tasks)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop both (concurrently: RabbitMQ takes a few seconds)."""
        tasks = [s.stop for s in (self.rabbit, self.mongo) if s is not None]
        run_concurrently(*tasks)

    def env_values(self) -> dict[str, str]:
        values = {"AMQP_URL": self.amqp_url, "MONGODB_URL": self.mongodb_url}
        if self.rabbit:
            values["RABBITMQ_NODE"] = self.rabbit.node
            values["RABBITMQ_PID"] = str(self.rabbit.pid or "")
        if self.mongo:
            values["MONGO_PID"] = str(self.mongo.pid or "")
        return values


def bench_database_heap() -> None:
    """A benchmark's mongo-java-server may grow to 8 GB unless ``ORGDIR_MONGO_JAVA_OPTS`` says otherwise.

    The memory backend holds every document and its history on the heap: at the municipality size
    2 GB left the JVM collecting garbage more than half its time (jstack's "VM Thread"). With 2 GB
    ``make bench-import`` also lost its database at 85 % of the import (no answer within the
    drivers' 5 s; the collector is the likely cause, not measured that time).
    """
    os.environ.setdefault("ORGDIR_MONGO_JAVA_OPTS", "-Xmx8g")


@contextlib.contextmanager
def bench_servers(tag: str) -> Iterator[tuple[str, str]]:
    """(AMQP URL, MongoDB URL) for a benchmark: ``AMQP_URL``/``MONGODB_URL`` when both are set, else a
    private RabbitMQ and database started for this run and removed after it."""
    amqp_url, mongodb_url = os.environ.get("AMQP_URL"), os.environ.get("MONGODB_URL")
    if amqp_url and mongodb_url:
        yield amqp_url, mongodb_url
        return
    bench_database_heap()
    base = run_dir() / f"bench-{tag}-{os.getpid()}"
    servers = ServerSet.for_dir(base, rabbit_name=f"bench{tag.replace('-', '')}{os.getpid()}")
    servers.start()
    try:
        yield servers.amqp_url, servers.mongodb_url
    finally:
        servers.stop()
        shutil.rmtree(base, ignore_errors=True)


def cleanup_stale_test_dirs(base: Path | None = None) -> None:
    """Stop servers and remove ``test-<pid>`` dirs left by test sessions that died."""
    base = base or run_dir()
    for directory in base.glob("test-*"):
        try:
            owner = int(directory.name.removeprefix("test-"))
        except ValueError:
            continue
        if owner == os.getpid() or pid_alive(owner):
            continue
        for server_json in directory.rglob("server.json"):
            info = _load_json(server_json)
            with contextlib.suppress(ServerError, OSError):
                if "node" in info:
                    RabbitNode(info["node"].split("@")[0], server_json.parent).stop()
                else:
                    MongoServer(server_json.parent).stop()
        shutil.rmtree(directory, ignore_errors=True)


# --------------------------------------------------------------------------- CLI


def stack_dir() -> Path:
    return run_dir() / "stack"


def rabbit_nodes() -> int:
    """``ORGDIR_RABBITMQ_NODES``: 1 (default) is one node; 3 is a cluster of three, as in production."""
    try:
        count = int(os.environ.get("ORGDIR_RABBITMQ_NODES", "1"))
    except ValueError as exc:
        raise ServerError("ORGDIR_RABBITMQ_NODES must be a whole number") from exc
    if not 1 <= count <= 7:
        raise ServerError("ORGDIR_RABBITMQ_NODES must be between 1 and 7")
    return count


def _stack() -> ServerSet:
    return ServerSet.for_dir(stack_dir(), rabbit_name="orgdir", mongo_backend="h2", rabbit_nodes=rabbit_nodes())


def _write_env(path: Path, values: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))


def cmd_up() -> int:
    stack = _stack()
    for key, value in stack.external.items():
        progress(f"using {key}={value} from the environment")
    managed = [s for s in (stack.rabbit, stack.mongo) if s is not None]
    if managed and all(s.is_running() for s in managed):
        progress("already running")
    else:
        stack.start()
    env_file = stack_dir() / "servers.env"
    _write_env(env_file, stack.env_values())
    progress(f"wrote {env_file}")
    print(f"AMQP_URL={stack.amqp_url}\nMONGODB_URL={stack.mongodb_url}")
    return 0


def cmd_down() -> int:
    stack = _stack()
    stack.stop()
    (stack_dir() / "servers.env").unlink(missing_ok=True)
    progress(f"stack stopped (data kept under {stack_dir()})")
    return 0


def cmd_status() -> int:
    stack = _stack()
    ok = True
    for label, server in (("RabbitMQ", stack.rabbit), ("mongo-java-server", stack.mongo)):
        if server is None:
            continue
        up = server.is_running()
        ok &= up
        print(f"{label}: {'running' if up else 'stopped'} pid={server.pid} {server.url}")
    for key, value in stack.external.items():
        print(f"{key}={value} (from the environment, not managed here)")
    return 0 if ok else 1


def cmd_env() -> int:
    env_file = stack_dir() / "servers.env"
    if not env_file.is_file():
        print(f"{env_file} does not exist; run `python -m orgdir_tools.localservers up`", file=sys.stderr)
        return 1
    sys.stdout.write(env_file.read_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orgdir_tools.localservers",
        description="Local RabbitMQ and MongoDB-wire server for development, under .run/stack/.",
    )
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    args = parser.parse_args(argv)
    commands = {"up": cmd_up, "down": cmd_down, "status": cmd_status, "env": cmd_env}
    try:
        return commands[args.command]()
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

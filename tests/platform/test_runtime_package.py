"""The runtime apart from the tooling: what an image installs starts every service without any test tool.

Builds the wheels of ``shared`` (``orgdir``), the four services and the portal, installs only
those (and their third-party dependencies, pinned to ``uv.lock``) into a fresh
virtual environment, and there imports each ``<pkg>.app`` and calls
``create_app()`` (no servers: the app is built, not started). ``pytest``,
``standardwebhooks``, the ``orgdir_tools`` development package and the old
tooling modules must not be importable there. The Dockerfile installs the same
set (``uv sync --no-dev --package <service>``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = {  # workspace member -> import name
    "shared": "orgdir",
    "services/orgunits": "orgunits",
    "services/registry": "registry",
    "services/access-rights": "access_rights",
    "services/notifier": "notifier",
    "services/portal": "portal",
}
SERVICES = [pkg for pkg in RUNTIME.values() if pkg != "orgdir"]
TOOLING_MODULES = ["cli", "localservers", "testing", "testkit", "testpeers"]  # left orgdir for orgdir_tools
ABSENT = [
    "pytest",
    "_pytest",
    "pytest_asyncio",
    "standardwebhooks",
    "scim2_server",
    "orgdir_tools",
    *(f"orgdir.{m}" for m in TOOLING_MODULES),
    *(f"{pkg}.demo" for pkg in SERVICES),
    "registry.testsupport",
]

# Runs inside the fresh environment (python -I: neither the repository nor PYTHONPATH on sys.path).
PROBE = """
import importlib, importlib.util, json, sys
services, absent = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = {"apps": {}, "importable": [], "loaded": []}
for name in absent:
    try:
        found = importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        found = False
    if found:
        out["importable"].append(name)
for pkg in services:
    app = importlib.import_module(pkg + ".app").create_app()
    doc = app.openapi()
    out["apps"][pkg] = {"type": type(app).__name__, "paths": len(doc["paths"]), "file": sys.modules[pkg].__file__}
tooling = {"pytest", "_pytest", "standardwebhooks", "orgdir_tools"}
out["loaded"] = sorted(m for m in sys.modules if m.split(".")[0] in tooling)
print(json.dumps(out))
"""


def _uv() -> str:
    uv = ROOT / ".tools/bin/uv"
    if uv.is_file():
        return str(uv)
    found = shutil.which("uv")
    if found is None:
        pytest.fail("uv not found: run `bash scripts/bootstrap.sh` (it installs uv into .tools/)")
    return found


def _run(cmd: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)


def _run_cached_first(cmd: list[str], env: dict[str, str]) -> None:
    """Offline (from uv's cache) when the cache holds everything, else with PyPI."""
    done = _run([*cmd, "--offline"], env)
    if done.returncode != 0:
        done = _run(cmd, env)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout}{done.stderr}"


def test_runtime_wheels_start_every_app_without_test_tooling(tmp_path: Path) -> None:
    uv = _uv()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON", "UV_PROJECT"))}
    env["UV_PYTHON_DOWNLOADS"] = "never"
    wheels = tmp_path / "wheels"

    for member in RUNTIME:
        _run_cached_first([uv, "build", "-q", "--wheel", "--out-dir", str(wheels), member], env)
    built = sorted(wheels.glob("*.whl"))
    assert len(built) == len(RUNTIME), built

    # The wheels themselves hold no tooling.
    for wheel in built:
        names = zipfile.ZipFile(wheel).namelist()
        leaked = [n for n in names if n.split("/")[0] in {"orgdir_tools", "tests"}]
        leaked += [n for n in names if n in {f"orgdir/{m}.py" for m in TOOLING_MODULES}]
        leaked += [n for n in names if n.endswith(("/demo.py", "/testsupport.py"))]
        assert not leaked, f"{wheel.name} ships tooling: {leaked}"

    # The versions uv.lock pins for the runtime (constraints only: they install nothing by themselves).
    constraints = tmp_path / "constraints.txt"
    export = _run([uv, "export", "-q", "--frozen", "--no-dev", "--no-hashes", "--no-emit-workspace",
                   "--all-packages", "--no-header", "-o", str(constraints)], env)
    assert export.returncode == 0, export.stderr

    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], env)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    _run_cached_first([uv, "pip", "install", "-q", "--python", str(python), "-c", str(constraints),
                       *map(str, built)], env)

    probe_env = {"PATH": env.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    probe = _run([str(python), "-I", "-c", PROBE, json.dumps(SERVICES), json.dumps(ABSENT)], probe_env,
                 cwd=tmp_path)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    result = json.loads(probe.stdout.strip().splitlines()[-1])

    assert result["importable"] == [], f"test tooling in the runtime environment: {result['importable']}"
    assert result["loaded"] == [], f"creating the apps imported test tooling: {result['loaded']}"
    assert sorted(result["apps"]) == sorted(SERVICES)
    for pkg, app in result["apps"].items():
        assert app["type"] == "FastAPI" and app["paths"] > 0, (pkg, app)
        assert Path(app["file"]).is_relative_to(venv), f"{pkg} came from {app['file']}, not the fresh environment"

"""The README's `make run` path: the whole local stack starts, loads its demo data, and stops.

Runs ``python -m orgdir_tools.cli up`` / ``down`` (what ``make up`` / ``make down`` call; ``make run``
is the same start in the foreground) in a private run directory on free ports.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from orgdir_tools.localservers import free_port

ROOT = Path(__file__).resolve().parents[1]
READ = {"Authorization": "Bearer dev-reader"}


@pytest.mark.slow
def test_stack_up_serves_demo_data_and_down_stops_it(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("ORGUNITS", "REGISTRY", "ACCESS_RIGHTS", "NOTIFIER", "PORTAL")}
    env = {
        **os.environ,
        "ORGDIR_RUN_DIR": str(tmp_path / "run"),
        "ORGDIR_STACK_NODE": f"stack{os.getpid()}",
        "ORGDIR_DEMO_IMPORT": "none",  # the generated municipality's first-start import takes minutes
        **{f"ORGDIR_PORT_{k}": str(v) for k, v in ports.items()},
    }
    up = subprocess.run([sys.executable, "-m", "orgdir_tools.cli", "up"], env=env, cwd=ROOT,
                        capture_output=True, text=True, timeout=600)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "Orgdir is running" in up.stdout
        assert "loading demo data into orgunits" in up.stderr  # progress is shown
        assert "generated municipality: not imported (ORGDIR_DEMO_IMPORT=none)" in up.stderr
        tree = httpx.get(f"http://127.0.0.1:{ports['ORGUNITS']}/api/v1/tree", headers=READ, timeout=10)
        assert tree.status_code == 200 and "Kolding Kommune" in tree.text
        persons = httpx.get(f"http://127.0.0.1:{ports['REGISTRY']}/api/v1/persons", headers=READ, timeout=10)
        assert persons.status_code == 200 and persons.json()["items"], persons.text
        for port in ports.values():
            assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200
        assert f"portal           http://127.0.0.1:{ports['PORTAL']}/" in up.stdout  # the web interface
        signin = httpx.get(f"http://127.0.0.1:{ports['PORTAL']}/signin", timeout=10)
        assert signin.status_code == 200 and 'value="dev-reader"' in signin.text
        # Onboarding happened by itself: the demo's unit assignment gave the demo people accounts.
        deadline = time.monotonic() + 60
        accounts: list[object] = []
        while not accounts and time.monotonic() < deadline:
            r = httpx.get(f"http://127.0.0.1:{ports['ACCESS_RIGHTS']}/api/v1/accounts", headers=READ, timeout=10)
            accounts = r.json()["items"]
            time.sleep(0.5)
        assert accounts, "no account was requested for the demo people"
    finally:
        down = subprocess.run([sys.executable, "-m", "orgdir_tools.cli", "down"], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    for port in ports.values():
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)

"""``make docs``: the vendor site builds offline, without warnings, and says what a consumer needs.

Built in its own process, as ``make docs`` does: tests register event types of their own in this one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orgdir.contracts  # noqa: F401
from orgdir.events import CATALOGUE


def test_the_site_builds_without_warnings_and_covers_every_event_type_and_api(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "orgdir_tools.cli", "docs", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "warning" not in result.stderr, result.stderr[-3000:]
    events = (tmp_path / "events.html").read_text()
    contracts = [n for n, spec in CATALOGUE.items() if spec.data_model.__module__.startswith("orgdir.contracts")]
    assert len(contracts) > 50
    for name in contracts:
        assert f'id="{name.replace(".", "-")}"' in events
    assert "emitted by</th><td>registry" in events and "default exchange, routing key = queue name" in events
    for service in ("orgunits", "registry", "access-rights", "notifier"):
        api = (tmp_path / "openapi" / f"{service}.html").read_text()
        assert "<code>/api/v1/refresh</code>" in api and (tmp_path / "openapi" / f"{service}.json").is_file()
    assert "The compatibility promise" in (tmp_path / "consumer-guide.html").read_text()

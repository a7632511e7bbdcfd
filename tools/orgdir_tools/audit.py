"""Known vulnerabilities in the locked dependencies: ``python -m orgdir_tools.audit`` (``make audit``).

Exports ``uv.lock`` (every package, every group, no workspace members) to a
requirements file, runs ``pip-audit`` on it against PyPI's vulnerability data
and fails on any vulnerability not listed in ``security/pip-audit-exceptions.txt``
with a reason. A dependency the vulnerability service cannot answer for (no
network, a mirror without the per-release JSON) is reported loudly; it fails the
run only with ``ORGDIR_AUDIT_STRICT=1`` (set it in CI that has the network), so
an offline laptop can still run ``make check``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EXCEPTIONS = ROOT / "security" / "pip-audit-exceptions.txt"


@dataclass
class Outcome:
    vulnerable: list[str] = field(default_factory=list)  # "name version: ID (fix: ...)"
    excepted: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    stale_exceptions: list[str] = field(default_factory=list)
    checked: int = 0


def read_exceptions(path: Path) -> dict[str, str]:
    """``ID  reason`` per line (``#`` comments); an exception without a reason is refused."""
    out: dict[str, str] = {}
    if not path.exists():
        return out
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        vuln, _, reason = line.partition(" ")
        if not reason.strip():
            raise SystemExit(f"{path}:{n}: {vuln} has no reason; write why it is acceptable (and until when)")
        out[vuln] = reason.strip()
    return out


def evaluate(report: dict[str, Any], exceptions: dict[str, str]) -> Outcome:
    """Sort pip-audit's JSON report into vulnerable, excepted and unchecked dependencies."""
    out = Outcome()
    used: set[str] = set()
    for dep in report.get("dependencies", []):
        name, version = dep.get("name"), dep.get("version", "")
        if dep.get("skip_reason"):
            out.unchecked.append(f"{name}: {dep['skip_reason']}")
            continue
        out.checked += 1
        for vuln in dep.get("vulns", []):
            ids = {vuln["id"], *vuln.get("aliases", [])}
            fix = ", ".join(vuln.get("fix_versions", [])) or "none yet"
            text = f"{name} {version}: {vuln['id']} (fixed in: {fix})"
            hit = ids & exceptions.keys()
            if hit:
                used |= hit
                out.excepted.append(f"{text} - excepted: {exceptions[sorted(hit)[0]]}")
            else:
                out.vulnerable.append(text)
    out.stale_exceptions = sorted(exceptions.keys() - used)
    return out


def _uv() -> str:
    local = ROOT / ".tools" / "bin" / "uv"
    found = str(local) if local.is_file() else shutil.which("uv")
    if not found:
        raise SystemExit("audit: uv not found (run `make install`)")
    return found


def run() -> int:
    work = ROOT / ".run" / "audit"
    work.mkdir(parents=True, exist_ok=True)
    requirements, report_file = work / "requirements.txt", work / "pip-audit.json"
    subprocess.run(
        [_uv(), "export", "--frozen", "--format", "requirements-txt", "--all-packages", "--all-groups",
         "--no-emit-workspace", "--no-hashes", "--quiet", "-o", str(requirements)],
        cwd=ROOT, check=True,
    )
    exceptions = read_exceptions(EXCEPTIONS)
    report_file.unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "pip_audit", "-r", str(requirements), "--no-deps", "--disable-pip",
         "--progress-spinner", "off", "-f", "json", "-o", str(report_file)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    strict = os.environ.get("ORGDIR_AUDIT_STRICT") == "1"
    if not report_file.exists():
        print(f"audit: pip-audit gave no report (exit {done.returncode}):\n{done.stderr[-2000:]}", file=sys.stderr)
        return 1 if strict else 0
    outcome = evaluate(json.loads(report_file.read_text()), exceptions)
    total = outcome.checked + len(outcome.unchecked)
    for line in outcome.excepted:
        print(f"audit: {line}")
    for vuln in outcome.stale_exceptions:
        print(f"audit: the exception for {vuln} matches nothing any more; remove it from {EXCEPTIONS.name}")
    if outcome.unchecked:
        print(
            f"audit: WARNING {len(outcome.unchecked)} of {total} locked packages could not be checked "
            f"(the vulnerability service did not answer for them; first: {outcome.unchecked[0]}). "
            f"Full report: {report_file.relative_to(ROOT)}",
            file=sys.stderr,
        )
    if outcome.vulnerable:
        print("audit: known vulnerabilities without a written exception "
              f"({EXCEPTIONS.relative_to(ROOT)}):", file=sys.stderr)
        for line in outcome.vulnerable:
            print(f"  {line}", file=sys.stderr)
        return 1
    if outcome.unchecked and strict:
        return 1
    if outcome.checked == 0 and total:
        print(f"audit: NOT CHECKED - no answer for any of the {total} packages; ORGDIR_AUDIT_STRICT=1 fails on this")
        return 0
    print(f"audit: {outcome.checked} of {total} locked packages checked, no known vulnerability without an exception")
    return 0


if __name__ == "__main__":
    raise SystemExit(run())

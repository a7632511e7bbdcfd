"""Each service's OpenAPI document against the service itself, with the schemathesis CLI.

Clients are generated from these documents, so every response a real process
gives (statuses, content types, bodies, errors included) must be documented.
The run is bounded: ``ORGDIR_API_EXAMPLES`` fuzzed cases per operation (small
for ``make test``, larger in ``make api-check``) and a fixed seed, so a failure
reproduces. ``ORGDIR_API_REPORT_DIR`` keeps the full CLI output per service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from orgdir.settings import Settings
from orgdir_tools.testkit import ServiceProcess, settings_for

SERVICES = {  # service name -> package
    "orgunits": "orgunits",
    "registry": "registry",
    "access-rights": "access_rights",
    "notifier": "notifier",
}
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
# The stateful phase is left out: on 2 cores it added 10-25 s per service at 10 examples and grows with them.
PHASES = "examples,coverage,fuzzing"
SEED = 20240601
DEFAULT_EXAMPLES = 25  # registry, the largest: ~25 s of CPU when all pass, so ~30 s per service on idle 2 cores
# No persistent state between runs (it would make a run depend on the previous one), no crash files.
CONFIG = "[cache]\nenabled = false\n"


def max_examples() -> int:
    value = int(os.environ.get("ORGDIR_API_EXAMPLES", DEFAULT_EXAMPLES))
    assert value >= 1, "ORGDIR_API_EXAMPLES must be at least 1"
    return value


def st_command(schema_url: str, workdir: Path, examples: int) -> list[str]:
    """The CLI from this venv (4.x has no ``python -m schemathesis``; ``schemathesis.cli`` is ``st``)."""
    return [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(workdir / "schemathesis.toml"), "--no-color",
        "run", schema_url,
        "--header", "Authorization: Bearer dev-admin",
        "--checks", CHECKS,
        "--phases", PHASES,
        "--max-examples", str(examples),
        "--seed", str(SEED),
        "--workers", "1",  # 2 workers on 2 cores were slower and errored
        "--generation-database", "none",
        "--report-ndjson-path", str(workdir / "events.ndjson"),
    ]


async def run_cli(command: list[str], workdir: Path, timeout: float) -> tuple[int | None, str]:
    """Exit code (None on timeout) and the combined output; run in ``workdir`` so nothing lands in the repo."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMATHESIS_")}
    proc = await asyncio.create_subprocess_exec(
        *command, cwd=workdir, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    assert proc.stdout is not None
    chunks: list[bytes] = []

    async def read() -> None:
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(65536):
            chunks.append(chunk)

    try:
        await asyncio.wait_for(asyncio.gather(read(), proc.wait()), timeout)
        code: int | None = proc.returncode
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        code = None
    return code, b"".join(chunks).decode(errors="replace")


def findings(events: Path) -> dict[str, dict[str, set[int | None]]]:
    """Operation -> failed check -> response statuses, from the NDJSON event report."""
    found: dict[str, dict[str, set[int | None]]] = defaultdict(lambda: defaultdict(set))
    if not events.is_file():
        return found
    for line in events.read_text().splitlines():
        finished = json.loads(line).get("ScenarioFinished") if line.strip() else None
        recorder = (finished or {}).get("recorder") or {}
        for case_id, checks in (recorder.get("checks") or {}).items():
            response = ((recorder.get("interactions") or {}).get(case_id) or {}).get("response") or {}
            for check in checks:
                if check.get("status") == "failure":
                    failure = (check.get("failure_info") or {}).get("failure") or {}
                    operation = failure.get("operation") or recorder.get("label", "?")
                    found[operation][check["name"]].add(response.get("status_code"))
    return found


def cli_summary(output: str) -> str:
    """The CLI's own SUMMARY block (or the output's tail when it ended before one)."""
    lines = output.rstrip().splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip("= ") == "SUMMARY"), max(len(lines) - 40, 0))
    return "\n".join(line for line in lines[start:] if line.strip())


def save_output(service: str, output: str, tmp_path: Path) -> Path:
    """The full CLI output in the test's directory and, if asked, in ``ORGDIR_API_REPORT_DIR``; the path to cite."""
    saved = tmp_path / f"{service}.txt"
    saved.write_text(output)
    if report_dir := os.environ.get("ORGDIR_API_REPORT_DIR"):
        saved = Path(report_dir).resolve() / f"{service}.txt"
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(output)
    return saved


def failure_message(service: str, code: int | None, output: str, events: Path, saved: Path, examples: int) -> str:
    how = "timed out" if code is None else f"exited with {code}"
    lines = [f"schemathesis {how} for {service} (seed {SEED}, {examples} examples; full output: {saved})"]
    found = findings(events)
    if found:
        lines.append("Failing operations: check [response statuses]")
        for operation in sorted(found, key=lambda op: (op.split(" ", 1)[-1], op)):
            checks = found[operation]
            described = "; ".join(
                f"{name} [{', '.join(str(s) for s in sorted(checks[name], key=lambda s: s or 0))}]"
                for name in sorted(checks)
            )
            lines.append(f"  {operation}: {described}")
    lines.append(cli_summary(output))
    return "\n".join(lines)


@pytest.mark.slow
@pytest.mark.parametrize("service", list(SERVICES))
async def test_openapi_document_matches_the_service(
    service: str, ns: str, amqp_url: str, mongodb_url: str, tmp_path: Path
) -> None:
    examples = max_examples()
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    settings = settings_for(Settings, ns=ns, service=service, amqp_url=amqp_url, mongodb_url=mongodb_url)
    async with ServiceProcess(SERVICES[service], settings) as app:
        command = st_command(f"{app.url}/api/v1/openapi.json", tmp_path, examples)
        code, output = await run_cli(command, tmp_path, timeout=max(300.0, 6.0 * examples))

    saved = save_output(service, output, tmp_path)
    assert code == 0, failure_message(service, code, output, tmp_path / "events.ndjson", saved, examples)

"""The import's use cases: read what the services hold, plan, and apply the plan.

Load → decide (``domain.plan``, pure) → write, like the services' own use
cases. Writes are idempotent PUTs under stable UUIDs (and terminations), in
phases (units parents first, then persons, then what refers to them), each
phase with bounded concurrency. A run that is killed and started again plans
only what is still missing, so it finishes without duplicates or rewrites.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any, TextIO

from importer.adapters import Source, collect
from importer.client import Api, Outcome
from importer.domain import PATH, SERVICE, Op, Plan, State, describe, lookups, plan
from importer.records import ACCESS_KINDS, KINDS, Export, Invalid, Origin
from importer.settings import ImportSettings

#: problems that mean "the service has not yet heard of a unit, class, person or catalogue entry we just wrote"
#: (the registry and access-rights learn units and classes from orgunits events; another replica may be behind)
LAGGING = {"unknown-unit", "unit-not-active", "unknown-class", "class-not-active", "unknown-job-function",
           "unknown-person", "unknown-it-system", "unknown-role", "unknown-role-group"}


@dataclass
class Options:
    day: date
    dry_run: bool = False
    full_sync_from: date | None = None
    allow_mass_change: bool = False
    threshold: int = 500
    examples: int = 3
    progress: bool = True


@dataclass
class Report:
    plan: Plan
    written: Counter[str] = field(default_factory=Counter)  # kind → ops applied
    requests: int = 0
    failed: list[Invalid] = field(default_factory=list)
    seconds: float = 0.0
    kind_seconds: dict[str, float] = field(default_factory=dict)  # kind → wall time its writes took
    refused: str | None = None

    @property
    def rejected(self) -> list[Invalid]:
        return sorted([*self.plan.rejected, *self.failed], key=lambda r: r.origin)

    @property
    def exit_code(self) -> int:
        if self.refused:
            return 3
        return 1 if self.rejected else 0

    def summary(self) -> str:
        unchanged = sum(self.plan.unchanged.values())
        lines = [
            f"{'Planned' if not self.written and self.plan.ops else 'Done'} in {self.seconds:.1f} s: "
            f"written {sum(self.written.values())} ({self.requests} requests), unchanged {unchanged}, "
            f"rejected {len(self.rejected)}"
        ]
        if self.written:
            lines.append("  written: " + ", ".join(f"{k} {self.written[k]}" for k in KINDS if self.written[k]))
        lines.extend(f"  rejected {r}" for r in self.rejected)
        if self.refused:
            lines.append(f"REFUSED: {self.refused}")
        return "\n".join(lines)


def slice_on(doc: dict[str, Any], day: date) -> dict[str, Any] | None:
    """An access-rights document (whole timeline) as the registry lists things: its slice on ``day``, flat."""
    for s in doc.get("timeline") or ():
        v = s.get("validity") or {}
        if v.get("from") and date.fromisoformat(v["from"]) <= day and (not v.get("to") or
                                                                        day < date.fromisoformat(v["to"])):
            return {**s, "uuid": doc["uuid"], "version": doc["version"]}
    return None


async def read_state(api: Api, export: Export, day: date, settings: ImportSettings) -> State:
    """What the services hold on ``day``, plus each record that does not hold then, read on its own day.

    Access-rights is read only when the export has role-catalogue records: an
    HR export without them needs no access-rights (and does not end its catalogue).
    """
    state = State(day=day)
    at = day.isoformat()
    kinds = [k for k in KINDS if k not in ACCESS_KINDS or any(export.of(a) for a in ACCESS_KINDS)]
    timelines: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in ACCESS_KINDS}

    async def listed(kind: str) -> None:
        for found in await api.list_all(SERVICE[kind], PATH[kind], at=at):
            item: dict[str, Any] | None = found
            if kind in ACCESS_KINDS:  # whole documents: keep them, list the slice on the day
                timelines[kind][found["uuid"]] = found
                item = slice_on(found, day)
            if item is None:
                continue
            state.current[kind][item["uuid"]] = item
            state.listed[kind].add(item["uuid"])

    async def classes() -> None:
        for c in await api.list_all("orgunits", "/api/v1/classes", all="true"):
            state.classes.setdefault(c["facet"], {})[c["user_key"]] = c["uuid"]

    await asyncio.gather(classes(), *(listed(k) for k in kinds))
    gate = asyncio.Semaphore(settings.concurrency)

    async def lookup(kind: str, uid: str, on: date) -> None:
        if kind in ACCESS_KINDS:
            doc = timelines[kind].get(uid)
            item = slice_on(doc, on) if doc else None
        else:
            async with gate:
                item = await api.get(SERVICE[kind], f"{PATH[kind]}/{uid}", at=on.isoformat())
        if item is not None:
            state.current[kind][uid] = item

    await asyncio.gather(*(lookup(k, u, d) for k, u, d in lookups(export, day) if u not in state.current[k]))
    return state


class Progress:
    """One line on stderr: done/total, rate, time left.

    On a terminal the line is rewritten in place 4 times a second; in a log
    (not a terminal) a line is added every 10 % and at least every 5 s, so a
    log shows how far a run got without flooding it.
    """

    def __init__(self, total: int, out: TextIO, enabled: bool) -> None:
        self.total, self.out, self.enabled = total, out, enabled and total > 0
        self.done = 0
        self.started = self.shown = time.monotonic()
        self.tty = out.isatty()
        self.tenth = 0  # the last 10 % step shown (logs)

    def step(self) -> None:
        self.done += 1
        now = time.monotonic()
        tenth = 10 * self.done // max(self.total, 1)
        due = now - self.shown >= 0.25 if self.tty else (now - self.shown >= 5.0 or tenth > self.tenth)
        if self.enabled and (due or self.done == self.total):
            self.shown, self.tenth = now, tenth
            rate = self.done / max(now - self.started, 1e-6)
            left = (self.total - self.done) / rate if rate else 0
            line = f"  {self.done}/{self.total} ({100 * self.done // self.total}%)  {rate:.0f}/s  {left:.0f} s left"
            self.out.write(("\r" + line.ljust(60)) if self.tty else line + "\n")
            self.out.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.out.write("\n")


async def _wait_for_units(api: Api, wanted: set[str], day: date, within: float) -> None:
    """Until the registry's projection (fed by orgunits events) knows every unit just created."""
    deadline = time.monotonic() + within
    while wanted:
        known = {u["uuid"] for u in await api.list_all("registry", "/api/v1/projection/orgunits", at=day.isoformat())}
        wanted = wanted - known
        if not wanted or time.monotonic() > deadline:
            return  # what is still missing is retried per write, then reported
        await asyncio.sleep(0.3)


async def apply(api: Api, the_plan: Plan, settings: ImportSettings, report: Report, err: TextIO,
                progress: bool = True) -> None:
    """Apply the plan's ops phase by phase; a refused op is reported, the rest goes on."""
    bar = Progress(len(the_plan.ops), err, progress)
    gate = asyncio.Semaphore(settings.concurrency * max(1, settings.batch))  # writes in flight
    first_phase = min((op.phase for op in the_plan.ops), default=0)
    new_units = {op.uuid for op in the_plan.ops if op.kind == "units" and op.action == "create"
                 and _holds_on(op, the_plan.day)}
    first: dict[str, float] = {}
    last: dict[str, float] = {}

    async def run(op: Op) -> None:
        async with gate:
            first.setdefault(op.kind, time.monotonic())
            for write in op.writes:
                # what an earlier phase of this run wrote may not have reached the service yet
                outcome = await _send(api, write, lagging_retry=op.phase > first_phase)
                report.requests += 1
                if not outcome.ok:
                    report.failed.append(Invalid(op.kind, op.key, op.origin or Origin("(services)", 0),
                                                 f"{write.method} {'refused' if outcome.status else 'failed'}: "
                                                 f"{outcome.message()}"))
                    break
            else:
                report.written[op.kind] += 1
            last[op.kind] = time.monotonic()
            bar.step()

    waited = False
    for group in the_plan.phases():
        if group[0].phase >= 1 and not waited:
            waited = True
            if new_units:
                await _wait_for_units(api, new_units, the_plan.day, settings.projection_wait_seconds)
        await asyncio.gather(*(run(op) for op in group))
    bar.close()
    report.kind_seconds = {k: last[k] - first[k] for k in first if k in last}


def _holds_on(op: Op, day: date) -> bool:
    validity: dict[str, Any] = op.writes[0].body.get("validity") or {}
    start, end = validity.get("from"), validity.get("to")
    if not start:
        return False
    return date.fromisoformat(start) <= day and (not end or day < date.fromisoformat(end))


async def _send(api: Api, write: Any, *, lagging_retry: bool) -> Outcome:
    """A write; a reference the registry may not have heard of yet is retried for a while."""
    outcome = await api.send(write)
    delay = 0.25
    for _ in range(8 if lagging_retry else 0):
        if outcome.ok or outcome.status != 422 or outcome.kind not in LAGGING:
            break
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)
        outcome = await api.send(write)
    return outcome


async def run_import(source: Source, settings: ImportSettings, options: Options,
                     out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> Report:
    """Read the source and the services, plan, and (unless a dry run) apply; the report says what happened."""
    started = time.monotonic()
    export = collect(source)
    api = Api(settings)
    try:
        state = await read_state(api, export, options.day, settings)
        the_plan = plan(export, state, full_sync_from=options.full_sync_from)
        report = Report(the_plan)
        if options.full_sync_from is not None and not source.complete:
            report.refused = f"{source.name} is a delta, not a full export: --full-sync would end everything else"
        elif the_plan.full_sync_terminations > options.threshold and not options.allow_mass_change:
            report.refused = (
                f"--full-sync would terminate {the_plan.full_sync_terminations} things (more than "
                f"{options.threshold}); check the export, then pass --allow-mass-change"
            )
        if options.dry_run or report.refused:
            out.write(describe(the_plan, options.examples) + "\n")
        else:
            print(f"Importing {source.name}: {len(the_plan.ops)} changes, "
                  f"{sum(the_plan.unchanged.values())} unchanged", file=err)
            await apply(api, the_plan, settings, report, err, options.progress)
        report.seconds = time.monotonic() - started
        return report
    finally:
        await api.aclose()

"""What a benchmark reads from ``/proc``: a process's CPU and peak memory, and how busy the machine was.

On one machine every service, the broker and the database share the cores,
so a rate means little without knowing who had the CPU while it was measured
(``docs/performance.md``, "Where the import's time goes").
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path


def rss_peak_mb(pid: int | None) -> float | None:
    """Peak resident set of a process (``VmHWM``), MB; None when it is gone."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU a process has used so far (children not included)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int]:
    """(busy, all) clock ticks of every core since boot; idle and waiting for I/O are not busy."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


async def quiet(busy_below: float = 0.3, window: float = 2.0, within: float = 600.0) -> tuple[float, float]:
    """Wait until the machine's cores are less than ``busy_below`` busy over ``window`` seconds (or
    ``within`` has passed): (seconds waited, the last window's busy share).

    Reads are timed on a quiet machine: the consumers go on working after the condition a benchmark
    waits for (a queue still draining elsewhere put the tree's p99 at 63 ms instead of 23)."""
    started = time.monotonic()
    while True:
        before = machine_ticks()
        await asyncio.sleep(window)
        after = machine_ticks()
        share = (after[0] - before[0]) / max(after[1] - before[1], 1)
        if share < busy_below or time.monotonic() - started > within:
            return round(time.monotonic() - started, 1), round(share, 2)


class CpuMeter:
    """Cores each named process used between ``start`` and ``shares``, and how busy the machine was."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self.start()

    def start(self) -> None:
        self._cpu = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._ticks = machine_ticks()
        self._wall = time.monotonic()

    def shares(self) -> dict[str, float]:
        """Cores per process (0.5: half a core on average), and ``machine busy``: the share of all cores."""
        wall = max(time.monotonic() - self._wall, 1e-9)
        out = {name: round((cpu_seconds(pid) - self._cpu[name]) / wall, 2) for name, pid in self.pids.items()}
        busy, total = machine_ticks()
        out["machine busy"] = round((busy - self._ticks[0]) / max(total - self._ticks[1], 1), 2)
        return out


def describe_shares(shares: dict[str, float]) -> str:
    """``registry 0.43, access-rights 0.42, … (all cores 97 % busy)``: the busiest process first."""
    shares = dict(shares)
    busy = shares.pop("machine busy", None)  # a share of all cores, not cores: shown apart
    text = ", ".join(f"{k} {v:.2f}" for k, v in sorted(shares.items(), key=lambda kv: -kv[1]))
    return text if busy is None else f"{text} (all cores {100 * busy:.0f} % busy)"

"""Load-driver helpers shared by the HTTP benchmarks: ``wrk`` runs and CPU pinning.

Servers are pinned to core 0 and ``wrk`` to core 1, so the two don't fight over a core and
the figures are comparable between servers measured in the same run.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.tools import require_tool

__all__ = [
    "WrkResult",
    "group_cpu_seconds",
    "pin_process_group",
    "post_script",
    "quantile",
    "wrk",
]


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int


def post_script(directory: Path, body: str, name: str = "post.lua") -> Path:
    """A wrk Lua script sending ``body`` as a JSON POST."""
    path = directory / name
    escaped = body.replace("\\", "\\\\").replace("'", "\\'")
    path.write_text(
        f"wrk.method = 'POST'\nwrk.body = '{escaped}'\n"
        "wrk.headers['Content-Type'] = 'application/json'\n"
    )
    return path


def pin_process_group(group: int, cpu: int) -> None:
    """Pin every thread of every process in process group ``group`` to ``cpu``."""
    if (os.cpu_count() or 1) < 2:
        return
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) != group:
                continue
            for tid in os.listdir(f"/proc/{entry}/task"):
                os.sched_setaffinity(int(tid), {cpu})
        except (OSError, ValueError, IndexError):
            continue


def group_cpu_seconds(group: int) -> float:
    """User + system CPU seconds used so far by every process in process group ``group``."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def _milliseconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip()).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(
    url: str, seconds: float, script: Path | None = None, connections: int = 64, cpu: int = 1
) -> WrkResult:
    """One ``wrk --latency`` run pinned to ``cpu``; raises on socket errors."""
    command = [
        require_tool("wrk"),
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
    ]
    if script is not None:
        command += ["-s", str(script)]
    command.append(url)
    if (os.cpu_count() or 1) > 1:
        command = [require_tool("taskset"), "-c", str(cpu), *command]
    output = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    assert rate, output
    assert p50, output
    assert p99, output
    assert "Socket errors" not in output, output
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(
        rps=float(rate.group(1)),
        p50_ms=_milliseconds(p50.group(1)),
        p99_ms=_milliseconds(p99.group(1)),
        non_2xx=int(bad.group(1)) if bad else 0,
    )


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

"""Load-driver helpers shared by the HTTP benchmarks: ``wrk`` runs, units, CPU pinning.

Servers are pinned to core 0 and ``wrk`` to core 1, so the two don't fight over a core and
the figures are comparable between servers measured in the same run.

Load is honest (docs/spec.md section 11): every request carries a unit from a mix, never one
constant key, which would hit caches no real traffic hits (the query-string parser's, the
stats' seen-units set). :data:`UNIT_MIXES` are the two mixes every throughput benchmark uses:
``new`` (a unit never seen before on every request) and ``returning`` (units drawn from a
fixed population of :data:`RETURNING_USERS`, as the portal's users come back all day).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.tools import REPO_ROOT, require_tool

__all__ = [
    "RETURNING_USERS",
    "UNIT_MIXES",
    "WrkResult",
    "cpu_us_per_request",
    "group_cpu_seconds",
    "pin_process_group",
    "post_script",
    "quantile",
    "request_script",
    "unit_script",
    "wrk",
]

#: The returning-users mix draws from this many users.
RETURNING_USERS = 10_000
#: Lua expressions for the unit of each request (``n`` counts the run's requests). wrk's Lua
#: generator is not seeded, so every run of ``returning`` draws the same sequence; ``new``
#: units carry the second the run started, so no two runs share one.
UNIT_MIXES = {
    "new": "started .. '-' .. n",
    "returning": f"math.random({RETURNING_USERS})",
}


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    #: Requests completed in the run.
    requests: int = 0


def unit_script(
    directory: Path,
    name: str,
    mix: str,
    *,
    get_path: str | None = None,
    headers: dict[str, str] | None = None,
) -> Path:
    """A wrk script whose every request carries a unit of ``mix`` (:data:`UNIT_MIXES`): an
    OFREP POST body, or with ``get_path`` a ``GET get_path?targetingKey=...``."""
    if get_path is None:
        body = '{"context":{"targetingKey":"user-{unit}","company_id":7,"role":"member"}}'
        return request_script(directory, name, mix, body=body, headers=headers)
    path = f"{get_path}?targetingKey=user-{{unit}}&company_id=7&role=member"
    return request_script(directory, name, mix, method="GET", path=path, headers=headers)


def _lua_text(template: str, unit: str) -> str:
    """A Lua expression for ``template`` with every ``{unit}`` replaced by ``unit`` (a Lua
    expression), as single-quoted Lua strings joined with ``..``."""
    parts = [part.replace("\\", "\\\\").replace("'", "\\'") for part in template.split("{unit}")]
    return f" .. {unit} .. ".join(f"'{part}'" for part in parts)


def request_script(
    directory: Path,
    name: str,
    mix: str,
    *,
    method: str = "POST",
    path: str | None = None,
    body: str | None = None,
    headers: dict[str, str] | None = None,
) -> Path:
    """A wrk script sending ``method`` to ``path`` (``None``: the URL's own path) with
    ``body`` (a JSON POST), where every ``{unit}`` in ``path`` and ``body`` is a unit of
    ``mix`` (:data:`UNIT_MIXES`), new for each request."""
    unit = UNIT_MIXES[mix]
    all_headers = dict(headers or {})
    if body is not None:
        all_headers.setdefault("Content-Type", "application/json")
    table = "".join(f"['{k}'] = '{v}', " for k, v in all_headers.items())
    lua_path = "nil" if path is None else _lua_text(path, unit)
    lua_body = "nil" if body is None else _lua_text(body, unit)
    script = directory / f"{name}.lua"
    script.write_text(
        "local started = os.time()\nlocal n = 0\n"
        "request = function()\n  n = n + 1\n"
        f"  return wrk.format('{method}', {lua_path}, {{{table}}}, {lua_body})\n"
        "end\n"
    )
    return script


def cpu_us_per_request(cpu_seconds: float, result: WrkResult) -> float:
    """Server CPU microseconds per request of a run (CPU seconds measured around it)."""
    return cpu_seconds * 1e6 / max(1, result.requests)


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
    url: str,
    seconds: float,
    script: Path | None = None,
    connections: int = 64,
    cpu: int = 1,
    timeout: float = 2.0,
) -> WrkResult:
    """One ``wrk --latency`` run pinned to ``cpu``; raises on socket errors (a request
    unanswered after ``timeout`` seconds is one: wrk's default, 2 s)."""
    command = [
        require_tool("wrk"),
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={timeout:g}s",
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
    completed = re.search(r"(\d+) requests in", output)
    return WrkResult(
        rps=float(rate.group(1)),
        p50_ms=_milliseconds(p50.group(1)),
        p99_ms=_milliseconds(p99.group(1)),
        non_2xx=int(bad.group(1)) if bad else 0,
        requests=int(completed.group(1)) if completed else 0,
    )


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


#: Where the benchmarks that keep a log of their runs append them.
RESULTS = REPO_ROOT / "benchmarks" / "RESULTS.md"


def append_to_results(heading: str, introduction: str, report: str) -> None:
    """Append ``report`` to benchmarks/RESULTS.md, first adding ``heading`` and its
    ``introduction`` at the end when the file has no such section yet."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if heading not in text:
        text = text.rstrip("\n") + "\n\n" + heading + "\n\n" + introduction + "\n"
    RESULTS.write_text(text.rstrip("\n") + "\n" + report)

"""Flagport against what a team would use instead, on the same machine and load (issue 20,
item 1).

Peers, started here from ``benchmarks/peers`` (pinned in its ``package-lock.json``, installed
with ``npm ci``, run with the machine's Node):

- **GrowthBook floor**: a bare ``node:http`` server around ``@growthbook/growthbook``'s
  ``GrowthBookClient`` (``growthbook_server.js``): what a hand-written Node evaluation service
  reaches, with OFREP-shaped answers;
- **Unleash Proxy**: ``@unleash/proxy`` with bootstrapped toggles and no upstream
  (``unleash_proxy.js``).

The same configuration everywhere: the portal's 10 flags (``examples/portal-flags.yaml``) with
``ui-improvements`` on for 50 % of users and its children following it (GrowthBook:
``parentConditions`` gates; Unleash: dependent features). Shapes, each with a new user per
request: single GET and single POST of ``ui-improvements.dropdown-fixes`` (a child: the parent
is evaluated too) and the bulk of all 10 flags. The Unleash Proxy has no single-toggle GET;
its single GET is ``GET /proxy`` (every enabled toggle), its single POST ``POST /proxy`` with
one toggle, its bulk ``POST /proxy/all``.

Each server: one process pinned to core 0, ``wrk -t1 -c64`` on core 1; rounds interleave every
(server, shape) pair, after a one-second warm-up of each; per round the ratio Flagport / peer
of requests/s, and of server CPU microseconds per request (peer / Flagport: > 1 is cheaper);
medians of the rounds. Budgets:
OFREP single >= 0.6x the GrowthBook floor, bulk >= 0.8x; >= 4x the Unleash Proxy on every shape.
The peers are frozen: :data:`PEERS_SHA256` names the files they are built from.

``make test`` (``--benchmark-disable``): one 1-second round, and the peers' answers checked
against Flagport's (the same users in the same 50 %).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import statistics
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from benchmarks._load import (
    WrkResult,
    cpu_us_per_request,
    group_cpu_seconds,
    pin_process_group,
    request_script,
    wrk,
)
from tests.support.server import (
    PORTAL_FLAGS,
    RunningServer,
    free_port,
    start_server,
    wait_until,
)
from tests.support.tools import REPO_ROOT, require_tool

PEERS = REPO_ROOT / "benchmarks" / "peers"
#: The files the peers are made of, as measured in RESULTS.md: a change is a new baseline.
PEERS_SHA256 = {
    "package-lock.json": "7e4b18c7d3f0661d10cfbb705526abe257b515f4183d3b780642df2788b11986",
    "growthbook_server.js": "ce0044eaf36558b7c103843b336688e93c004d28313454127ccea4eff03211f9",
    "unleash_proxy.js": "73c41f4ee1cfd5fcdba74631c5a0413b6bbe67f40932be2b83b3cbb00467a634",
}
KEY = "ui-improvements.dropdown-fixes"
ROLLOUT = "ui-improvements"
CLIENT_KEY = "flagport-bench-client-key"
MIX = "new"
CONTEXT = '"targetingKey":"user-{unit}","company_id":7,"role":"member"'
UNLEASH_CONTEXT = '"userId":"user-{unit}","properties":{"company_id":"7","role":"member"}'
SHAPES = ("single GET", "single POST", "bulk")
BUDGETS = {
    ("GrowthBook", "single POST"): 0.6,
    ("GrowthBook", "bulk"): 0.8,
    ("Unleash Proxy", "single GET"): 4.0,
    ("Unleash Proxy", "single POST"): 4.0,
    ("Unleash Proxy", "bulk"): 4.0,
}


def portal_document() -> dict[str, Any]:
    """The portal's flags with ``ui-improvements`` on for 50 %."""
    document = yaml.safe_load(PORTAL_FLAGS.read_text())
    document["flags"][ROLLOUT].update(enabled=True, percentage=50)
    return document


def _parent(key: str, flags: dict[str, Any]) -> str | None:
    parent = key.rpartition(".")[0]
    return parent if parent in flags else None


def growthbook_features(document: dict[str, Any]) -> dict[str, Any]:
    """The document as GrowthBook features: a rollout is a ``force`` rule with ``coverage``
    hashed on the user id, a child is gated on its parent being on."""
    flags = document["flags"]
    features: dict[str, Any] = {}
    for key, flag in flags.items():
        percentage = float(flag.get("percentage", 100))
        rules: list[dict[str, Any]] = []
        if flag.get("enabled") and percentage > 0:
            rule: dict[str, Any] = {"force": True}
            if percentage < 100:
                rule |= {"coverage": percentage / 100, "hashAttribute": "id"}
            parent = _parent(key, flags)
            if parent is not None:
                rule["parentConditions"] = [
                    {"id": parent, "condition": {"value": True}, "gate": True}
                ]
            rules.append(rule)
        features[key] = {"defaultValue": False, "rules": rules}
    return features


def unleash_features(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The document as Unleash toggles: a rollout is ``flexibleRollout`` on ``userId``, a
    child depends on its parent."""
    flags = document["flags"]
    toggles: list[dict[str, Any]] = []
    for key, flag in flags.items():
        percentage = float(flag.get("percentage", 100))
        if 0 < percentage < 100:
            strategy: dict[str, Any] = {
                "name": "flexibleRollout",
                "parameters": {
                    "rollout": str(round(percentage)),
                    "stickiness": "userId",
                    "groupId": key,
                },
                "constraints": [],
            }
        else:
            strategy = {"name": "default", "parameters": {}, "constraints": []}
        parent = _parent(key, flags)
        toggles.append(
            {
                "name": key,
                "type": "release",
                "project": "default",
                "enabled": bool(flag.get("enabled")) and percentage > 0,
                "stale": False,
                "strategies": [strategy],
                "variants": [],
                "dependencies": [{"feature": parent, "enabled": True}] if parent else [],
            }
        )
    return toggles


def _digest(name: str) -> str:
    return hashlib.sha256((PEERS / name).read_bytes()).hexdigest()


def _installed() -> Path:
    """``benchmarks/peers/node_modules``, installed from the lock file when missing or older
    than it."""
    require_tool("node")
    npm = require_tool("npm")
    modules = PEERS / "node_modules"
    stamp = modules / ".package-lock.json"
    lock = PEERS / "package-lock.json"
    if not stamp.exists() or stamp.stat().st_mtime < lock.stat().st_mtime:
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
            cwd=PEERS,
            check=True,
            timeout=300,
            capture_output=True,
        )
    return modules


@dataclass
class Peer:
    """A peer's Node process, in a process group of its own."""

    name: str
    url: str
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(10)


def _start_peer(name: str, script: str, features: Path, workdir: Path, *extra: str) -> Peer:
    port = free_port()
    log = (workdir / f"{script}.log").open("wb")
    process = subprocess.Popen(
        [require_tool("node"), script, str(port), str(features), *extra],
        cwd=PEERS,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "NODE_ENV": "production"},
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"{name} exited: {(workdir / f'{script}.log').read_text()}")
        try:
            return httpx.get(url + "/", timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    assert wait_until(up, 30, 0.1), f"{name} did not start"
    return Peer(name, url, process)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require_tool("wrk")
    _installed()
    workdir = tmp_path_factory.mktemp("peers")
    document = portal_document()
    seed = workdir / "portal-50.yaml"
    seed.write_text(yaml.safe_dump(document))
    growthbook_file = workdir / "growthbook.json"
    growthbook_file.write_text(json.dumps(growthbook_features(document)))
    unleash_file = workdir / "unleash.json"
    unleash_file.write_text(json.dumps(unleash_features(document)))
    ours = start_server(workdir / "flagport", workers=1, seed=seed)
    started: list[Peer] = []
    try:
        started.append(_start_peer("GrowthBook", "growthbook_server.js", growthbook_file, workdir))
        started.append(
            _start_peer("Unleash Proxy", "unleash_proxy.js", unleash_file, workdir, CLIENT_KEY)
        )
        for group in (ours.process.pid, *(peer.pid for peer in started)):
            pin_process_group(group, 0)
        yield {"Flagport": ours, **{peer.name: peer for peer in started}, "workdir": workdir}
    finally:
        ours.stop()
        for peer in started:
            peer.stop()


def test_the_peers_are_frozen() -> None:
    """A budget is a ratio to a peer: changing the peer would change the verdict."""
    changed = [name for name, digest in PEERS_SHA256.items() if _digest(name) != digest]
    assert not changed, (
        f"benchmarks/peers/{', '.join(changed)} changed: a new baseline needs a new line in "
        "RESULTS.md and new PEERS_SHA256 digests"
    )


def _flagport_on(client: httpx.Client, key: str, user: str) -> bool:
    answer = client.post(
        f"/ofrep/v1/evaluate/flags/{key}", json={"context": {"targetingKey": user}}
    )
    assert answer.status_code == 200, answer.text
    return bool(answer.json()["value"])


def test_the_peers_serve_the_same_configuration(servers: dict[str, Any]) -> None:
    """Every peer serves the portal's flags as Flagport does: about half the users have
    ``ui-improvements``, its children follow it, the flags that are off are off. (Each
    system hashes users its own way, so the halves differ; fixed users, no flakiness.)"""
    ours: RunningServer = servers["Flagport"]
    growthbook: Peer = servers["GrowthBook"]
    unleash: Peer = servers["Unleash Proxy"]
    users = [f"user-{n}" for n in range(200)]
    unleash_headers = {"Authorization": CLIENT_KEY}
    with (
        ours.client() as flagport,
        httpx.Client(base_url=growthbook.url) as gb,
        httpx.Client(base_url=unleash.url, headers=unleash_headers) as un,
    ):
        on: dict[str, list[bool]] = {"Flagport": [], "GrowthBook": [], "Unleash Proxy": []}
        for user in users:
            context = {"targetingKey": user, "company_id": 7, "role": "member"}
            parent = _flagport_on(flagport, ROLLOUT, user)
            assert _flagport_on(flagport, KEY, user) == parent
            on["Flagport"].append(parent)

            single = gb.post(f"/flags/{KEY}", json={"context": context}).json()
            bulk = {
                f["key"]: f["value"]
                for f in gb.post("/flags", json={"context": context}).json()["flags"]
            }
            assert gb.get(f"/flags/{KEY}", params=context).json() == single
            assert bulk[KEY] == bulk[ROLLOUT] == single["value"]
            assert bulk["enhanced-mobile-nav"] is False
            on["GrowthBook"].append(bool(single["value"]))

            unleash_context = {"userId": user, "properties": {"company_id": "7"}}
            enabled = {
                t["name"]
                for t in un.post(
                    "/proxy", json={"context": unleash_context, "toggles": [KEY]}
                ).json()["toggles"]
                if t["enabled"]
            }
            everything = {
                t["name"]: t["enabled"]
                for t in un.post("/proxy/all", json={"context": unleash_context}).json()["toggles"]
            }
            listed = {
                t["name"] for t in un.get("/proxy", params={"userId": user}).json()["toggles"]
            }
            assert (KEY in enabled) == everything[KEY] == everything[ROLLOUT] == (KEY in listed)
            assert not everything["enhanced-mobile-nav"]
            on["Unleash Proxy"].append(KEY in enabled)
        assert len(everything) == 10
    for name, values in on.items():
        share = sum(values) / len(values)
        assert 0.35 <= share <= 0.65, f"{name}: {share:.0%} of the users have {ROLLOUT}"


#: Seconds a peer may take to answer before wrk counts a socket error.
PEER_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Target:
    url: str
    script: Path
    group: int


def _targets(servers: dict[str, Any]) -> dict[tuple[str, str], Target]:
    workdir: Path = servers["workdir"]
    ours: RunningServer = servers["Flagport"]
    growthbook: Peer = servers["GrowthBook"]
    unleash: Peer = servers["Unleash Proxy"]
    ofrep_body = '{"context":{' + CONTEXT + "}}"
    query = "targetingKey=user-{unit}&company_id=7&role=member"
    auth = {"Authorization": CLIENT_KEY}

    def script(name: str, **kwargs: Any) -> Path:
        return request_script(workdir, name, MIX, **kwargs)

    return {
        ("Flagport", "single GET"): Target(
            ours.url,
            script("flagport-get", method="GET", path=f"/v1/evaluate/{KEY}?{query}"),
            ours.process.pid,
        ),
        ("Flagport", "single POST"): Target(
            f"{ours.url}/ofrep/v1/evaluate/flags/{KEY}",
            script("flagport-post", body=ofrep_body),
            ours.process.pid,
        ),
        ("Flagport", "bulk"): Target(
            f"{ours.url}/ofrep/v1/evaluate/flags",
            script("flagport-bulk", body=ofrep_body),
            ours.process.pid,
        ),
        ("GrowthBook", "single GET"): Target(
            growthbook.url,
            script("growthbook-get", method="GET", path=f"/flags/{KEY}?{query}"),
            growthbook.pid,
        ),
        ("GrowthBook", "single POST"): Target(
            f"{growthbook.url}/flags/{KEY}",
            script("growthbook-post", body=ofrep_body),
            growthbook.pid,
        ),
        ("GrowthBook", "bulk"): Target(
            f"{growthbook.url}/flags", script("growthbook-bulk", body=ofrep_body), growthbook.pid
        ),
        ("Unleash Proxy", "single GET"): Target(
            unleash.url,
            script(
                "unleash-get",
                method="GET",
                path="/proxy?userId=user-{unit}&properties[company_id]=7&properties[role]=member",
                headers=auth,
            ),
            unleash.pid,
        ),
        ("Unleash Proxy", "single POST"): Target(
            f"{unleash.url}/proxy",
            script(
                "unleash-post",
                body='{"context":{' + UNLEASH_CONTEXT + '},"toggles":["' + KEY + '"]}',
                headers=auth,
            ),
            unleash.pid,
        ),
        ("Unleash Proxy", "bulk"): Target(
            f"{unleash.url}/proxy/all",
            script("unleash-bulk", body='{"context":{' + UNLEASH_CONTEXT + "}}", headers=auth),
            unleash.pid,
        ),
    }


def test_flagport_against_the_peers(servers: dict[str, Any], timed: bool, benchmark: Any) -> None:
    targets = _targets(servers)
    rounds, seconds = (5, 5) if timed else (1, 1)
    results: dict[tuple[str, str], list[WrkResult]] = {name: [] for name in targets}
    cpu_us: dict[tuple[str, str], list[float]] = {name: [] for name in targets}

    def run() -> None:
        names = list(targets)
        # Warm-up, not counted: every target's first round ran at about half speed (JIT,
        # caches, the first connections), a median's outlier that made one ratio 0.29x.
        for name in names if timed else ():
            target = targets[name]
            wrk(target.url, 1, target.script, timeout=PEER_TIMEOUT_S)
        for round_ in range(rounds):
            for name in names if round_ % 2 == 0 else names[::-1]:
                target = targets[name]
                before = group_cpu_seconds(target.group)
                # The Unleash Proxy's tail passes wrk's 2 s at 64 connections on one core
                # (p99 1.3 s, max 1.95 s seen): its latency is measured, not an error.
                result = wrk(target.url, seconds, target.script, timeout=PEER_TIMEOUT_S)
                cpu = group_cpu_seconds(target.group) - before
                assert result.non_2xx == 0, f"{name}: {result.non_2xx} non-2xx answers"
                results[name].append(result)
                cpu_us[name].append(cpu_us_per_request(cpu, result))

    benchmark.pedantic(run, rounds=1, iterations=1)
    print(
        f"\n{rounds} interleaved rounds of {seconds} s, each server on core 0, wrk -t1 -c64 on"
        " core 1, a new user per request"
    )
    for (server, shape), runs in results.items():
        print(
            f"  {server:14} {shape:12} {statistics.median(r.rps for r in runs):8.0f} req/s"
            f"  p50 {statistics.median(r.p50_ms for r in runs):6.2f} ms"
            f"  p99 {statistics.median(r.p99_ms for r in runs):7.2f} ms"
            f"  server CPU {statistics.median(cpu_us[(server, shape)]):6.1f} us/request"
        )
    ratios: dict[str, float] = {}
    for peer in ("GrowthBook", "Unleash Proxy"):
        for shape in SHAPES:
            ours, theirs = ("Flagport", shape), (peer, shape)
            per_round = [a.rps / b.rps for a, b in zip(results[ours], results[theirs], strict=True)]
            per_round_cpu = [b / a for a, b in zip(cpu_us[ours], cpu_us[theirs], strict=True)]
            ratio = statistics.median(per_round)
            ratios[f"{shape} / {peer}"] = ratio
            ratios[f"{shape} / {peer}, CPU"] = statistics.median(per_round_cpu)
            budget = BUDGETS.get((peer, shape))
            print(
                f"  Flagport / {peer:13} {shape:12} {ratio:6.3f}x req/s"
                f" (rounds {' '.join(f'{r:.3f}' for r in per_round)}),"
                f" {statistics.median(per_round_cpu):6.3f}x CPU"
                + (f"  budget >= {budget}x" if budget else "")
            )
    benchmark.extra_info.update(ratios=ratios)
    if timed:
        missed = {
            f"{shape} / {peer}": ratios[f"{shape} / {peer}"]
            for (peer, shape), budget in BUDGETS.items()
            if ratios[f"{shape} / {peer}"] < budget
        }
        assert not missed, f"budgets missed: {missed}"

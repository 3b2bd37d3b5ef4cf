"""The driver's promql queries never hold a decision up: against a Prometheus that accepts
connections and never answers, every round returns at once, the guard reads "not queried
yet", then the timeout, as not enough data (docs/adr/0025-prometheus-guards.md). The real
Prometheus is in tests/cli/test_rollout_prometheus.py."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from flagport.engine import Flag
from flagport.rollout.plan import PlanSpec, new_plan
from flagport_server.auth import Actor
from flagport_server.driver import Driver
from flagport_server.plans import Exposure, transition_commit
from flagport_server.prometheus import PromqlQueries
from flagport_server.stores import SQLiteStore
from flagport_server.stores.base import AuditEntry, Mutation, Store

pytestmark = pytest.mark.anyio

T0 = datetime(2027, 1, 15, 9, 0, tzinfo=UTC).timestamp()
KEY = "checkout"
GUARD = 'promql(sum(errors{flag="$flag"})) > 1'


@pytest.fixture
def silent() -> Iterator[str]:
    """A listener that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.fixture
async def store(tmp_path: Path, silent: str) -> AsyncIterator[Store]:
    opened = SQLiteStore(tmp_path / "flagport.db")
    await opened.open()
    await opened.commit(
        [Mutation("flag", KEY, "put", Flag(version=1, enabled=False), None)],
        [AuditEntry(actor="alice", action="create", key=KEY, at="2027-01-15T08:00:00Z")],
    )
    spec = PlanSpec(
        key=KEY,
        steps=(10.0, 100.0),
        hold=60,
        guards=(GUARD,),
        prometheus_url=silent,
        treatment_variant="on",
    )
    plan = new_plan(spec, T0 - 60)
    # Committed directly: the service's check at start would refuse a silent Prometheus.
    mutations, entries = transition_commit(
        await opened.load(), None, plan, Exposure.KEEP, "plan-create", Actor("alice")
    )
    await opened.commit(mutations, entries)
    try:
        yield opened
    finally:
        await opened.close()


async def test_a_silent_prometheus_never_holds_a_decision_up(store: Store, silent: str) -> None:
    # A step held by the query would take its timeout at least: twice the bound asserted, so a
    # loaded machine's slow step is not mistaken for one held.
    queries = PromqlQueries(httpx.AsyncClient(timeout=2.0))
    driver = Driver(store, clock=lambda: T0 + 1, promql=queries)
    await driver.step()  # starts the plan
    for _ in range(3):
        began = time.monotonic()
        await driver.step()
        assert time.monotonic() - began < 1.0
    evidence = driver.decisions[KEY].judgements[0].evidence
    assert (evidence.value, evidence.note) == (None, "not queried yet")
    sent = 'sum(errors{flag="checkout"})'
    for _ in range(500):  # the query times out in its own task, the loop running on
        if queries.reading_of(silent, sent) is not None:
            break
        await asyncio.sleep(0.01)
    await driver.step()
    judgement = driver.decisions[KEY].judgements[0]
    assert judgement.verdict.value == "not enough data"
    assert judgement.evidence.note == f"Prometheus at {silent} did not answer within 5 s"
    await queries.close()

"""Outcome totals as a test server's store holds them (docs/spec.md section 13)."""

from __future__ import annotations

import asyncio
import time

from flagport.rollout.outcomes import Cohort, Totals, minute_of
from flagport_server.stores import open_store
from flagport_server.stores.base import OutcomeRow
from tests.support.server import RunningServer


def stored_outcomes(server: RunningServer, key: str) -> dict[Cohort, Totals]:
    """``key``'s outcome totals in ``server``'s SQLite store over the last hour, per cohort."""

    async def read() -> list[OutcomeRow]:
        store = open_store(f"sqlite:///{server.workdir / 'flagport.db'}")
        await store.open()
        try:
            now = minute_of(time.time())
            return await store.outcomes(key, now - 3600, now + 60)
        finally:
            await store.close()

    sums = {Cohort.TREATMENT: Totals(), Cohort.CONTROL: Totals()}
    for _, _, cohort, totals in asyncio.run(read()):
        sums[cohort].merge(totals)
    return sums

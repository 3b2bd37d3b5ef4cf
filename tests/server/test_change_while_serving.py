"""A change is compiled in chunks while the worker goes on serving, and swapped in whole
(docs/adr/0020-incremental-compile.md): evaluations run between the chunks, and each of
them reads either the old snapshot or the new one, never a half-built one."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from flagport.engine import CompiledSnapshot, compile_snapshot, document_from_builtins
from flagport_server.recompile import compile_in_chunks, release_in_chunks, release_replaced
from tests.support.server import running_server

FLAGS = 1500


def _document(value: str, version: int = 0) -> dict[str, Any]:
    """``FLAGS`` flags that all serve ``value``, under a few parents, one segment."""
    flags: dict[str, Any] = {}
    for index in range(FLAGS):
        key = f"team-{index % 10}" if index < 10 else f"team-{index % 10}.change-{index}"
        flags[key] = {
            "enabled": True,
            "variants": {"on": value, "off": "none"},
            "rules": [{"conditions": [{"op": "in_segment", "values": ["staff"]}], "variant": "on"}],
        }
    return {
        "bucketing": 1,
        "flags": flags,
        "segments": {"staff": {"included": ["user-1"]}},
        "version": version,
    }


@pytest.mark.anyio
async def test_evaluations_run_between_chunks_and_see_a_whole_snapshot() -> None:
    old = compile_snapshot(document_from_builtins(_document("v1", 1)))
    served: list[CompiledSnapshot] = [old]
    seen: list[set[Any]] = []
    during: list[int] = []
    building = True

    async def evaluate() -> None:
        # A request: read the served snapshot once, evaluate every flag from it.
        while building:
            results = served[0].evaluate_all({"targetingKey": "user-2"})
            seen.append({result.value for result in results.values()})
            during.append(1)
            await asyncio.sleep(0)

    requests = asyncio.create_task(evaluate())
    await asyncio.sleep(0)
    new = await compile_in_chunks(
        document_from_builtins(_document("v2", 2)), previous=old, chunk_size=100
    )
    evaluated_while_building = len(during)
    served[0] = new  # the swap: one assignment
    building = False
    await requests
    # 1,500 changed flags in chunks of 100: requests ran between the chunks...
    assert evaluated_while_building >= 2 * FLAGS // 100
    # ... each on the old snapshot, whole: never a mix of old and new results.
    assert seen[:evaluated_while_building] == [{"v1"}] * evaluated_while_building
    assert {result.value for result in new.evaluate_all({}).values()} == {"v2"}
    # Compiled at once (``--compile-chunk 0``, the old way), nothing runs in between.
    during.clear()
    building = True
    requests = asyncio.create_task(evaluate())
    third = document_from_builtins(_document("v3", 3))
    await compile_in_chunks(third, previous=new, chunk_size=None)
    assert len(during) <= 1
    building = False
    await requests


@pytest.mark.anyio
async def test_what_a_change_leaves_behind_is_freed_between_pauses() -> None:
    """An import's leftovers (audit entries, the document it was sent, the configuration it
    replaced) are freed a chunk at a time, the loop serving in between; a container someone
    else still holds is left whole."""
    ticks = 0
    running = True

    async def requests() -> None:
        nonlocal ticks
        while running:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(requests())
    await asyncio.sleep(0)
    entries = [{"key": f"flag-{index}", "after": {"enabled": True}} for index in range(2500)]
    flags = {f"flag-{index}": [index] for index in range(2500)}
    await release_in_chunks(entries, chunk_size=1000)
    after_list = ticks
    await release_in_chunks(flags, chunk_size=1000)
    running = False
    await task
    assert entries == []
    assert flags == {}
    # 2,500 items in chunks of 1,000: three chunks, each followed by a pause.
    assert after_list >= 3
    assert ticks - after_list >= 3
    shared = [1, 2, 3]
    holder = {"kept": shared}
    await release_in_chunks(shared)
    assert holder["kept"] == [1, 2, 3]


@pytest.mark.anyio
async def test_a_replaced_snapshot_is_dismantled_only_once_nothing_evaluates_from_it() -> None:
    in_use = compile_snapshot(document_from_builtins(_document("v1", 1)))
    request = [in_use]  # a request still evaluating from it
    await release_replaced(in_use)
    assert len(request[0]) == FLAGS
    assert request[0].evaluate("team-1", {"targetingKey": "user-1"}).value == "v1"
    del request
    await release_replaced(in_use)
    assert len(in_use) == 0


def test_a_served_change_is_never_half_built(tmp_path: Path) -> None:
    """A real worker under bulk evaluations while an import changes every flag: every answer
    is all old or all new, each client sees the versions in order, and the answers go on
    while the change is compiled."""
    seed = tmp_path / "seed.yaml"
    seed.write_text(yaml.safe_dump(_document("v1")))
    with running_server(tmp_path / "server", workers=1, seed=seed) as server:
        seen: list[list[set[Any]]] = [[], []]
        stop = threading.Event()

        def bulk(answers: list[set[Any]]) -> None:
            with server.client(timeout=30) as client:
                while not stop.is_set():
                    answer = client.post(
                        "/ofrep/v1/evaluate/flags", json={"context": {"targetingKey": "user-2"}}
                    )
                    assert answer.status_code == 200, answer.text
                    answers.append({flag["value"] for flag in answer.json()["flags"]})

        threads = [threading.Thread(target=bulk, args=(answers,)) for answers in seen]
        for thread in threads:
            thread.start()
        try:
            with server.admin(timeout=60) as admin:
                for value in ("v2", "v3"):
                    answer = admin.post("/admin/v1/snapshot", json=_document(value))
                    assert answer.status_code == 200, answer.text
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        with server.client(timeout=30) as client:
            after = client.post(
                "/ofrep/v1/evaluate/flags", json={"context": {"targetingKey": "user-2"}}
            )
        assert {flag["value"] for flag in after.json()["flags"]} == {"v3"}
    answers = [values for answers in seen for values in answers]
    assert answers
    assert all(len(values) == 1 for values in answers), [v for v in answers if len(v) != 1][:3]
    assert {"v1"} in answers
    # A thread's answers never go back to an older version. (Across the two threads the last
    # answer recorded may be older: a request sent before the change can finish after one
    # sent later.)
    for answers in seen:
        versions = [next(iter(values)) for values in answers]
        assert versions == sorted(versions), versions

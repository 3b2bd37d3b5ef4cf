"""The evaluation tally the server and ``LocalClient`` both count with: exact counts while
other threads evaluate, results of an old snapshot let go, and what a failed report gives
back handed over again."""

from __future__ import annotations

import gc
import threading
from typing import Any

from flagport.engine import compile_snapshot, document_from_builtins
from flagport.tally import EvaluationTally, counted_unit

SNAPSHOT = compile_snapshot(
    document_from_builtins({"flags": {"half": {"enabled": True, "percentage": 50}}})
)


def evaluated(unit: Any, snapshot: Any = SNAPSHOT) -> tuple[Any, dict[str, Any]]:
    context = {"targetingKey": unit}
    return snapshot.evaluate("half", context, 0.0), context


def by_variant(tally: EvaluationTally) -> dict[str, tuple[int, set[str]]]:
    found: dict[str, tuple[int, set[str]]] = {}
    for counted in tally.take():
        evaluations, units = found.get(counted.result.variant or "", (0, set()))
        found[counted.result.variant or ""] = (
            evaluations + counted.evaluations,
            units | set(counted.units),
        )
    return found


def test_counts_from_several_threads_add_up_while_another_takes() -> None:
    tally = EvaluationTally(lambda key: "targetingKey")
    contexts = [{"targetingKey": f"user-{n}"} for n in range(500)]
    results = [SNAPSHOT.evaluate("half", context, 0.0) for context in contexts]
    threads = 4
    rounds = 50
    start = threading.Barrier(threads + 1)

    def evaluate() -> None:
        start.wait()
        for _ in range(rounds):
            for result, context in zip(results, contexts, strict=True):
                tally.count(result, context)

    workers = [threading.Thread(target=evaluate) for _ in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    taken = []
    while any(worker.is_alive() for worker in workers):
        taken += tally.take()
    for worker in workers:
        worker.join()
    taken += tally.take()
    assert sum(counted.evaluations for counted in taken) == threads * rounds * len(contexts)
    assert {unit for counted in taken for unit in counted.units} == {
        f"user-{n}" for n in range(500)
    }


def test_units_follow_the_unit_rule_when_taken() -> None:
    tally = EvaluationTally(lambda key: "targetingKey")
    long_unit = "u" * 10_000
    for unit in (7, "7", long_unit, long_unit, "", 3.5, ["not", "hashable"], None, True):
        result, context = evaluated(unit)
        tally.count(result, context)
    units = {unit for counted in tally.take() for unit in counted.units}
    assert units == {counted_unit(7), counted_unit(long_unit)} == {"7", counted_unit(long_unit)}


def test_the_results_of_a_snapshot_no_longer_served_are_let_go() -> None:
    tally = EvaluationTally(lambda key: "targetingKey")
    old_snapshot = compile_snapshot(
        document_from_builtins({"flags": {"half": {"enabled": True, "percentage": 50}}})
    )
    for n in range(20):
        result, context = evaluated(f"user-{n}", old_snapshot)
        tally.count(result, context)
    held, _ = evaluated("user-0", old_snapshot)  # as by an evaluation about to count it
    served = {c.result.variant: c.evaluations for c in tally.take()}
    assert sum(served.values()) == 20
    del result, old_snapshot
    gc.collect()
    current, context = evaluated("user-0")
    tally.count(current, context)
    assert [c.result for c in tally.take()] == [current]
    # Nothing new: the idle result nothing holds is dropped; the held one and the current
    # snapshot's are kept (an evaluation may still count them).
    assert tally.take() == []
    assert set(tally.by_result) == {id(held), id(current)}
    tally.count(held, {"targetingKey": "user-0"})
    assert [(c.result, c.evaluations, c.units) for c in tally.take()] == [(held, 1, ["user-0"])]
    del held
    gc.collect()
    assert tally.take() == []
    assert set(tally.by_result) == {id(current)}


def test_what_is_given_back_is_taken_again_with_bounded_units() -> None:
    tally = EvaluationTally(lambda key: "targetingKey")
    for n in range(10):
        result, context = evaluated(f"user-{n}")
        tally.count(result, context)
    first = tally.take()
    tally.give_back(first, max_units=3)
    result, context = evaluated("user-0")
    tally.count(result, context)
    again = tally.take()
    assert sum(counted.evaluations for counted in again) == 11
    for counted in again:
        assert 1 <= len(counted.units) <= 4  # three given back, plus what came since
    assert tally.take() == []


def test_errors_and_collect_units_off_count_no_units() -> None:
    tally = EvaluationTally(lambda key: "targetingKey", collect_units=False)
    result, context = evaluated("user-1")
    tally.count(result, context)
    missing, empty = evaluated("")
    assert missing.error_code is not None
    with_units = EvaluationTally(lambda key: "targetingKey")
    with_units.count(missing, empty)
    assert [c.units for c in tally.take()] == [[]]
    assert [(c.evaluations, c.units) for c in with_units.take()] == [(1, [])]

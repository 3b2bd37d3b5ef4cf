"""Engine budgets (issue 2), as ratios to a reference function timed in the same run.

``make bench`` (``pytest benchmarks --benchmark-only``) asserts the ratios and prints the
figures recorded in ``benchmarks/RESULTS.md``. ``make test`` passes ``--benchmark-disable``:
then each measurement runs only a few times and only correctness is asserted (shared CI
machines are too noisy for timing assertions, and benchmarks are not timed tests).

Method (docs/spec.md section 11): ``timeit`` loops of 1,000+ calls, several interleaved rounds
(reference, candidate, reference, ...), medians, ratio of medians.
"""

from __future__ import annotations

import statistics
import time
import timeit
from collections.abc import Callable
from typing import Any

import mmh3
import pytest

from benchmarks._documents import area_flags
from flagport.engine import (
    CompiledSnapshot,
    check_document_limits,
    compile_snapshot,
    document_from_builtins,
)
from tests.support.worst_case import WORST_FLAGS, hostile_contexts, worst_case_document

UNITS = [f"user-{n}" for n in range(1_000)]
CONTEXTS = [
    {
        "targetingKey": unit,
        "company_id": str(n % 50),
        "country": "FR" if n % 3 else "DE",
        "plan": "pro" if n % 4 else "free",
        "app_version": f"2.{n % 12}.0",
        "email": f"{unit}@corp.test",
    }
    for n, unit in enumerate(UNITS)
]


class _RefFlag:
    __slots__ = ("enabled", "salt", "threshold")

    def __init__(self, salt: str, enabled: bool, threshold: int) -> None:
        self.salt = salt
        self.enabled = enabled
        self.threshold = threshold


REF_FLAGS = {f"ref-{i}": _RefFlag(f"ref-{i}", True, 50_000) for i in range(50)} | {
    "ui-improvements": _RefFlag("ui-improvements", True, 50_000)
}


def reference(flags: dict[str, _RefFlag], key: str, unit: str) -> bool:
    f = flags.get(key)
    if f is None or not f.enabled:
        return False
    return (mmh3.hash(f"{f.salt}:{unit}", 0, signed=False) * 100_000 >> 32) < f.threshold


def portal_document() -> dict[str, Any]:
    """50 flags shaped like the portal's: parents with children, rules, weights."""
    flags: dict[str, Any] = {}
    for p in range(10):
        parent = f"area-{p}"
        flags[parent] = {"enabled": p != 9, "percentage": [100, 50, 10, 100, 25][p % 5]}
        for c in range(3):
            flags[f"{parent}.feature-{c}"] = {"enabled": True}
    flags["area-0.feature-0"] = {"enabled": True, "percentage": 30}
    flags["area-1.feature-1"] = {"enabled": True, "salt": "area-1", "percentage": 20}
    for r in range(5):
        flags[f"ruled-{r}"] = {
            "enabled": True,
            "percentage": 10,
            "rules": [
                {
                    "conditions": [
                        {"attribute": "plan", "op": "eq", "values": ["pro"]},
                        {"attribute": "country", "op": "in", "values": ["FR", "BE"]},
                    ],
                    "variant": "on",
                },
                {
                    "conditions": [
                        {"attribute": "app_version", "op": "semver_gte", "values": ["2.5.0"]}
                    ],
                    "percentage": 50,
                },
            ],
            "targets": {"on": ["user-1", "user-2"]},
        }
    for w in range(5):
        flags[f"experiment-{w}"] = {
            "enabled": True,
            "percentage": 80,
            "variants": {"control": "A", "treatment": "B", "off": "none"},
            "on_variant": "control",
            "weights": {"control": 50, "treatment": 50},
        }
    flags["ui-improvements"] = {"enabled": True, "percentage": 50}
    flags["ruled-0"]["prerequisites"] = [{"key": "area-3"}]
    assert len(flags) == 51
    del flags["area-9.feature-2"]
    return {"bucketing": 1, "flags": flags}


def chain_document() -> dict[str, Any]:
    return {
        "bucketing": 1,
        "flags": {
            "top": {"enabled": True},
            "top.mid": {"enabled": True, "percentage": 100},
            "top.mid.leaf": {
                "enabled": True,
                "percentage": 50,
                "rules": [
                    {
                        "conditions": [
                            {"attribute": "plan", "op": "eq", "values": ["pro"]},
                            {"attribute": "country", "op": "in", "values": ["FR", "BE"]},
                            {"attribute": "app_version", "op": "semver_gte", "values": ["2.3.0"]},
                            {"attribute": "company_id", "op": "lt", "values": [40]},
                            {"attribute": "email", "op": "ends_with", "values": ["@corp.test"]},
                        ],
                        "variant": "on",
                    }
                ],
            },
        },
    }


@pytest.fixture(scope="module")
def portal() -> CompiledSnapshot:
    return compile_snapshot(document_from_builtins(portal_document()), strict=True)


def per_call(loop: Callable[[], object], calls: int, rounds: int) -> list[float]:
    return [timeit.timeit(loop, number=1) / calls for _ in range(rounds)]


def compare(
    reference_loop: Callable[[], object],
    candidate_loop: Callable[[], object],
    calls: int,
    timed: bool,
) -> tuple[float, float]:
    """Median seconds per call of each, over interleaved rounds (a few when not timed)."""
    rounds = 15 if timed else 2
    ref: list[float] = []
    cand: list[float] = []
    for _ in range(rounds):
        ref += per_call(reference_loop, calls, 1)
        cand += per_call(candidate_loop, calls, 1)
    return statistics.median(ref), statistics.median(cand)


def report(name: str, ref: float, cand: float, budget: float) -> None:
    print(
        f"\n{name}: reference {ref * 1e9:.0f} ns/call, candidate {cand * 1e9:.0f} ns/call, "
        f"ratio {cand / ref:.2f}x (budget {budget}x)"
    )


def test_single_rollout_flag(benchmark: Any, portal: CompiledSnapshot, timed: bool) -> None:
    evaluate = portal.evaluate
    flags = REF_FLAGS
    # Correctness first: the engine and the reference agree on every unit.
    for ctx in CONTEXTS:
        result = evaluate("ui-improvements", ctx)
        assert result.value is reference(flags, "ui-improvements", ctx["targetingKey"])
        assert result.reason == "SPLIT"
    assert 400 < sum(evaluate("ui-improvements", c).value for c in CONTEXTS) < 600

    def ref_loop() -> None:
        for unit in UNITS:
            reference(flags, "ui-improvements", unit)

    def engine_loop() -> None:
        for ctx in CONTEXTS:
            evaluate("ui-improvements", ctx)

    ref, cand = compare(ref_loop, engine_loop, len(UNITS), timed)
    benchmark.pedantic(engine_loop, rounds=20 if timed else 1, iterations=1)
    if timed:
        report("one 50 % flag", ref, cand, 2.0)
        assert cand / ref <= 2.0


def _chain_expected(ctx: dict[str, Any]) -> bool:
    major, minor, _ = (int(x) for x in ctx["app_version"].split("."))
    if (
        ctx["plan"] == "pro"
        and ctx["country"] in ("FR", "BE")
        and (major, minor) >= (2, 3)
        and float(ctx["company_id"]) < 40
        and ctx["email"].endswith("@corp.test")
    ):
        return True
    h = mmh3.hash(f"top.mid.leaf:{ctx['targetingKey']}", 0, signed=False)
    return (h * 100_000 >> 32) < 50_000


def test_chain_with_rule_conditions(benchmark: Any, timed: bool) -> None:
    snapshot = compile_snapshot(document_from_builtins(chain_document()), strict=True)
    evaluate = snapshot.evaluate
    matched = 0
    for ctx in CONTEXTS:
        result = evaluate("top.mid.leaf", ctx)
        assert result.value is _chain_expected(ctx), ctx
        matched += result.reason == "TARGETING_MATCH"
    assert 100 < matched < 900  # the rule both matches and fails to match

    def ref_loop() -> None:
        for unit in UNITS:
            reference(REF_FLAGS, "ui-improvements", unit)

    def engine_loop() -> None:
        for ctx in CONTEXTS:
            evaluate("top.mid.leaf", ctx)

    ref, cand = compare(ref_loop, engine_loop, len(UNITS), timed)
    benchmark.pedantic(engine_loop, rounds=20 if timed else 1, iterations=1)
    if timed:
        report("two-level chain + 5 conditions", ref, cand, 6.0)
        assert cand / ref <= 6.0


def test_evaluate_all_portal(benchmark: Any, portal: CompiledSnapshot, timed: bool) -> None:
    assert len(portal) == 50
    contexts = CONTEXTS[:200]
    for ctx in contexts[:50]:
        every = portal.evaluate_all(ctx)
        assert set(every) == set(portal)
        for key, result in every.items():
            assert result == portal.evaluate(key, ctx), key
        assert every["area-9.feature-0"].metadata == {"gatedBy": "area-9"}
        assert every["area-9.feature-0"].reason == "DISABLED"
        assert every["ui-improvements"].value is reference(
            REF_FLAGS, "ui-improvements", ctx["targetingKey"]
        )
    evaluate_all = portal.evaluate_all

    def ref_loop() -> None:
        for ctx in contexts:
            reference(REF_FLAGS, "ui-improvements", ctx["targetingKey"])

    def engine_loop() -> None:
        for ctx in contexts:
            evaluate_all(ctx)

    ref, cand = compare(ref_loop, engine_loop, len(contexts), timed)
    benchmark.pedantic(engine_loop, rounds=10 if timed else 1, iterations=1)
    if timed:
        report("evaluate_all, 50 portal flags", ref, cand, 60.0)
        assert cand / ref <= 60.0


def test_compile_10000_flags(benchmark: Any, timed: bool) -> None:
    document = document_from_builtins(area_flags(2_000))
    snapshot = compile_snapshot(document, strict=True)
    assert len(snapshot) == 10_000
    assert not snapshot.problems
    assert snapshot.evaluate("rules-7", {"plan": "pro"}).value is True
    rounds = 5 if timed else 1
    # gc stays enabled (timeit turns it off): compiling allocates, and collections are real.
    timer = timeit.Timer(lambda: compile_snapshot(document), setup="gc.enable()")
    seconds = statistics.median(timer.timeit(number=1) for _ in range(rounds))
    benchmark.pedantic(compile_snapshot, args=(document,), rounds=rounds, iterations=1)
    if timed:
        print(f"\ncompile 10,000 flags: {seconds * 1000:.0f} ms (budget 1000 ms)")
        assert seconds < 1.0


def test_worst_case_within_the_limits(
    benchmark: Any, portal: CompiledSnapshot, timed: bool
) -> None:
    """No context may cost seconds (issue 14, item 4): the costliest flags the limits allow
    (10,000 condition values each, segments included) against hostile contexts of 64 KiB
    (tests/support/worst_case.py). Budgets: one flag 5 ms, a bulk 50 ms. Each context is
    seen once per round and no two share a string, so nothing is reused between
    evaluations; the figure per flag is the median of its costliest context shape."""
    worst = worst_case_document()
    # The bulk evaluates them with the 50 portal-like flags.
    worst["flags"].update(portal_document()["flags"])
    document = document_from_builtins(worst)
    check_document_limits(document)
    snapshot = compile_snapshot(document, strict=True)
    shapes = 4  # hostile_contexts cycles through four shapes
    contexts = hostile_contexts(shapes * (10 if timed else 1))
    rounds = 3 if timed else 1
    for context in contexts:
        for key in WORST_FLAGS:
            assert snapshot.evaluate(key, context).variant == "off", key

    def seconds(run: Callable[[dict[str, Any]], object]) -> float:
        """The median per call of ``run`` over the costliest context shape."""
        by_shape: list[list[float]] = [[] for _ in range(shapes)]
        for _ in range(rounds):
            for index, context in enumerate(contexts):
                started = time.perf_counter()
                run(context)
                by_shape[index % shapes].append(time.perf_counter() - started)
        return max(statistics.median(times) for times in by_shape)

    evaluate = portal.evaluate

    def plain_loop() -> None:
        for ctx in CONTEXTS:
            evaluate("ui-improvements", ctx)

    plain = statistics.median(per_call(plain_loop, len(CONTEXTS), 15 if timed else 1))
    single = {key: seconds(lambda ctx, key=key: snapshot.evaluate(key, ctx)) for key in WORST_FLAGS}
    bulk = seconds(snapshot.evaluate_all)
    benchmark.pedantic(snapshot.evaluate_all, args=(contexts[-1],), rounds=1, iterations=1)
    if timed:
        print(f"\nworst case within the limits (plain 50 % flag: {plain * 1e9:.0f} ns/call)")
        for key, cost in single.items():
            print(
                f"  {key}: {cost * 1e3:.2f} ms, {cost / plain:,.0f}x the plain flag (budget 5 ms)"
            )
        ratio = bulk / plain
        print(f"  bulk, {len(snapshot)} flags: {bulk * 1e3:.2f} ms, {ratio:,.0f}x (budget 50 ms)")
        assert max(single.values()) <= 0.005
        assert bulk <= 0.05

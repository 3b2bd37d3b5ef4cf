"""The guard grammar (docs/spec.md, "Guarded rollouts", Guards): every metric, unit and
window rule, errors that name the position, bounds, and the canonical text round trip."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flagport.rollout.errors import GuardSyntaxError
from flagport.rollout.guards import (
    RUNBOOK,
    Guard,
    Metric,
    Op,
    needs_health_check,
    parse_guard,
    parse_guards,
)
from flagport.rollout.limits import MAX_GUARD_LENGTH, MAX_LABELS


@pytest.mark.parametrize(
    ("rule", "metric", "op", "value", "window"),
    [
        ("error_rate > 5% over 5m", Metric.ERROR_RATE, Op.GT, 0.05, 300),
        ("avg_latency > 2s over 5m", Metric.AVG_LATENCY, Op.GT, 2000.0, 300),
        ("p95_latency > 1.5s over 5m", Metric.P95_LATENCY, Op.GT, 1500.0, 300),
        ("p99_latency>=800ms", Metric.P99_LATENCY, Op.GE, 800.0, 300),
        ("throughput < 50/min over 5m", Metric.THROUGHPUT, Op.LT, 50.0, 300),
        ("health_failures >= 3", Metric.HEALTH_FAILURES, Op.GE, 3.0, None),
        ('count(user_report{severity="critical"}) > 10 over 10m', Metric.COUNT, Op.GT, 10.0, 600),
        ("error_rate <= 0.5% over 1h30m", Metric.ERROR_RATE, Op.LE, 0.005, 5400),
        ("promql(sum(rate(errors_total[5m]))) > 3", Metric.PROMQL, Op.GT, 3.0, None),
    ],
)
def test_each_metric_parses(
    rule: str, metric: Metric, op: Op, value: float, window: int | None
) -> None:
    guard = parse_guard(rule)
    assert (guard.metric, guard.op, guard.window) == (metric, op, window)
    assert guard.threshold_value == pytest.approx(value)
    assert parse_guard(str(guard)) == guard


def test_count_labels_and_promql_keep_their_text() -> None:
    guard = parse_guard(r'count(report{team="a\"b", severity = "x\\y"}) > 1')
    assert guard.event == "report"
    assert guard.labels == (("severity", "x\\y"), ("team", 'a"b'))
    assert str(guard) == r'count(report{severity="x\\y",team="a\"b"}) > 1 over 5m'
    query = parse_guard('promql(max(up{job=")"}) - 1) < 1').query
    assert query == 'max(up{job=")"}) - 1'


def test_runbook_is_the_portals_four_rules() -> None:
    guards = parse_guards(["runbook"])
    assert [str(g) for g in guards] == list(RUNBOOK)
    assert needs_health_check(guards)
    assert not needs_health_check(parse_guards(["error_rate > 1%"]))
    # A rule also named by the runbook is kept once.
    assert len(parse_guards(["runbook", "error_rate > 5% over 5m"])) == 4


@pytest.mark.parametrize(
    ("rule", "position", "words"),
    [
        ("error_rate > 5", 14, "'%'"),
        ("error_rate > 5ms", 14, "'%'"),
        ("avg_latency > 2 over 5m", 15, "'ms' or 's'"),
        ("throughput < 50 over 5m", 15, "'/min'"),
        ("count(x) > 10%", 13, "plain number"),
        ("error_rate > 5% over 30s", 21, "whole minutes"),
        ("error_rate > 5% over 25h", 21, "whole minutes"),
        ("error_rate > 5% over soon", 21, "invalid duration"),
        ("health_failures >= 3 over 5m", 21, "no window"),
        ("health_failures >= 2.5", 19, "whole number"),
        ("latency > 2s", 0, "unknown metric"),
        ("error_rate = 5%", 11, "comparison"),
        ("error_rate > 101%", 13, "at most 100"),
        ("error_rate > 5% over 5m and more", 24, "unexpected text"),
        ('count(x{a="1",a="2"}) > 1', 14, "twice"),
        ('count(x{a="1"} > 1', 15, "')'"),
        ('count(x{a="1) > 1', 10, "unterminated"),
        ("count(9x) > 1", 6, "event name"),
        ("promql(up > 1", 6, "unbalanced"),
        ("promql() > 1", 7, "needs a query"),
        ("error_rate(x) > 1%", 10, "no arguments"),
        ("error_rate > 1.1234567%", 13, "6 decimals"),
        ("runbook", 0, "stands alone"),
        ("", 0, "expected a metric"),
    ],
)
def test_errors_name_the_position(rule: str, position: int, words: str) -> None:
    with pytest.raises(GuardSyntaxError) as caught:
        parse_guard(rule)
    error = caught.value
    assert error.position == position, str(error)
    assert words in error.problem
    # The message shows the rule with a caret under the position.
    _, shown, caret = str(error).split("\n")
    assert shown.strip() == rule.strip()
    assert caret.index("^") - 2 == position


def test_sizes_are_bounded() -> None:
    with pytest.raises(GuardSyntaxError, match="at most 1000 characters"):
        parse_guard("error_rate > 5%" + " " * MAX_GUARD_LENGTH)
    labels = ",".join(f'l{i}="v"' for i in range(MAX_LABELS + 1))
    with pytest.raises(GuardSyntaxError, match=f"at most {MAX_LABELS} labels"):
        parse_guard(f"count(e{{{labels}}}) > 1")
    with pytest.raises(GuardSyntaxError, match="at most 256"):
        parse_guard('count(e{a="' + "v" * 300 + '"}) > 1')
    with pytest.raises(GuardSyntaxError, match="at most 20 guards"):
        parse_guards([f"error_rate > {i}%" for i in range(21)])


_NUMBERS = st.decimals(min_value=0, max_value=100, places=3, allow_nan=False)
_WINDOWS = st.integers(min_value=1, max_value=1440).map(lambda minutes: minutes * 60)
_LABEL_VALUES = st.text(
    st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)), max_size=20
)


@st.composite
def guards(draw: st.DrawFn) -> Guard:
    metric = draw(st.sampled_from(list(Metric)))
    op = draw(st.sampled_from(list(Op)))
    unit = {
        Metric.ERROR_RATE: st.just("%"),
        Metric.THROUGHPUT: st.just("/min"),
        Metric.AVG_LATENCY: st.sampled_from(["ms", "s"]),
        Metric.P95_LATENCY: st.sampled_from(["ms", "s"]),
        Metric.P99_LATENCY: st.sampled_from(["ms", "s"]),
    }.get(metric, st.just(""))
    threshold = draw(_NUMBERS)
    if metric is Metric.HEALTH_FAILURES:
        threshold = threshold.to_integral_value()
    windowed = metric not in (Metric.HEALTH_FAILURES, Metric.PROMQL)
    labels = draw(
        st.dictionaries(
            st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True),
            _LABEL_VALUES,
            max_size=MAX_LABELS,
        )
    )
    return Guard(
        metric=metric,
        op=op,
        threshold=Decimal(threshold),
        unit=draw(unit),
        window=draw(_WINDOWS) if windowed else None,
        event=draw(st.from_regex(r"[A-Za-z_][A-Za-z0-9_.:-]{0,20}", fullmatch=True))
        if metric is Metric.COUNT
        else None,
        labels=tuple(sorted(labels.items())) if metric is Metric.COUNT else (),
        query=draw(
            st.from_regex(r"[a-z_]{1,8}\([a-z_]{1,8}\[5m\]\)( \* [0-9]{1,3})?", fullmatch=True)
        )
        if metric is Metric.PROMQL
        else None,
    )


@given(guards())
def test_canonical_text_parses_back_to_the_same_guard(guard: Guard) -> None:
    text = str(guard)
    assert parse_guard(text) == guard
    assert str(parse_guard(text)) == text


@given(st.text(max_size=80))
def test_any_text_parses_or_fails_at_a_position_inside_it(text: str) -> None:
    try:
        guard = parse_guard(text)
    except GuardSyntaxError as error:
        position = error.position
    else:
        assert parse_guard(str(guard)) == guard
        return
    assert 0 <= position <= len(text)

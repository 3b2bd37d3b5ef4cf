"""The guard grammar (docs/spec.md, "Guarded rollouts", Guards).

::

    guard     = metric op threshold [ "over" duration ] | "runbook"
    metric    = "error_rate" | "avg_latency" | "p95_latency" | "p99_latency" | "throughput"
              | "health_failures" | "count(" event [ "{" label { "," label } "}" ] ")"
              | "promql(" query ")"
    op        = ">" | ">=" | "<" | "<="
    threshold = number unit                  number: digits [ "." digits ]
    label     = name "=" '"' value '"'       value: \\" and \\\\ escape a quote and a backslash

Units: ``error_rate`` takes ``%``; the latencies ``ms`` or ``s``; ``throughput`` ``/min``;
``count(...)``, ``health_failures`` and ``promql(...)`` a plain number. A window (``over``)
is whole minutes from ``1m`` to ``24h``; it defaults to ``5m`` where one applies;
``health_failures`` (consecutive failed polls) and ``promql`` (the query names its own range)
take none. Spaces separate tokens and may be left out around the operator.

:func:`parse_guard` reads one rule, :func:`parse_guards` a list in which ``runbook`` stands
for the portal's four rules (:data:`RUNBOOK`). ``str(guard)`` is the canonical text, which
parses back to an equal guard.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Final

import msgspec

from flagport.rollout.durations import format_duration, parse_duration
from flagport.rollout.errors import DurationError, GuardSyntaxError
from flagport.rollout.limits import (
    MAX_EVENT_NAME_LENGTH,
    MAX_GUARD_LENGTH,
    MAX_GUARDS,
    MAX_LABEL_NAME_LENGTH,
    MAX_LABEL_VALUE_LENGTH,
    MAX_LABELS,
    MAX_WINDOW_SECONDS,
    MIN_WINDOW_SECONDS,
)

__all__ = [
    "DEFAULT_WINDOW_SECONDS",
    "EVENT_NAME_PATTERN",
    "LABEL_NAME_PATTERN",
    "RUNBOOK",
    "Guard",
    "Metric",
    "Op",
    "needs_health_check",
    "parse_guard",
    "parse_guards",
]


class Metric(enum.StrEnum):
    ERROR_RATE = "error_rate"
    AVG_LATENCY = "avg_latency"
    P95_LATENCY = "p95_latency"
    P99_LATENCY = "p99_latency"
    THROUGHPUT = "throughput"
    HEALTH_FAILURES = "health_failures"
    COUNT = "count"
    PROMQL = "promql"


class Op(enum.StrEnum):
    GT = ">"
    GE = ">="
    LT = "<"
    LE = "<="

    def holds(self, value: float, threshold: float) -> bool:
        """Whether ``value OP threshold``: a guard breaches when it holds."""
        if self is Op.GT:
            return value > threshold
        if self is Op.GE:
            return value >= threshold
        if self is Op.LT:
            return value < threshold
        return value <= threshold


#: The window of a windowed metric whose rule names none.
DEFAULT_WINDOW_SECONDS: Final = 300
EVENT_NAME_PATTERN: Final = r"[A-Za-z_][A-Za-z0-9_.:-]*"
LABEL_NAME_PATTERN: Final = r"[A-Za-z_][A-Za-z0-9_]*"

_LATENCIES = frozenset({Metric.AVG_LATENCY, Metric.P95_LATENCY, Metric.P99_LATENCY})
_UNWINDOWED = frozenset({Metric.HEALTH_FAILURES, Metric.PROMQL})
#: The units each metric accepts (the first is what a plain-number threshold would need).
_UNITS: Final[dict[Metric, tuple[str, ...]]] = {
    Metric.ERROR_RATE: ("%",),
    Metric.AVG_LATENCY: ("ms", "s"),
    Metric.P95_LATENCY: ("ms", "s"),
    Metric.P99_LATENCY: ("ms", "s"),
    Metric.THROUGHPUT: ("/min",),
    Metric.HEALTH_FAILURES: ("",),
    Metric.COUNT: ("",),
    Metric.PROMQL: ("",),
}
#: The largest threshold per unit: 100 %, a day in ms or s, a billion otherwise.
_MAX_THRESHOLD: Final = {
    "%": Decimal(100),
    "ms": Decimal(86_400_000),
    "s": Decimal(86_400),
    "/min": Decimal(10**9),
    "": Decimal(10**9),
}
_NAME = re.compile(r"[a-z0-9_]+")
_NUMBER = re.compile(r"\d{1,12}(?:\.\d{1,6})?")
_EVENT = re.compile(EVENT_NAME_PATTERN)
_LABEL = re.compile(LABEL_NAME_PATTERN)
_UNIT = re.compile(r"%|ms|s|/min")
_DURATION = re.compile(r"[0-9a-zA-Z]+")
_SPACE = " \t"


class Guard(msgspec.Struct, frozen=True, kw_only=True):
    """One parsed rule. ``threshold`` is the number as written and ``unit`` its unit;
    :attr:`threshold_value` is it in the unit readings use (a fraction for ``%``,
    milliseconds for latencies, requests per minute, a count). ``window`` is in seconds
    (None for ``health_failures`` and ``promql``); ``labels`` are sorted by name."""

    metric: Metric
    op: Op
    threshold: Decimal
    unit: str = ""
    window: int | None = None
    event: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    query: str | None = None

    @property
    def threshold_value(self) -> float:
        if self.unit == "%":
            return float(self.threshold / 100)
        if self.unit == "s":
            return float(self.threshold * 1000)
        return float(self.threshold)

    def metric_text(self) -> str:
        if self.metric is Metric.COUNT:
            labels = ",".join(f'{name}="{_quote(value)}"' for name, value in self.labels)
            return f"count({self.event}{{{labels}}})" if labels else f"count({self.event})"
        if self.metric is Metric.PROMQL:
            return f"promql({self.query})"
        return self.metric.value

    def __str__(self) -> str:
        number = format(self.threshold.normalize(), "f")
        text = f"{self.metric_text()} {self.op.value} {number}{self.unit}"
        if self.window is not None:
            text += f" over {format_duration(self.window)}"
        return text


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


#: The portal runbook's four triggers (``runbook`` in a guard list stands for them).
RUNBOOK: Final[tuple[str, ...]] = (
    "error_rate > 5% over 5m",
    "avg_latency > 2s over 5m",
    "health_failures >= 3",
    'count(user_report{severity="critical"}) > 10 over 10m',
)


class _Reader:
    """A cursor over one rule; every error names the position it is at."""

    def __init__(self, rule: str) -> None:
        self.rule = rule
        self.at = 0

    def fail(self, problem: str, at: int | None = None) -> GuardSyntaxError:
        return GuardSyntaxError(problem, self.rule, self.at if at is None else at)

    def skip_space(self) -> None:
        while self.at < len(self.rule) and self.rule[self.at] in _SPACE:
            self.at += 1

    def done(self) -> bool:
        return self.at >= len(self.rule)

    def peek(self, text: str) -> bool:
        return self.rule.startswith(text, self.at)

    def expect(self, text: str, what: str) -> None:
        if not self.peek(text):
            raise self.fail(f"expected {what}")
        self.at += len(text)

    def match(self, pattern: re.Pattern[str]) -> str | None:
        found = pattern.match(self.rule, self.at)
        if found is None:
            return None
        self.at = found.end()
        return found.group()


def parse_guard(rule: str) -> Guard:
    """One rule (not ``runbook``: see :func:`parse_guards`) as a :class:`Guard`, or a
    :class:`GuardSyntaxError` naming the position of the problem."""
    if len(rule) > MAX_GUARD_LENGTH:
        raise GuardSyntaxError(
            f"a guard is at most {MAX_GUARD_LENGTH} characters, this one {len(rule)}",
            rule,
            MAX_GUARD_LENGTH,
        )
    reader = _Reader(rule)
    reader.skip_space()
    start = reader.at
    name = reader.match(_NAME)
    if name is None:
        raise reader.fail(
            "expected a metric: error_rate, avg_latency, p95_latency, p99_latency, "
            "throughput, health_failures, count(EVENT{...}) or promql(QUERY)"
        )
    try:
        metric = Metric(name)
    except ValueError:
        hint = " (runbook stands alone)" if name == "runbook" else ""
        raise reader.fail(f"unknown metric {name!r}{hint}", start) from None
    event: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    query: str | None = None
    if metric is Metric.COUNT:
        event, labels = _read_count(reader)
    elif metric is Metric.PROMQL:
        query = _read_promql(reader)
    elif reader.peek("("):
        raise reader.fail(f"{metric.value} takes no arguments")
    reader.skip_space()
    op = _read_op(reader)
    reader.skip_space()
    threshold, unit = _read_threshold(reader, metric)
    window = _read_window(reader, metric)
    reader.skip_space()
    if not reader.done():
        raise reader.fail("unexpected text after the guard")
    return Guard(
        metric=metric,
        op=op,
        threshold=threshold,
        unit=unit,
        window=window,
        event=event,
        labels=labels,
        query=query,
    )


def _read_count(reader: _Reader) -> tuple[str, tuple[tuple[str, str], ...]]:
    reader.expect("(", "'(' after count")
    reader.skip_space()
    start = reader.at
    event = reader.match(_EVENT)
    if event is None:
        raise reader.fail("expected an event name (letters, digits, _ . : -)")
    if len(event) > MAX_EVENT_NAME_LENGTH:
        raise reader.fail(f"an event name is at most {MAX_EVENT_NAME_LENGTH} characters", start)
    labels: dict[str, str] = {}
    reader.skip_space()
    if reader.peek("{"):
        reader.at += 1
        reader.skip_space()
        while not reader.peek("}"):
            if labels:
                reader.expect(",", "',' or '}' between labels")
                reader.skip_space()
            label_at = reader.at
            label = reader.match(_LABEL)
            if label is None:
                raise reader.fail("expected a label name")
            if len(label) > MAX_LABEL_NAME_LENGTH:
                raise reader.fail(
                    f"a label name is at most {MAX_LABEL_NAME_LENGTH} characters", label_at
                )
            if label in labels:
                raise reader.fail(f"label {label!r} is given twice", label_at)
            if len(labels) == MAX_LABELS:
                raise reader.fail(f"at most {MAX_LABELS} labels", label_at)
            reader.skip_space()
            reader.expect("=", "'=' after the label name")
            reader.skip_space()
            labels[label] = _read_string(reader)
            reader.skip_space()
        reader.at += 1
        reader.skip_space()
    reader.expect(")", "')' closing count(")
    return event, tuple(sorted(labels.items()))


def _read_string(reader: _Reader) -> str:
    start = reader.at
    reader.expect('"', "a double-quoted label value")
    chars: list[str] = []
    rule = reader.rule
    while True:
        if reader.done():
            raise reader.fail("unterminated label value", start)
        char = rule[reader.at]
        if char == '"':
            reader.at += 1
            break
        if char == "\\":
            if reader.at + 1 >= len(rule) or rule[reader.at + 1] not in '"\\':
                raise reader.fail('only \\" and \\\\ are escapes in a label value')
            char = rule[reader.at + 1]
            reader.at += 1
        elif char in "\r\n\x00":
            raise reader.fail("a label value is on one line")
        chars.append(char)
        reader.at += 1
        if len(chars) > MAX_LABEL_VALUE_LENGTH:
            raise reader.fail(f"a label value is at most {MAX_LABEL_VALUE_LENGTH} characters")
    return "".join(chars)


def _read_promql(reader: _Reader) -> str:
    """The text between ``promql(`` and its matching ``)``: parentheses nest, and quoted
    strings (which may hold parentheses) are skipped whole."""
    reader.expect("(", "'(' after promql")
    start, depth, rule = reader.at, 1, reader.rule
    quote: str | None = None
    while not reader.done():
        char = rule[reader.at]
        if quote is not None:
            if char == "\\":
                reader.at += 1
            elif char == quote:
                quote = None
        elif char in "\"'`":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                query = rule[start : reader.at].strip()
                if not query:
                    raise reader.fail("promql() needs a query", start)
                if any(c in query for c in "\r\n\x00"):
                    raise reader.fail("a promql query is on one line", start)
                reader.at += 1
                return query
        reader.at += 1
    raise reader.fail("unbalanced promql( ... ): expected ')'", start - 1)


def _read_op(reader: _Reader) -> Op:
    for text in (">=", "<=", ">", "<"):
        if reader.peek(text):
            reader.at += len(text)
            return Op(text)
    raise reader.fail("expected a comparison: >, >=, < or <=")


def _read_threshold(reader: _Reader, metric: Metric) -> tuple[Decimal, str]:
    start = reader.at
    number = reader.match(_NUMBER)
    if number is None:
        raise reader.fail("expected a number (at most 12 digits and 6 decimals)")
    if reader.peek(".") or (not reader.done() and reader.rule[reader.at].isdigit()):
        raise reader.fail("a number has at most 12 digits and 6 decimals", start)
    unit_at = reader.at
    unit = reader.match(_UNIT) or ""
    if unit and not reader.done() and reader.rule[reader.at].isalnum():
        reader.at = unit_at
        unit = ""
    allowed = _UNITS[metric]
    if unit not in allowed:
        if allowed == ("",):
            raise reader.fail(f"{metric.value} takes a plain number, without a unit", unit_at)
        wanted = " or ".join(repr(u) for u in allowed)
        raise reader.fail(f"{metric.value} takes a threshold in {wanted}", unit_at)
    value = Decimal(number)
    if value > _MAX_THRESHOLD[unit]:
        raise reader.fail(f"the threshold is at most {_MAX_THRESHOLD[unit]}{unit}", start)
    if metric is Metric.HEALTH_FAILURES and value != value.to_integral_value():
        raise reader.fail("health_failures counts polls: a whole number", start)
    return value, unit


def _read_window(reader: _Reader, metric: Metric) -> int | None:
    before = reader.at
    reader.skip_space()
    if not reader.peek("over"):
        reader.at = before
        if metric in _UNWINDOWED:
            return None
        return DEFAULT_WINDOW_SECONDS
    if reader.at == before:
        raise reader.fail("expected a space before 'over'")
    over_at = reader.at
    reader.at += len("over")
    if metric in _UNWINDOWED:
        why = "consecutive polls" if metric is Metric.HEALTH_FAILURES else "its query's range"
        raise reader.fail(f"{metric.value} takes no window ({why})", over_at)
    if reader.done() or reader.rule[reader.at] not in _SPACE:
        raise reader.fail("expected a space after 'over'")
    reader.skip_space()
    start = reader.at
    text = reader.match(_DURATION)
    if text is None:
        raise reader.fail("expected a duration: 1m, 5m, 1h")
    try:
        seconds = parse_duration(text)
    except DurationError:
        raise reader.fail(f"invalid duration {text!r}: use e.g. 5m, 1h, 1h30m", start) from None
    if seconds % 60 or not MIN_WINDOW_SECONDS <= seconds <= MAX_WINDOW_SECONDS:
        raise reader.fail("a window is whole minutes, from 1m to 24h", start)
    return seconds


def parse_guards(rules: Iterable[str]) -> tuple[Guard, ...]:
    """Every rule of a plan, ``runbook`` expanded to :data:`RUNBOOK`; a rule given twice is
    kept once. At most :data:`~flagport.rollout.limits.MAX_GUARDS` guards."""
    guards: list[Guard] = []
    for rule in rules:
        texts = RUNBOOK if rule.strip() == "runbook" else (rule,)
        for text in texts:
            guard = parse_guard(text)
            if guard not in guards:
                guards.append(guard)
            if len(guards) > MAX_GUARDS:
                raise GuardSyntaxError(f"a plan has at most {MAX_GUARDS} guards", rule, 0)
    return tuple(guards)


def needs_health_check(guards: Iterable[Guard]) -> bool:
    """Whether a guard reads health polls, so the plan needs a health URL to judge it."""
    return any(guard.metric is Metric.HEALTH_FAILURES for guard in guards)

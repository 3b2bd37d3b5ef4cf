"""The pure core of promql guards: substitution, the reading of a Prometheus answer, the
``--prometheus`` URL (docs/spec.md, "Guarded rollouts", Prometheus)."""

from __future__ import annotations

import pytest

from flagport.rollout.errors import PrometheusError, RolloutError
from flagport.rollout.plan import PlanSpec, check_spec
from flagport.rollout.promql import check_prometheus_url, read_answer, substitute

NOW = 1_800_000_000.0


def test_flag_and_variant_are_substituted_as_whole_words() -> None:
    query = 'sum(x{flag="$flag",variant="$variant"}) / $flags + $variant_b'
    assert substitute(query, flag="checkout.v2", variant="on") == (
        'sum(x{flag="checkout.v2",variant="on"}) / $flags + $variant_b'
    )


@pytest.mark.parametrize("variant", ['on"} or vector(1) #', "a b", "x\\", "", "v" * 101])
def test_a_variant_that_could_escape_its_string_is_refused(variant: str) -> None:
    with pytest.raises(RolloutError, match=r"\$variant cannot be substituted"):
        substitute('x{variant="$variant"}', flag="f", variant=variant)
    assert substitute("sum(up)", flag="f", variant=variant) == "sum(up)"  # unused: fine


def scalar(value: str) -> bytes:
    return b'{"status":"success","data":{"resultType":"scalar","result":[1.5,"%s"]}}' % (
        value.encode()
    )


def vector(*values: str) -> bytes:
    samples = ",".join(f'{{"metric":{{}},"value":[1.5,"{v}"]}}' for v in values)
    return b'{"status":"success","data":{"resultType":"vector","result":[%s]}}' % (samples.encode())


@pytest.mark.parametrize(
    ("body", "value", "note"),
    [
        (scalar("0.25"), 0.25, None),
        (vector("3"), 3.0, None),
        (vector("+Inf"), float("inf"), None),
        (vector(), None, "no data"),
        (vector("1", "2"), None, "2 series: the query must give one (aggregate it, e.g. sum)"),
        (vector("NaN"), None, "NaN (e.g. 0/0: no traffic)"),
        (
            b'{"status":"success","data":{"resultType":"matrix","result":[]}}',
            None,
            "a matrix result: the query must give a scalar or one sample",
        ),
    ],
)
def test_what_an_answer_reads_as(body: bytes, value: float | None, note: str | None) -> None:
    reading = read_answer(200, body)
    assert (reading.value, reading.note) == (value, note)


def test_prometheus_refusals_carry_its_words() -> None:
    body = b'{"status":"error","errorType":"bad_data","error":"parse error: unexpected"}'
    with pytest.raises(PrometheusError, match=r"refused the query \(bad_data\): parse error"):
        read_answer(400, body)
    with pytest.raises(PrometheusError, match="HTTP 502 with a body that is not"):
        read_answer(502, b"<html>bad gateway</html>")
    long = b'{"status":"error","errorType":"x","error":"%s"}' % (b"y" * 5000)
    with pytest.raises(PrometheusError) as raised:
        read_answer(422, long)
    assert len(str(raised.value)) <= 300


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://prom:9090", "http(s)"),
        ("prom:9090", "http(s)"),
        ("http://prom:9090/?x=1", "no query or fragment"),
        ("http://prom:99999", "invalid Prometheus URL"),
        ("http://p/" + "a" * 2048, "at most 2048"),
        ("http://admin:secret@prom:9090", "may not carry credentials"),
    ],
)
def test_bad_prometheus_urls(url: str, message: str) -> None:
    with pytest.raises(RolloutError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_prometheus_url(url)


def test_a_plan_with_a_promql_guard_needs_a_prometheus_url() -> None:
    spec = PlanSpec(key="checkout", steps=(10.0, 100.0), hold=60, guards=("promql(up) < 1",))
    with pytest.raises(RolloutError, match="needs a Prometheus URL"):
        check_spec(spec, NOW)
    spec = PlanSpec(
        key="checkout",
        steps=(10.0, 100.0),
        hold=60,
        guards=("promql(up) < 1",),
        prometheus_url="https://prom.internal:9090/",
    )
    assert check_spec(spec, NOW).prometheus_url == "https://prom.internal:9090"

"""Unit tests of the remote clients' error handling (httpx.MockTransport): timeouts, garbage,
5xx, refused tokens, the circuit breaker, last known values, type checks. Everything else is
tested against a real server (test_live.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

import flagport
from flagport import AsyncClient, Client, ClientStatus, ErrorCode, EvaluationContext, Reason
from flagport._connection import split_url
from flagport.ofrep import request_context

Handler = Callable[[httpx.Request], httpx.Response]
CTX = {"targetingKey": "42", "company_id": 7}


def ok(value: Any = True, variant: str = "on", reason: str = "SPLIT") -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        key = request.url.path.rsplit("/", 1)[-1]
        body = {"key": key, "value": value, "variant": variant, "reason": reason}
        return httpx.Response(200, json=body)

    return handler


class Switch:
    """A transport whose behaviour the test changes; counts the requests."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.calls = 0
        self.bodies: list[Any] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if request.content:
            self.bodies.append(json.loads(request.content))
        return self.handler(request)


def client(switch: Switch, **kwargs: Any) -> Client:
    return Client("http://flagport.test", transport=httpx.MockTransport(switch), **kwargs)


def refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def time_out(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


def test_success_details_and_request_context() -> None:
    switch = Switch(ok())
    with client(switch) as flags:
        details = flags.details("ui-improvements", False, CTX)
        assert details.value is True
        assert details.variant == "on"
        assert details.reason is Reason.SPLIT
        assert details.error_code is None
        assert not details.stale
        assert flags.is_enabled("ui-improvements", CTX) is True
        assert flags.value("ui-improvements", False, CTX) is True
        # An integer targetingKey goes as decimal text; integer attributes stay integers;
        # no targetingKey is "" (no unit), as OFREP requires the field.
        flags.details("a", False, EvaluationContext(42, company_id=7))
        flags.details("a", False, None)
    assert switch.bodies[0] == {"context": CTX}
    assert switch.bodies[3] == {"context": {"targetingKey": "42", "company_id": 7}}
    assert switch.bodies[4] == {"context": {"targetingKey": ""}}


@pytest.mark.parametrize(
    ("value", "default", "expected"),
    [
        (True, "x", "x"),  # a str default and a bool flag
        ("on", False, False),
        (1, True, True),
        (True, 0, 0),  # bool is not an int flag's value
        (3, 1.5, 3.0),  # JSON 1 for a float default
        ({"a": 1}, "x", "x"),
        ("blue", "red", "blue"),
    ],
)
def test_type_checked_against_the_default(value: Any, default: Any, expected: Any) -> None:
    with client(Switch(ok(value))) as flags:
        details = flags.details("f", default, CTX)
    assert details.value == expected
    assert type(details.value) is type(expected)
    if expected is default and value != default:
        assert details.error_code is ErrorCode.TYPE_MISMATCH
        assert details.reason is Reason.ERROR


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (404, {"key": "f", "errorCode": "FLAG_NOT_FOUND", "errorDetails": "no"}, "FLAG_NOT_FOUND"),
        (
            400,
            {"key": "f", "errorCode": "TARGETING_KEY_MISSING", "errorDetails": "x"},
            "TARGETING_KEY_MISSING",
        ),
        (400, {"key": "f", "errorCode": "SOMETHING_NEW", "errorDetails": "x"}, "GENERAL"),
        (500, {"key": "f", "errorCode": "GENERAL", "errorDetails": "x"}, "GENERAL"),
    ],
)
def test_ofrep_errors_give_the_default(status: int, body: Any, code: str) -> None:
    switch = Switch(lambda request: httpx.Response(status, json=body))
    with client(switch) as flags:
        for _ in range(3):
            details = flags.details("f", "dflt", CTX)
            assert details.value == "dflt"
            assert details.error_code == code
        # An OFREP answer is an answer: the circuit stays closed.
        assert switch.calls == 3
        assert flags.status is ClientStatus.READY


@pytest.mark.parametrize(
    "handler",
    [
        refuse,
        time_out,
        lambda request: httpx.Response(200, content=b"<html>proxy</html>"),
        lambda request: httpx.Response(200, json={"key": "f", "value": True}),  # no variant
        lambda request: httpx.Response(502, content=b"bad gateway"),
        lambda request: httpx.Response(503, json={"errorCode": "GENERAL"}),
        lambda request: httpx.Response(500, content=b"Internal Server Error"),
        lambda request: httpx.Response(401, json={"detail": "token"}),
        lambda request: httpx.Response(200, json=[1, 2]),
    ],
    ids=["refused", "timeout", "html", "no-variant", "502", "503", "500-garbage", "401", "list"],
)
def test_failures_never_raise_and_open_the_circuit(handler: Handler) -> None:
    switch = Switch(handler)
    with client(switch, failure_threshold=2, cooldown=60) as flags:
        for _ in range(50):
            details = flags.details("f", "dflt", CTX)
            assert details.value == "dflt"
            assert details.error_code is ErrorCode.GENERAL
            assert details.reason is Reason.ERROR
        assert flags.is_enabled("f", CTX) is False
        assert flags.is_enabled("f", CTX, default=True) is True
        assert flags.all(CTX) == {}
        assert switch.calls == 2  # then the circuit is open: no more requests
        assert flags.status is ClientStatus.ERROR
        assert "circuit open" in (flags.details("f", 0, CTX).error_message or "")


def test_open_circuit_costs_no_time_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        time.sleep(0.05)
        raise httpx.ReadTimeout("timed out", request=request)

    with caplog.at_level(logging.WARNING, "flagport"), client(Switch(slow), cooldown=60) as flags:
        flags.is_enabled("f", CTX)
        flags.is_enabled("f", CTX)
        started = time.perf_counter()
        for _ in range(1_000):
            flags.is_enabled("f", CTX)
        per_call = (time.perf_counter() - started) / 1_000
    assert per_call < 50e-6, per_call
    assert len([r for r in caplog.records if r.name == "flagport"]) == 1


def test_half_open_probe_then_recovery() -> None:
    switch = Switch(refuse)
    statuses: list[ClientStatus] = []
    with client(switch, failure_threshold=1, cooldown=0.05) as flags:
        flags.on_status(statuses.append)
        assert flags.details("f", False, CTX).error_code is ErrorCode.GENERAL
        assert flags.details("f", False, CTX).error_code is ErrorCode.GENERAL
        assert switch.calls == 1
        time.sleep(0.06)
        switch.handler = ok()
        assert flags.is_enabled("f", CTX) is True  # the probe succeeds: closed again
        assert flags.is_enabled("f", CTX) is True
        assert switch.calls == 3
        assert flags.status is ClientStatus.READY
    assert statuses == [ClientStatus.ERROR, ClientStatus.READY]


def test_last_known_value_while_stale() -> None:
    switch = Switch(ok("blue", "b", "TARGETING_MATCH"))
    with client(switch, failure_threshold=1, cooldown=60) as flags:
        assert flags.value("color", "red", CTX) == "blue"
        switch.handler = refuse
        details = flags.details("color", "red", CTX)
        assert details.value == "blue"
        assert details.stale
        assert details.variant == "b"
        assert details.reason is Reason.TARGETING_MATCH
        assert details.error_code is ErrorCode.GENERAL
        assert "cannot reach" in (details.error_message or "")
        # Another context was never seen: its default.
        assert flags.value("color", "red", {"targetingKey": "7"}) == "red"
        # The stale value is type checked against this call's default.
        assert flags.details("color", False, CTX).error_code is ErrorCode.TYPE_MISMATCH


def test_bulk_etag_304_and_stale_bulk() -> None:
    answer = {
        "flags": [
            {"key": "a", "value": True, "variant": "on", "reason": "STATIC"},
            {"key": "b", "errorCode": "TARGETING_KEY_MISSING", "errorDetails": "no unit"},
        ]
    }
    seen: list[str | None] = []

    def bulk(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("if-none-match"))
        if request.headers.get("if-none-match") == '"3-abc"':
            return httpx.Response(304, headers={"ETag": '"3-abc"'})
        return httpx.Response(200, json=answer, headers={"ETag": '"3-abc"'})

    switch = Switch(bulk)
    with client(switch, failure_threshold=1, cooldown=60) as flags:
        first = flags.all(CTX)
        second = flags.all(CTX)
        assert first == second
        assert first["a"].value is True
        assert first["a"].reason is Reason.STATIC
        assert first["b"].error_code is ErrorCode.TARGETING_KEY_MISSING
        switch.handler = refuse
        stale = flags.all(CTX)
    assert seen == [None, '"3-abc"']
    assert stale["a"].stale
    assert stale["a"].value is True


def test_unencodable_context_is_invalid_context() -> None:
    switch = Switch(ok())
    with client(switch) as flags:
        details = flags.details("f", False, {"targetingKey": "1", "x": object()})
    assert details.error_code is ErrorCode.INVALID_CONTEXT
    assert switch.calls == 0


def test_closed_client_returns_defaults() -> None:
    flags = client(Switch(ok()))
    flags.close()
    assert flags.is_enabled("f", CTX, default=True) is True
    with pytest.raises(flagport.ClientError):
        flags.__enter__()


def test_async_client_same_behaviour() -> None:
    async def main() -> None:
        switch = Switch(ok(7, "seven", "STATIC"))
        transport = httpx.MockTransport(switch)
        async with AsyncClient(
            "http://flagport.test", transport=transport, failure_threshold=1, cooldown=60
        ) as flags:
            assert await flags.value("n", 0, CTX) == 7
            assert (await flags.details("n", "x", CTX)).error_code is ErrorCode.TYPE_MISMATCH
            switch.handler = time_out
            stale = await flags.details("n", 0, CTX)
            assert stale.value == 7
            assert stale.stale
            assert await flags.is_enabled("other", CTX) is False
            calls = switch.calls
            for _ in range(20):
                await flags.value("other", 1, CTX)
            assert switch.calls == calls
            assert flags.status is ClientStatus.ERROR

    asyncio.run(main())


def test_urls() -> None:
    assert split_url("unix:///run/flagport.sock") == ("http://flagport", "/run/flagport.sock")
    assert split_url("http://127.0.0.1:8080/") == ("http://127.0.0.1:8080", None)
    assert split_url("https://flags.example/prefix") == ("https://flags.example/prefix", None)
    for bad in ("ftp://x", "127.0.0.1:8080", "unix://"):
        with pytest.raises(flagport.ClientError):
            split_url(bad)


def test_evaluation_context_is_a_mapping() -> None:
    context = EvaluationContext("42", {"company_id": 7}, plan="pro")
    assert dict(context) == {"company_id": 7, "plan": "pro", "targetingKey": "42"}
    assert context.get("company_id") == 7
    assert type(context["company_id"]) is int
    assert context.targeting_key == "42"
    assert context.attributes == {"company_id": 7, "plan": "pro"}
    assert context == {"targetingKey": "42", "company_id": 7, "plan": "pro"}
    assert request_context(EvaluationContext(plan="x")) == {"plan": "x", "targetingKey": ""}

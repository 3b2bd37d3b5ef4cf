"""The published OpenFeature OFREP provider (``openfeature-provider-ofrep`` 0.3.0 with
``openfeature-sdk`` 0.10.0) against a live server: what a real client makes of our answers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagEvaluationDetails, Reason

import flagport
from tests.server._fixtures import live_server
from tests.support.server import PORTAL_FLAGS, RunningServer

server = live_server(
    seed=PORTAL_FLAGS,
    flags={
        "dark-mode": {"enabled": True},
        "greeting": {
            "enabled": True,
            "variants": {"formal": "Good day", "casual": "Hi"},
            "on_variant": "formal",
            "off_variant": "casual",
        },
        "ratio": {"enabled": True, "variants": {"on": 1.0, "off": 0.25}},
        "discount": {"enabled": False, "variants": {"on": 0.5, "off": 0.0}},
        "limits": {
            "enabled": True,
            "variants": {"on": {"rows": 50, "nested": {"x": 1.5}}, "off": {"rows": 10}},
        },
        "half": {"enabled": True, "percentage": 50},
        "vip-only": {"enabled": True, "percentage": 0, "targets": {"on": ["vip"]}},
    },
)


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[OpenFeatureClient]:
    api.set_provider(OFREPProvider(server.url, timeout=5.0), domain="flagport-tests")
    try:
        yield api.get_client(domain="flagport-tests")
    finally:
        api.clear_providers()


def ctx(unit: str = "user-1", **attributes: Any) -> EvaluationContext:
    return EvaluationContext(targeting_key=unit, attributes=attributes)


def _ok(details: FlagEvaluationDetails[Any]) -> None:
    assert details.error_code is None, (details.error_code, details.error_message)


def test_boolean(client: OpenFeatureClient) -> None:
    details = client.get_boolean_details("dark-mode", False, ctx())
    _ok(details)
    assert details.value is True
    assert details.variant == "on"
    assert details.reason == Reason.STATIC


def test_string(client: OpenFeatureClient) -> None:
    details = client.get_string_details("greeting", "default", ctx())
    _ok(details)
    assert (details.value, details.variant) == ("Good day", "formal")


def test_float_one_point_zero(client: OpenFeatureClient) -> None:
    """NOTES.md: a JSON ``1`` would be a TYPE_MISMATCH for a float flag; we send ``1.0``."""
    details = client.get_float_details("ratio", 0.0, ctx())
    _ok(details)
    assert details.value == 1.0
    assert isinstance(details.value, float)


def test_object(client: OpenFeatureClient) -> None:
    details = client.get_object_details("limits", {}, ctx())
    _ok(details)
    assert details.value == {"rows": 50, "nested": {"x": 1.5}}


def test_not_found(client: OpenFeatureClient) -> None:
    details = client.get_boolean_details("no-such-flag", True, ctx())
    assert details.value is True
    assert details.error_code == ErrorCode.FLAG_NOT_FOUND
    assert details.reason == Reason.ERROR


def test_type_mismatch(client: OpenFeatureClient) -> None:
    details = client.get_string_details("dark-mode", "fallback", ctx())
    assert details.value == "fallback"
    assert details.error_code == ErrorCode.TYPE_MISMATCH
    details = client.get_boolean_details("greeting", False, ctx())
    assert details.value is False
    assert details.error_code == ErrorCode.TYPE_MISMATCH


def test_missing_targeting_key(client: OpenFeatureClient) -> None:
    details = client.get_boolean_details(
        "half", False, EvaluationContext(attributes={"plan": "pro"})
    )
    assert details.value is False
    assert details.error_code == ErrorCode.TARGETING_KEY_MISSING
    assert details.error_message


def test_disabled_flag_serves_off_variant(client: OpenFeatureClient) -> None:
    details = client.get_float_details("discount", 9.9, ctx())
    _ok(details)
    assert details.value == 0.0
    assert details.variant == "off"
    assert details.reason == Reason.DISABLED


def test_hierarchy(client: OpenFeatureClient, server: RunningServer) -> None:
    child = "ui-improvements.dropdown-fixes"
    details = client.get_boolean_details(child, True, ctx())
    _ok(details)
    assert details.value is False
    assert details.reason == Reason.DISABLED
    assert details.flag_metadata == {"gatedBy": "ui-improvements"}

    with server.admin(timeout=10.0) as admin:
        answer = admin.post("/admin/v1/flags/ui-improvements/enable", json={"percentage": 100})
        assert answer.status_code == 200, answer.text
    details = client.get_boolean_details(child, False, ctx())
    _ok(details)
    assert details.value is True
    assert details.reason == Reason.STATIC


def test_split_and_targeting(client: OpenFeatureClient) -> None:
    for unit in (f"unit-{i}" for i in range(200)):
        details = client.get_boolean_details("half", False, ctx(unit))
        _ok(details)
        assert details.value is (flagport.bucket("half", unit) < 50_000)
        assert details.reason == Reason.SPLIT
    vip = client.get_boolean_details("vip-only", False, ctx("vip"))
    assert (vip.value, vip.reason) == (True, Reason.TARGETING_MATCH)

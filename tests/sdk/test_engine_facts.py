"""What compiling learns about a flag and exposes to its users: whether it serves everyone
alike (the stale report) and whether it reads the clock (``LocalClient`` reads the time
only for those). The properties over random documents are in test_engine_properties.py."""

from __future__ import annotations

from typing import Any

from flagport import LocalClient
from flagport.engine import CompiledSnapshot, compile_snapshot, document_from_builtins
from tests.support.server import free_port

AFTER_2000 = {"attribute": "$now", "op": "after", "values": ["2000-01-01T00:00:00Z"]}
SIGNED_UP_BEFORE_2000 = {"attribute": "signup", "op": "before", "values": ["2000-01-01"]}


def _rule(*conditions: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"conditions": list(conditions), "variant": "on"}]


CLOCK_DOCUMENT: dict[str, Any] = {
    "flags": {
        "launch": {"enabled": True, "percentage": 0, "rules": _rule(AFTER_2000)},
        "launch.banner": {"enabled": True},
        "gated": {"enabled": True, "prerequisites": [{"key": "launch"}]},
        "by-segment": {
            "enabled": True,
            "percentage": 0,
            "rules": _rule({"op": "in_segment", "values": ["launched"]}),
        },
        "by-segment.child": {"enabled": True, "percentage": 50},
        "signup": {"enabled": True, "percentage": 0, "rules": _rule(SIGNED_UP_BEFORE_2000)},
        "disabled": {"enabled": False, "rules": _rule(AFTER_2000)},
        "disabled.child": {"enabled": True},
        "plain": {"enabled": True, "percentage": 50},
    },
    "segments": {"launched": {"conditions": [AFTER_2000]}},
}


def _compile(document: dict[str, Any]) -> CompiledSnapshot:
    return compile_snapshot(document_from_builtins(document), strict=True)


def test_a_flag_reads_the_clock_through_its_rules_its_segments_and_its_gates() -> None:
    snapshot = _compile(CLOCK_DOCUMENT)
    timed = {"launch", "launch.banner", "gated", "by-segment", "by-segment.child"}
    assert snapshot.clock_keys == timed
    for key in snapshot:
        flag = snapshot.flag(key)
        assert flag is not None
        assert flag.reads_clock is (key in timed), key
    # A date attribute of the context is not the clock; a disabled flag never reaches its
    # rules, and its children are off whatever the time.
    for key in ("signup", "disabled", "disabled.child"):
        assert snapshot.evaluate(key, {}, now=None) == snapshot.evaluate(key, {}, now=1.7e9)


def test_local_client_gives_the_time_to_each_flag_that_reads_the_clock() -> None:
    """Through a parent, a prerequisite and a segment, a flag on ``$now`` is scheduled in
    process as it is on the server."""
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: the bootstrap is all there is
    with LocalClient(
        url, bootstrap=CLOCK_DOCUMENT, start_timeout=0.5, report_exposures=False
    ) as client:
        context = {"targetingKey": "user-1"}
        for key in ("launch", "launch.banner", "gated", "by-segment"):
            assert client.is_enabled(key, context), key
            assert client.details(key, False, context).value is True, key


def test_a_flag_serves_everyone_alike_when_its_own_settings_leave_nothing_to_the_context() -> None:
    snapshot = _compile(
        {
            "flags": {
                "off": {"enabled": False, "percentage": 50, "rules": _rule(AFTER_2000)},
                "everyone": {"enabled": True},
                "nobody": {"enabled": True, "percentage": 0},
                "half": {"enabled": True, "percentage": 50},
                "half.all": {"enabled": True},
                "weighted": {
                    "enabled": True,
                    "variants": {"a": 1, "b": 2, "off": 0},
                    "on_variant": "a",
                    "weights": {"a": 1, "b": 1},
                },
                "targeted": {"enabled": True, "targets": {"off": ["user-1"]}},
                "ruled": {"enabled": True, "rules": _rule(SIGNED_UP_BEFORE_2000)},
            }
        }
    )

    def serves(key: str) -> tuple[Any, str] | None:
        flag = snapshot.flag(key)
        assert flag is not None
        result = flag.serves_everyone
        return None if result is None else (result.variant, result.reason.value)

    assert serves("off") == ("off", "DISABLED")
    assert serves("everyone") == ("on", "STATIC")
    assert serves("nobody") == ("off", "STATIC")
    # Its own settings serve everyone alike; its parent does not (``constant`` says so).
    assert serves("half.all") == ("on", "STATIC")
    half_all = snapshot.flag("half.all")
    assert half_all is not None
    assert half_all.constant is None
    for key in ("half", "weighted", "targeted", "ruled"):
        assert serves(key) is None, key


def test_a_broken_flag_serves_no_one_alike() -> None:
    snapshot = compile_snapshot(
        document_from_builtins({"flags": {"broken": {"enabled": True, "on_variant": "nope"}}})
    )
    broken = snapshot.flag("broken")
    assert broken is not None
    assert broken.serves_everyone is None
    assert broken.constant is not None
    assert broken.constant.error_code == "PARSE_ERROR"

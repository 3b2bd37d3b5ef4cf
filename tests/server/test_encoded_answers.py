"""The encoded OFREP items of one snapshot (served.EncodedAnswers.item): memoised per result
object the engine shares, each result's own answer even when two share a key, variant,
reason and error code; a fresh result (an unknown key) is encoded every time and kept
nowhere."""

from __future__ import annotations

import msgspec

from flagport.engine import ErrorCode, EvaluationResult, Reason
from flagport_server.served import EncodedAnswers
from flagport_server.wire import ofrep_v1 as wire


def _answers() -> EncodedAnswers:
    return EncodedAnswers(7, wire.EventStream(type="sse", url="http://127.0.0.1/v1/stream"))


def _error(message: str, code: ErrorCode = ErrorCode.TARGETING_KEY_MISSING) -> EvaluationResult:
    return EvaluationResult(
        key="checkout",
        value=None,
        variant=None,
        reason=Reason.ERROR,
        error_code=code,
        error_message=message,
    )


def test_the_same_result_object_is_encoded_once() -> None:
    answers = _answers()
    on = EvaluationResult(key="checkout", value=True, variant="on", reason=Reason.SPLIT)
    first = answers.item(on)
    assert answers.item(on) is first
    assert msgspec.json.decode(first) == {
        "key": "checkout",
        "reason": "SPLIT",
        "variant": "on",
        "value": True,
    }
    assert len(answers.items) == 1


def test_two_errors_alike_but_for_their_message_keep_their_own_details() -> None:
    answers = _answers()
    one, other = _error("needs a unit: user_id"), _error("needs a unit: company_id")
    assert msgspec.json.decode(answers.item(one))["errorDetails"] == "needs a unit: user_id"
    assert msgspec.json.decode(answers.item(other))["errorDetails"] == "needs a unit: company_id"
    assert msgspec.json.decode(answers.item(one))["errorDetails"] == "needs a unit: user_id"


def test_an_unknown_key_is_encoded_each_time_and_never_kept() -> None:
    answers = _answers()
    for index in range(100):
        missing = _error(f"flag 'k{index}' not found", ErrorCode.FLAG_NOT_FOUND)
        assert msgspec.json.decode(answers.item(missing))["errorCode"] == "FLAG_NOT_FOUND"
    assert answers.items == {}

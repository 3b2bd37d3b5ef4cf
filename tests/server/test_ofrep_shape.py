"""The OFREP answer shape has one home (flagport.ofrep): what the server writes is what the
remote clients read, field for field."""

from __future__ import annotations

import msgspec

from flagport import ofrep
from flagport.engine import compile_snapshot, document_from_builtins
from flagport_server.wire import ofrep_v1

WRITTEN = (
    ofrep.EvaluationSuccess,
    ofrep.EvaluationFailure,
    ofrep.RequestFailure,
    ofrep.BulkEvaluationItem,
)


def test_a_client_reads_every_field_the_server_writes() -> None:
    read = set(ofrep.Answer.__struct_fields__)
    for kind in WRITTEN:
        assert set(kind.__struct_fields__) <= read, kind.__name__
    assert set(ofrep.BulkAnswer.__struct_fields__) <= set(
        ofrep.BulkEvaluationResponse.__struct_fields__
    )


def test_the_server_wire_module_is_the_shared_one() -> None:
    for name in ofrep_v1.__all__:
        assert getattr(ofrep_v1, name) is getattr(ofrep, name), name


def test_answers_the_server_encodes_decode_to_the_same_values() -> None:
    document = document_from_builtins(
        {
            "flags": {
                "checkout": {
                    "enabled": True,
                    "percentage": 100,
                    "variants": {"on": {"color": "blue"}, "off": {"color": "grey"}},
                    "on_variant": "on",
                    "off_variant": "off",
                }
            }
        }
    )
    snapshot = compile_snapshot(document)
    served = snapshot.evaluate("checkout", {"targetingKey": "user-1"})
    answer = ofrep.decode_answer(ofrep.encode(ofrep.success_from_result(served)))
    assert (answer.key, answer.variant, answer.value, answer.reason) == (
        "checkout",
        served.variant,
        {"color": "blue"},
        served.reason.value,
    )
    missing = snapshot.evaluate("no-such-flag", {"targetingKey": "user-1"})
    failure = ofrep.decode_answer(ofrep.encode(ofrep.failure_from_result(missing)))
    assert failure.errorCode == "FLAG_NOT_FOUND"
    assert failure.errorDetails
    bulk = ofrep.BulkEvaluationResponse(
        flags=[ofrep.BulkEvaluationItem(key="checkout", variant="on", value=1, reason="STATIC")]
    )
    (item,) = ofrep.decode_bulk(msgspec.json.encode(bulk)).flags
    assert (item.key, item.variant, item.value) == ("checkout", "on", 1)

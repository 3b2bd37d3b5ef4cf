"""An SDK reads the snapshot of a newer server; an import stays strict.

A newer server adds fields to the snapshot it serves (``GET /v1/snapshot``) and exports (an
SDK's bootstrap file); every deployed SDK must keep serving what it understands, the new
fields ignored. The same document given to an import is refused: there an unknown field is
a typo its author must hear about.

The newer server is stood in for by an ``httpx.MockTransport`` serving its document: no
release of it exists to run.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

import flagport
from flagport import ClientStatus, InvalidDocumentError
from flagport.document import load_document
from flagport.engine import Flag, Segment, SnapshotDocument, TolerantDecoder

#: What this release writes (and so what the newer release's document reads as here).
KNOWN: dict[str, Any] = {
    "bucketing": 1,
    "version": 7,
    "flags": {
        "checkout": {
            "enabled": True,
            "variants": {"on": "blue", "off": "grey"},
            "rules": [
                {
                    "conditions": [{"op": "eq", "attribute": "plan", "values": ["pro"]}],
                    "variant": "on",
                },
                {"conditions": [{"op": "in_segment", "values": ["beta"]}], "variant": "on"},
            ],
            "percentage": 0,
        },
        "checkout.express": {"enabled": True, "prerequisites": [{"key": "checkout"}]},
    },
    "segments": {"beta": {"included": ["u-beta"]}},
}


def newer(known: dict[str, Any]) -> dict[str, Any]:
    """``known`` as a newer release would write it: new fields at every level."""
    document = copy.deepcopy(known)
    document["schedules"] = {"nightly": {"cron": "0 3 * * *"}}
    checkout = document["flags"]["checkout"]
    checkout["rollout"] = {"steps": [1, 10, 100], "guard": {"metric": "errors"}}
    checkout["rules"][0]["note"] = "pro plans first"
    checkout["rules"][0]["conditions"][0]["case_sensitive"] = False
    document["flags"]["checkout.express"]["prerequisites"][0]["since"] = "2027-01-01"
    document["segments"]["beta"]["owner_team"] = "growth"
    return document


def serving(document: dict[str, Any]) -> httpx.MockTransport:
    body = json.dumps(document).encode()

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/snapshot":
            return httpx.Response(200, content=body, headers={"ETag": '"7"'})
        return httpx.Response(404)

    return httpx.MockTransport(handle)


def local_client(document: dict[str, Any]) -> flagport.LocalClient:
    return flagport.LocalClient(
        "http://flagport.test",
        transport=serving(document),
        stream=False,
        report_exposures=False,
        start_timeout=5.0,
    )


def test_local_client_serves_a_newer_servers_snapshot_ignoring_its_new_fields() -> None:
    with local_client(newer(KNOWN)) as flags:
        assert flags.status is ClientStatus.READY, flags.last_error
        assert flags.value("checkout", "none", {"targetingKey": "u1", "plan": "pro"}) == "blue"
        assert flags.value("checkout", "none", {"targetingKey": "u-beta"}) == "blue"
        assert flags.value("checkout", "none", {"targetingKey": "u1"}) == "grey"
        assert flags.is_enabled("checkout.express", {"targetingKey": "u1", "plan": "pro"})
        assert not flags.is_enabled("checkout.express", {"targetingKey": "u1"})


def unreachable(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


@pytest.mark.parametrize("form", ["file", "mapping"])
def test_a_bootstrap_a_newer_server_exported_is_served_ignoring_its_new_fields(
    form: str, tmp_path: Path
) -> None:
    bootstrap: Any = newer(KNOWN)
    if form == "file":
        bootstrap = tmp_path / "flags.json"
        bootstrap.write_text(json.dumps(newer(KNOWN)))
    with flagport.LocalClient(
        "http://flagport.test",
        transport=httpx.MockTransport(unreachable),
        bootstrap=bootstrap,
        stream=False,
        report_exposures=False,
        start_timeout=5.0,
    ) as flags:
        assert flags.status is ClientStatus.STALE, flags.last_error
        assert flags.value("checkout", "none", {"targetingKey": "u1", "plan": "pro"}) == "blue"


def test_a_newer_document_reads_as_the_document_this_release_knows() -> None:
    decoder = TolerantDecoder(SnapshotDocument)
    read = decoder.decode(json.dumps(newer(KNOWN)))
    assert read == msgspec.json.decode(json.dumps(KNOWN), type=SnapshotDocument)
    assert type(read.flags["checkout"]) is Flag
    assert type(read.segments["beta"]) is Segment


def test_the_snapshot_feed_still_refuses_a_field_of_the_wrong_type() -> None:
    broken = newer(KNOWN)
    broken["flags"]["checkout"]["rules"] = "all of them"
    with local_client(broken) as flags:
        assert flags.status is ClientStatus.ERROR
        assert "rules" in (flags.last_error or "")


def test_an_import_with_a_field_this_release_does_not_know_is_refused() -> None:
    document = newer(KNOWN)
    with pytest.raises(InvalidDocumentError) as refused:
        load_document(json.dumps(document), "json")
    assert "schedules" in str(refused.value)
    del document["schedules"]
    with pytest.raises(InvalidDocumentError) as refused:
        load_document(json.dumps(document), "json")
    assert "unknown field `case_sensitive`" in str(refused.value)
    assert refused.value.path == '$.flags["checkout"].rules[0].conditions[0]'

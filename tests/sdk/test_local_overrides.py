"""A developer's local overrides (``FLAGPORT_OVERRIDES``) in every Python client against a real
server: the overridden keys answer from the shared file (tests/spec/overrides/, which the PHP
bridge reads too) and every other key from the server; ``FLAGPORT_ENV=production`` ignores
them and says so once; a bad file stops the client's start naming the file and line."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import flagport.overrides
from flagport import AsyncClient, Client, FlagDetails, InvalidDocumentError, LocalClient
from tests.support.server import PORTAL_FLAGS, RunningServer, running_server
from tests.support.tools import REPO_ROOT

pytestmark = pytest.mark.timeout(120)

SPEC = REPO_ROOT / "tests" / "spec" / "overrides"
EXPECTED: dict[str, dict[str, Any]] = json.loads((SPEC / "expected.json").read_text())
#: In the portal's flags and not overridden: answered by the server.
SERVED = "performance-monitoring"
CONTEXT = {"targetingKey": "42"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("overrides"), seed=PORTAL_FLAGS) as s:
        with s.admin() as admin:
            response = admin.post(f"/admin/v1/flags/{SERVED}/enable", json={"percentage": 100})
            assert response.status_code == 200, response.text
        yield s


@pytest.fixture
def overrides_file(monkeypatch: pytest.MonkeyPatch) -> Path:
    path = SPEC / "overrides.json"
    monkeypatch.setenv("FLAGPORT_OVERRIDES", str(path))
    monkeypatch.delenv("FLAGPORT_ENV", raising=False)
    return path


def served(details: FlagDetails) -> dict[str, Any]:
    return {
        "value": details.value,
        "variant": details.variant,
        "reason": details.reason.value,
        "metadata": details.metadata,
    }


def check_answers(details: dict[str, FlagDetails], everything: dict[str, FlagDetails]) -> None:
    for key, answer in EXPECTED.items():
        assert served(details[key]) == answer, key
        assert served(everything[key]) == answer, key
    assert details[SERVED].value is True
    assert details[SERVED].variant == "on"
    # The server's own answer for an overridden key is not what the client gives.
    assert everything["ui-improvements"].value is True
    assert everything[SERVED].value is True


def test_the_remote_client_answers_overridden_keys_without_asking(
    server: RunningServer, overrides_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    asked: list[str] = []

    def count(request: httpx.Request) -> None:
        asked.append(request.url.path)

    flagport.overrides._warned.clear()
    with caplog.at_level(logging.WARNING, logger="flagport"):
        client = Client(server.url)
    client._http.event_hooks["request"].append(count)
    with client:
        details = {key: client.details(key, None, CONTEXT) for key in [*EXPECTED, SERVED]}
        assert asked == [f"/ofrep/v1/evaluate/flags/{SERVED}"]
        check_answers(details, client.all(CONTEXT))
        assert client.is_enabled("checkout")
        assert not client.is_enabled("auth-improvements.sso")
    assert f"local overrides from FLAGPORT_OVERRIDES file {str(overrides_file)!r}" in caplog.text
    assert "active for 8 flag(s)" in caplog.text


def test_the_async_client_answers_overridden_keys(
    server: RunningServer, overrides_file: Path
) -> None:
    async def run() -> None:
        async with AsyncClient(server.url) as client:
            details = {key: await client.details(key, None, CONTEXT) for key in [*EXPECTED, SERVED]}
            check_answers(details, await client.all(CONTEXT))

    asyncio.run(run())


def test_the_local_client_answers_overridden_keys(
    server: RunningServer, overrides_file: Path
) -> None:
    with LocalClient(server.url, report_exposures=False) as client:
        assert client.wait_ready()
        details = {key: client.details(key, None, CONTEXT) for key in [*EXPECTED, SERVED]}
        check_answers(details, client.all(CONTEXT))
        # The hot path honours them too (the overridden keys leave it).
        assert client.is_enabled("ui-improvements", CONTEXT)
        assert not client.is_enabled("ui-improvements.mobile-navigation-fix", CONTEXT, True)


def test_production_ignores_the_overrides_and_says_so_once(
    server: RunningServer,
    overrides_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("FLAGPORT_ENV", "production")
    flagport.overrides._warned.clear()
    with caplog.at_level(logging.WARNING, logger="flagport"):
        for _ in range(2):
            with Client(server.url) as client:
                # The server's answer: the portal's ui-improvements is off.
                assert client.details("ui-improvements", None).value is False
                assert client.details("checkout", "control").is_error
    errors = [r for r in caplog.records if "FLAGPORT_ENV=production" in r.getMessage()]
    assert [r.levelno for r in errors] == [logging.ERROR]


def test_local_overrides_can_be_turned_off_by_the_constructor(
    server: RunningServer, overrides_file: Path
) -> None:
    with Client(server.url, local_overrides=False) as client:
        assert client.details("checkout", "control").is_error


def test_a_bad_file_stops_the_start_naming_file_and_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad = SPEC / "bad" / "null-value.json"
    monkeypatch.setenv("FLAGPORT_OVERRIDES", str(bad))
    monkeypatch.delenv("FLAGPORT_ENV", raising=False)
    for make in (
        lambda: Client("http://127.0.0.1:9"),
        lambda: LocalClient("http://127.0.0.1:9", start_timeout=0),
    ):
        with pytest.raises(InvalidDocumentError, match=r"null-value\.json', line 3: null"):
            make()
    monkeypatch.setenv("FLAGPORT_OVERRIDES", '{"checkout": }')
    with pytest.raises(InvalidDocumentError, match=r"inline JSON\): invalid JSON at line 1"):
        AsyncClient("http://127.0.0.1:9")

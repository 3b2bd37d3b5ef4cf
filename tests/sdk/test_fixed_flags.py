"""Fixed flag values without a server: ``LocalClient.from_flags``/``from_file``, ``set`` and
``update``, the ``flagport_flags`` pytest fixture (this suite has it through the ``pytest11``
entry point, as any project that installs flagport), the OpenFeature provider over such a
client, and the overrides format shared with the PHP bridge (tests/spec/overrides/)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import flagport
from flagport import ClientError, ClientStatus, InvalidDocumentError, LocalClient, Reason
from flagport.overrides import Overrides, read_overrides
from tests.support.tools import REPO_ROOT

SPEC = REPO_ROOT / "tests" / "spec" / "overrides"
PORTAL = REPO_ROOT / "examples" / "portal-flags.yaml"


def shared_values() -> dict[str, Any]:
    values: dict[str, Any] = json.loads((SPEC / "overrides.json").read_text())
    return values


def expected() -> dict[str, dict[str, Any]]:
    answers: dict[str, dict[str, Any]] = json.loads((SPEC / "expected.json").read_text())
    return answers


def test_the_shared_overrides_file_answers_as_the_spec_says() -> None:
    values, source = read_overrides(str(SPEC / "overrides.json"))
    assert values == shared_values()
    overrides = Overrides(values, source)
    client = LocalClient.from_flags(values)
    for key, answer in expected().items():
        for result in (overrides.result(key, {}), client.evaluate(key)):
            got = {
                "value": result.value,
                "variant": result.variant,
                "reason": result.reason.value,
                "metadata": result.metadata,
            }
            assert got == answer, key


@pytest.mark.parametrize(
    "case",
    json.loads((SPEC / "bad-cases.json").read_text())["cases"],
    ids=lambda case: case["file"],
)
def test_a_bad_overrides_file_is_refused_naming_file_and_position(case: dict[str, Any]) -> None:
    path = SPEC / "bad" / case["file"]
    with pytest.raises(InvalidDocumentError) as raised:
        read_overrides(str(path))
    message = str(raised.value)
    assert str(path) in message
    assert re.search(rf"\bline {case['line']}\b", message), message
    if case["column"] is not None:
        assert re.search(rf"\bcolumn {case['column']}\b", message), message
    for word in case["words"]:
        assert word.lower() in message.lower(), message


def test_from_flags_serves_values_through_the_engine_and_set_changes_them() -> None:
    changes: list[int] = []
    with LocalClient.from_flags({"ui-improvements": True, "checkout": "variant-b"}) as flags:
        flags.on_change(changes.append)
        assert flags.status is ClientStatus.READY
        assert flags.is_enabled("ui-improvements", {"targetingKey": "42"})
        assert flags.value("checkout", "control") == "variant-b"
        assert flags.is_enabled("checkout")  # a value that is not false is on
        assert flags.value("checkout", 3) == 3  # the wrong type: the caller's default
        assert flags.details("unknown", "d").error_code is flagport.ErrorCode.FLAG_NOT_FOUND
        # A child of a flag set off is off, gated by it: the engine's hierarchy.
        flags.update({"ui-improvements.dropdown-fixes": True, "ui-improvements": False})
        child = flags.details("ui-improvements.dropdown-fixes", False)
        assert (child.value, child.reason, child.metadata) == (
            False,
            Reason.DISABLED,
            {"gatedBy": "ui-improvements"},
        )
        flags.set("ui-improvements", True)
        assert flags.is_enabled("ui-improvements.dropdown-fixes")
        assert changes == [1, 2]
        assert {key: d.value for key, d in flags.all().items()} == {
            "ui-improvements": True,
            "ui-improvements.dropdown-fixes": True,
            "checkout": "variant-b",
        }
        assert flags.report_exposures() == 0  # no server: nothing is sent
        with pytest.raises(InvalidDocumentError, match="null is not a flag value"):
            flags.set("checkout", None)
        with pytest.raises(InvalidDocumentError, match="invalid key"):
            flags.set("Checkout", True)


def test_from_file_serves_an_exported_document_with_flags_fixed_on_top() -> None:
    with LocalClient.from_file(PORTAL) as flags:
        assert flags.status is ClientStatus.READY
        assert not flags.is_enabled("ui-improvements.mobile-navigation-fix", {"targetingKey": "7"})
        flags.set("ui-improvements", True)
        flags.set("ui-improvements.mobile-navigation-fix", True)
        assert flags.is_enabled("ui-improvements.mobile-navigation-fix", {"targetingKey": "7"})
        # The other flags keep their definitions from the file.
        assert "auth-improvements" in flags.all()


def test_from_file_names_a_missing_or_bad_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidDocumentError, match=r"nothing-here\.yaml"):
        LocalClient.from_file(tmp_path / "nothing-here.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("flags:\n  x: [\n")
    with pytest.raises(InvalidDocumentError, match="line"):
        LocalClient.from_file(bad)


def test_set_and_evaluated_are_refused_on_a_client_with_a_server() -> None:
    client = LocalClient("http://127.0.0.1:9", start_timeout=0, report_exposures=False)
    try:
        with pytest.raises(ClientError, match="without a server"):
            client.set("ui-improvements", True)
        with pytest.raises(ClientError, match="without a server"):
            client.evaluated()
    finally:
        client.close()


def test_evaluated_counts_every_read_of_each_flag_as_the_php_fake_does() -> None:
    with LocalClient.from_flags({"ui-improvements": True, "checkout": "variant-b"}) as flags:
        assert flags.evaluated() == {}
        for unit in ("1", "2", "3"):
            flags.is_enabled("ui-improvements", {"targetingKey": unit})
        flags.value("checkout", "control")
        flags.details("checkout", "control")
        flags.is_enabled("not-a-flag")  # a key the code reads but nobody defined
        flags.evaluate("not-a-flag")
        assert flags.evaluated() == {"ui-improvements": 3, "checkout": 2, "not-a-flag": 2}
        # A set() serves a new snapshot: the reads before it still count.
        flags.set("ui-improvements", False)
        flags.is_enabled("ui-improvements")
        flags.all()  # once per flag
        flags.report_exposures()  # nothing is sent, nothing is taken
        assert flags.evaluated() == {"ui-improvements": 5, "checkout": 3, "not-a-flag": 2}


def test_evaluated_counts_a_bounded_number_of_unknown_keys() -> None:
    """Past :attr:`LocalClient.MAX_UNKNOWN_KEYS` distinct unknown keys (a long-lived client
    asked for keys from its input), new ones are not counted; those counted and the defined
    flags still are."""
    with LocalClient.from_flags({"checkout": True}) as flags:
        flags.is_enabled("not-a-flag")
        for n in range(LocalClient.MAX_UNKNOWN_KEYS + 5):
            flags.is_enabled(f"unknown-{n}")
        flags.is_enabled("not-a-flag")
        flags.is_enabled("checkout")
        counted = flags.evaluated()
        assert len(counted) == LocalClient.MAX_UNKNOWN_KEYS + 1  # the cap, and the flag
        assert (counted["not-a-flag"], counted["checkout"]) == (2, 1)
        assert f"unknown-{LocalClient.MAX_UNKNOWN_KEYS - 2}" in counted
        assert f"unknown-{LocalClient.MAX_UNKNOWN_KEYS - 1}" not in counted


def test_a_client_without_a_server_ignores_the_developers_overrides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLAGPORT_OVERRIDES", '{"ui-improvements": false}')
    with LocalClient.from_flags({"ui-improvements": True}) as flags:
        assert flags.is_enabled("ui-improvements")


def test_the_fixture_starts_empty(flagport_flags: LocalClient) -> None:
    assert flagport_flags.all() == {}
    flagport_flags.set("ui-improvements", True)
    assert flagport_flags.is_enabled("ui-improvements")


def test_the_fixture_does_not_carry_a_set_over_to_the_next_test(
    flagport_flags: LocalClient,
) -> None:
    assert flagport_flags.evaluated() == {}  # nor the reads of the test before
    assert not flagport_flags.is_enabled("ui-improvements")
    assert flagport_flags.evaluated() == {"ui-improvements": 1}


@pytest.mark.flagport({"checkout": "variant-b", "ui-improvements": True})
def test_the_fixture_takes_the_marker(flagport_flags: LocalClient) -> None:
    assert flagport_flags.value("checkout", "control") == "variant-b"
    assert flagport_flags.is_enabled("ui-improvements")


def test_the_fixture_starts_from_the_ini_file(tmp_path: Path) -> None:
    """In a project of its own (a pytest subprocess): the entry point, the ini option."""
    (tmp_path / "pytest.ini").write_text(f"[pytest]\nflagport_file = {PORTAL}\n")
    (tmp_path / "test_portal.py").write_text(
        textwrap.dedent(
            """
            import pytest

            @pytest.mark.flagport({"ui-improvements": True})
            def test_portal(flagport_flags):
                assert "auth-improvements" in flagport_flags.all()
                assert flagport_flags.is_enabled("ui-improvements")
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_the_openfeature_provider_over_a_client_without_a_server() -> None:
    from openfeature import api

    from flagport.openfeature import FlagportProvider

    flags = LocalClient.from_flags({"checkout": "variant-b", "ui-improvements": True})
    api.set_provider(FlagportProvider(flags, owns_client=True), domain="fixed-flags")
    try:
        client = api.get_client("fixed-flags")
        assert client.get_boolean_value("ui-improvements", False)
        assert client.get_string_value("checkout", "control") == "variant-b"
        flags.set("checkout", "variant-c")
        assert client.get_string_value("checkout", "control") == "variant-c"
    finally:
        api.clear_providers()

"""Profiles and ``flags promote`` against two real servers (staging and production), and the
import's version guard that makes a promotion fail rather than overwrite a change made on the
target meanwhile."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli.conftest import Result, run_flags
from tests.support.server import ADMIN_TOKEN, PORTAL_FLAGS, RunningServer, running_server


def _staging_document() -> dict[str, Any]:
    document = yaml.safe_load(PORTAL_FLAGS.read_text())
    flags = document["flags"]
    flags["ui-improvements"].update(
        enabled=True,
        percentage=100,
        description="UI improvements, with the beta companies first",
        rules=[
            {"conditions": [{"op": "in_segment", "values": ["beta-companies"]}], "variant": "on"}
        ],
    )
    flags["checkout-v2"] = {"enabled": True, "percentage": 100, "tags": ["release-2026-12"]}
    document["segments"] = {"beta-companies": {"included": ["company-7", "company-9"]}}
    return document


@pytest.fixture(scope="module")
def environments(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("environments")
    staging_seed = root / "staging.yaml"
    staging_seed.write_text(yaml.safe_dump(_staging_document()))
    with (
        running_server(root / "staging", seed=staging_seed) as staging,
        running_server(root / "production", seed=PORTAL_FLAGS) as production,
    ):
        profiles = root / "profiles.toml"
        profiles.write_text(
            f'[profiles.staging]\nurl = "{staging.url}"\ntoken = "{ADMIN_TOKEN}"\n\n'
            f'[profiles.production]\nurl = "{production.url}"\ntoken = "{ADMIN_TOKEN}"\n'
        )
        profiles.chmod(0o600)
        yield {"staging": staging, "production": production, "profiles": profiles, "root": root}


def _flags(environments: dict[str, Any], *args: str) -> Result:
    # No URL or token from the environment: the profiles give them.
    return run_flags(
        *args,
        url=None,
        token=None,
        env={"FLAGPORT_PROFILES": str(environments["profiles"])},
        cwd=environments["root"],
    )


def _flag(server: RunningServer, key: str) -> dict[str, Any]:
    with server.admin() as admin:
        answer = admin.get(f"/admin/v1/flags/{key}")
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def test_a_profile_names_the_server_and_its_token(environments: dict[str, Any]) -> None:
    listed = _flags(environments, "--profile", "staging", "--json", "list")
    assert listed.code == 0, listed
    assert "checkout-v2" in listed.out
    production = _flags(environments, "--profile", "production", "--json", "list")
    assert "checkout-v2" not in production.out


def test_a_profiles_file_others_can_read_or_with_a_bad_field_is_refused(
    environments: dict[str, Any], tmp_path: Path
) -> None:
    shared = tmp_path / "profiles.toml"
    shared.write_text(environments["profiles"].read_text())
    shared.chmod(0o644)
    refused = run_flags(
        "--profile", "staging", "list", url=None, token=None, env={"FLAGPORT_PROFILES": str(shared)}
    )
    assert refused.code == 2
    assert "chmod 600" in refused.err
    shared.chmod(0o600)
    shared.write_text('[profiles.staging]\nurl = "http://x"\ntokn = "t"\n')
    refused = run_flags(
        "--profile", "staging", "list", url=None, token=None, env={"FLAGPORT_PROFILES": str(shared)}
    )
    assert refused.code == 2
    assert "unknown field(s) tokn" in refused.err
    missing = run_flags(
        "--profile", "qa", "list", url=None, token=None, env={"FLAGPORT_PROFILES": str(shared)}
    )
    assert missing.code == 2
    assert "no profile 'qa'" in missing.err


def test_promote_shows_the_diff_then_copies_definitions_but_not_state(
    environments: dict[str, Any],
) -> None:
    production: RunningServer = environments["production"]
    before = _flag(production, "ui-improvements")
    dry = _flags(
        environments, "promote", "ui-improvements", "--tag", "release-2026-12",
        "--from", "staging", "--to", "production", "--dry-run",
    )  # fmt: skip
    assert dry.code == 0, dry
    assert "+ flag checkout-v2" in dry.out
    assert "~ flag ui-improvements" in dry.out
    assert "+ segment beta-companies" in dry.out
    assert "dry run: nothing applied" in dry.out
    assert _flag(production, "ui-improvements") == before

    applied = _flags(
        environments, "promote", "ui-improvements", "--tag", "release-2026-12",
        "--from", "staging", "--to", "production", "--reason", "release 2026-12",
    )  # fmt: skip
    assert applied.code == 0, applied
    assert "applied to production" in applied.out
    promoted = _flag(production, "ui-improvements")
    assert promoted["rules"][0]["conditions"][0]["values"] == ["beta-companies"]
    assert (promoted["enabled"], promoted["percentage"]) == (
        before["enabled"],
        before["percentage"],
    )
    new = _flag(production, "checkout-v2")
    assert (new["enabled"], new["percentage"]) == (False, 0)  # new flags land disabled
    # Promoting again changes nothing.
    again = _flags(
        environments, "promote", "ui-improvements", "--from", "staging", "--to", "production"
    )
    assert "no changes" in again.out

    with_state = _flags(
        environments, "--json", "promote", "checkout-v2", "--from", "staging", "--to",
        "production", "--with-state",
    )  # fmt: skip
    assert with_state.code == 0, with_state
    assert json.loads(with_state.out)["applied"] is not None
    assert _flag(production, "checkout-v2")["enabled"] is True


def test_a_promotion_of_what_the_source_lacks_is_refused(environments: dict[str, Any]) -> None:
    missing = _flags(environments, "promote", "nope", "--from", "staging", "--to", "production")
    assert missing.code == 1
    assert "flag 'nope' does not exist in staging" in missing.err


def test_the_import_guard_names_the_flag_that_moved_and_applies_nothing(
    environments: dict[str, Any],
) -> None:
    production: RunningServer = environments["production"]
    seen = _flag(production, "auth-improvements")["version"]
    with production.admin() as admin:
        # Someone changes the flag on production after the promotion's read.
        assert admin.post("/admin/v1/flags/auth-improvements/enable", json={}).status_code == 200
        body = {
            "bucketing": 1,
            "flags": {"auth-improvements": {"description": "promoted", "version": seen}},
        }
        answer = admin.post(
            "/admin/v1/snapshot",
            params={"prune": "false", "expect_versions": "true"},
            json=body,
        )
        assert answer.status_code == 412, answer.text
        assert "auth-improvements" in answer.json()["detail"]
        assert _flag(production, "auth-improvements")["description"] != "promoted"
        refused = admin.post("/admin/v1/snapshot", params={"expect_versions": "true"}, json=body)
        assert refused.status_code == 400
        assert "prune=false" in refused.json()["detail"]

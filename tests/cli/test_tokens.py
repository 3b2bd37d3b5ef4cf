"""``flags token create --expires``, ``token list``, ``token rotate`` and the expiry warning,
with the real executable against a live server (issue 19, item 3)."""

from __future__ import annotations

import json

from tests.cli.conftest import Flags


def test_create_with_expiry_list_warn_and_rotate(flags: Flags) -> None:
    made = flags.ok("token", "create", "alice", "--scope", "admin", "--expires", "3d")
    secret = made.out.strip()
    assert "expires 20" in made.err
    assert secret.startswith("fpa_")
    token_id = made.err.split("(id ")[1].split(",")[0]
    listed = flags.ok("token", "list")
    row = next(line for line in listed.out.splitlines() if "alice" in line)
    assert "expiring" in row
    assert "EXPIRES" in listed.out
    assert f"flags token rotate {token_id}" in listed.err
    # Used by its owner, the token near its expiry warns on stderr (not on stdout: --json
    # output stays clean).
    used = flags.ok("list", "--json", token=secret)
    assert "warning: this token expires at" in used.err
    json.loads(used.out)
    rotated = flags.ok("token", "rotate", token_id, "--expires", "90d", "--reason", "renew")
    new = rotated.out.strip()
    assert new.startswith("fpa_")
    assert new != secret
    assert "old secret refused by all" in rotated.err
    refused = flags("list", token=secret)
    assert refused.code == 4, str(refused)
    assert "stopped working at" in refused.err
    assert "alice" in refused.err
    assert secret not in refused.err
    fresh = flags.ok("list", token=new)
    assert "warning" not in fresh.err


def test_a_bad_lifetime_exits_2_before_any_request(flags: Flags) -> None:
    # Checked locally, before any request: nothing is made.
    for value, problem in (("105w", "too long"), ("10m", "too short"), ("forever", "invalid")):
        result = flags("token", "create", "bob", "--scope", "admin", "--expires", value)
        assert result.code == 2, str(result)
        assert problem in result.err
        assert "--expires" in result.err
    assert "bob" not in flags.ok("token", "list").out

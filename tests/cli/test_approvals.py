"""``flags approvals``, ``flags request``, ``flags requests``, ``flags approve`` and
``flags reject`` with the real executable against a live server (issue 19, item 3): a
guarded flag's widening change exits 6 with a message saying to file a request; a kill
never waits."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import Flags


def _token(flags: Flags, name: str) -> str:
    made = flags.ok("token", "create", name, "--scope", "admin", "--expires", "30d")
    return made.out.strip()


def test_request_approve_reject_and_break_glass(flags: Flags, tmp_path: Path) -> None:
    alice, bob = _token(flags, "cli-alice"), _token(flags, "cli-bob")
    flags.ok("create", "cli-checkout")
    flags.ok("approvals", "require", "cli-checkout", "--reason", "money")
    assert "flag:cli-checkout" in flags.ok("approvals", "list").out

    refused = flags("enable", "cli-checkout", "--percentage", "50", token=alice)
    assert refused.code == 6, str(refused)
    assert "approval required" in refused.err
    assert "flags request" in refused.err

    filed = flags.ok(
        "request", "enable", "cli-checkout", "--percentage", "50", "--reason", "launch", token=alice
    )
    request_id = filed.out.split("request ")[1].split(" ")[0]
    listed = flags.ok("requests", token=bob)
    assert request_id in listed.out
    assert "enable 50 %" in listed.out
    own = flags("approve", request_id, token=alice)
    assert own.code == 4, str(own)
    assert "second person" in own.err
    approved = flags.ok("approve", request_id, "--reason", "ok", token=bob)
    assert "applied" in approved.out
    shown = json.loads(flags.ok("show", "cli-checkout", "--json").out)
    assert shown.get("flag", shown)["enabled"] is True

    # A request pending does not hold the kill switch; the stale request then fails.
    pending = flags.ok(
        "request", "enable", "cli-checkout", "--percentage", "100", "--reason", "all", token=alice
    )
    pending_id = pending.out.split("request ")[1].split(" ")[0]
    flags.ok("disable", "cli-checkout", "--reason", "incident", token=alice)
    stale = flags("approve", pending_id, token=bob)
    assert stale.code == 1, str(stale)
    assert "file the request again" in stale.err
    history = json.loads(flags.ok("audit", "cli-checkout", "--json").out)
    disable = next(e for e in history["entries"] if e["action"] == "disable")
    assert disable["break_glass"] is True
    table = flags.ok("audit", "cli-checkout").out
    assert "off, break-glass" in table
    assert f"request {request_id}" in table

    # A rejected request; a request body file is read locally first.
    third = flags.ok("request", "delete", "cli-checkout", "--reason", "cleanup", token=alice)
    third_id = third.out.split("request ")[1].split(" ")[0]
    flags.ok("reject", third_id, "--reason", "still needed", token=bob)
    assert "rejected" in flags.ok("requests", "--all").out
    bad = tmp_path / "flag.json"
    bad.write_text('{"enabled": true,\n  oops}')
    unreadable = flags("request", "put", "cli-checkout", "--file", str(bad), "--reason", "x")
    assert unreadable.code == 2, str(unreadable)
    assert "line 2" in unreadable.err
    flags.ok("approvals", "remove", "cli-checkout")
    flags.ok("enable", "cli-checkout", token=alice)

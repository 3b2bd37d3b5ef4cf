"""``flags backup`` / ``flags restore`` end to end: a running server's SQLite store backed up,
restored into an empty Redis store that another server is already serving (it adopts the
restore), backed up from Redis and restored into a new SQLite file; the refusals."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from flagport_server.stores import open_store
from flagport_server.stores.base import AuditQuery
from tests.cli.conftest import run_flags
from tests.support.redis import shared_redis, unique_prefix
from tests.support.server import PORTAL_FLAGS, RunningServer, running_server, wait_until


def _secret_of(url: str) -> bytes:
    async def read() -> bytes:
        store = open_store(url)
        await store.open()
        try:
            return await store.server_secret()
        finally:
            await store.close()

    return asyncio.run(read())


def _audit_actions(url: str) -> list[str]:
    async def read() -> list[str]:
        store = open_store(url)
        await store.open()
        try:
            return [e.action for e in await store.audit(AuditQuery(limit=1000))]
        finally:
            await store.close()

    return asyncio.run(read())


def _percentage(server: RunningServer, key: str) -> float | None:
    with server.admin() as admin:
        answer = admin.get(f"/admin/v1/flags/{key}")
    return answer.json()["percentage"] if answer.status_code == 200 else None


def test_a_store_backed_up_and_restored_from_sqlite_to_redis_and_back(tmp_path: Path) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'a' / 'flagport.db'}"
    redis_url = f"{shared_redis().url}?prefix={unique_prefix()}"
    with running_server(tmp_path / "a", seed=PORTAL_FLAGS, store=sqlite_url) as first:
        run = lambda *args: run_flags(*args, url=first.url)  # noqa: E731
        assert run("enable", "ui-improvements", "--percentage", "10").code == 0
        created = run("token", "create", "php-bridge", "--scope", "sdk")
        assert created.code == 0, created
        sdk_secret = created.out.strip()
        backup_file = tmp_path / "portal.backup.json"
        made = run_flags("backup", str(backup_file), "--store", sqlite_url, url=None)
        assert made.code == 0, made
        assert "10 flags" in made.out
        assert "the server secret" in made.out
        assert backup_file.stat().st_mode & 0o777 == 0o600
        secret = _secret_of(sqlite_url)

    # Another server already serves the empty Redis store when the backup is restored into it.
    with running_server(tmp_path / "b", store=redis_url) as second:
        assert _percentage(second, "ui-improvements") is None
        restored = run_flags(
            "restore", str(backup_file), "--store", redis_url, "--reason", "DR drill", url=None
        )
        assert restored.code == 0, restored
        assert wait_until(lambda: _percentage(second, "ui-improvements") == 10, 10, 0.1), (
            second.log()
        )
        with httpx.Client(base_url=second.url) as client:
            answer = client.get("/v1/snapshot", headers={"Authorization": f"Bearer {sdk_secret}"})
        assert answer.status_code == 200  # the token made before the backup works after it
        assert _secret_of(redis_url) == secret
        actions = _audit_actions(redis_url)
        assert actions[0] == "restore"
        assert {"enable", "token.create", "import"} <= set(actions)

        # Restoring again without --replace is refused, and changes nothing.
        again = run_flags("restore", str(backup_file), "--store", redis_url, url=None)
        assert again.code == 1
        assert "not empty" in again.err
        assert "--replace" in again.err
        assert _audit_actions(redis_url) == actions

    # And back: Redis to a new SQLite file.
    round_trip = tmp_path / "round-trip.json"
    assert run_flags("backup", str(round_trip), "--store", redis_url, url=None).code == 0
    sqlite_again = f"sqlite:///{tmp_path / 'c' / 'flagport.db'}"
    (tmp_path / "c").mkdir()
    summary = run_flags("restore", str(round_trip), "--store", sqlite_again, "--json", url=None)
    assert summary.code == 0, summary
    counts = json.loads(summary.out)
    assert counts["kind"] == "redis"
    assert counts["flags"] == 10
    with running_server(tmp_path / "c", store=sqlite_again) as third:
        assert _percentage(third, "ui-improvements") == 10
    assert _audit_actions(sqlite_again)[:2] == ["restore", "restore"]


def test_a_file_that_is_not_a_backup_changes_nothing(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'flagport.db'}"
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "flagport-backup", "format_version": 99}')
    result = run_flags("restore", str(bad), "--store", store, url=None)
    assert result.code == 2
    assert "newer Flagport" in result.err
    assert not (tmp_path / "flagport.db").exists() or _audit_actions(store) == []

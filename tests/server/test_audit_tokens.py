"""Audit log and tokens against a live 2-worker server that requires evaluation tokens
(issue 4, items 3 and 4).

Audit: filters (flag, since, actor), before/after and reason on every entry, pagination with
``before_id``/``limit`` over more than 1,000 entries, bounded page sizes, and no write path
(append-only). Tokens: created with the secret shown once, listed without secrets, scopes, and
revoked mid-session: the next request on an open keep-alive connection gets 401, on every
worker, within about a second.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from flagport_server.runtime import hash_secret
from flagport_server.stores import SQLiteStore
from flagport_server.stores.base import AuditEntry, TokenRecord
from tests.server._admin import assert_problem
from tests.server._fixtures import live_server
from tests.support.server import ADMIN_TOKEN, PORTAL_FLAGS, RunningServer, flags_executable

server = live_server(workers=2, seed=PORTAL_FLAGS, extra=("--require-eval-token",))

AUDIT = "/admin/v1/audit"
TOKENS = "/admin/v1/tokens"
REVOCATION_BOUND_S = 1.0


@pytest.fixture(scope="module")
def admin(server: RunningServer) -> Iterator[httpx.Client]:
    with server.admin(timeout=30.0) as client:
        yield client


class Pinned:
    """One keep-alive connection, hence one worker (granian never moves a connection)."""

    def __init__(self, server: RunningServer) -> None:
        host, port = server.url.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=5.0)
        status, _, body = self.request("GET", "/readyz")
        assert status == 200, body
        self.worker = int(json.loads(body)["worker"])

    def request(
        self, method: str, path: str, token: str | None = None, body: Any = None
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.connection.request(method, path, body=payload, headers=headers)
        response = self.connection.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def status(self, method: str, path: str, token: str | None, body: Any = None) -> int:
        return self.request(method, path, token, body)[0]


@pytest.fixture(scope="module")
def pinned(server: RunningServer) -> Iterator[list[Pinned]]:
    """One open connection per worker."""
    by_worker: dict[int, Pinned] = {}
    deadline = time.monotonic() + 15.0  # the second worker may still be starting
    while time.monotonic() < deadline:
        connection = Pinned(server)
        if connection.worker in by_worker:
            connection.connection.close()
        else:
            by_worker[connection.worker] = connection
        if len(by_worker) == 2:
            break
        time.sleep(0.01)
    assert len(by_worker) == 2, "granian never handed a connection to the second worker"
    yield list(by_worker.values())
    for connection in by_worker.values():
        connection.connection.close()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def create_token(admin: httpx.Client, name: str, scope: str) -> tuple[dict[str, Any], str]:
    answer = admin.post(TOKENS, json={"name": name, "scope": scope})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert set(body) == {"token", "secret", "snapshot_version"}
    assert "secret" not in body["token"]
    assert "secret_hash" not in body["token"]
    return body["token"], body["secret"]


def wait_for_status(
    connections: list[Pinned],
    method: str,
    path: str,
    token: str,
    status: int,
    body: Any = None,
) -> float:
    """Seconds until every connection answers ``status`` (each asked on its own socket)."""
    started = time.monotonic()
    pending = list(connections)
    while pending:
        pending = [c for c in pending if c.status(method, path, token, body) != status]
        if time.monotonic() - started > 5.0:
            raise AssertionError(f"workers {[c.worker for c in pending]} never answered {status}")
        if pending:
            time.sleep(0.01)
    return time.monotonic() - started


# -- tokens ----------------------------------------------------------------------------------

OFREP = "/ofrep/v1/evaluate/flags/auth-improvements"
CONTEXT = {"context": {"targetingKey": "u1"}}
#: Evaluation on the pinned connections goes through the GET form: granian may drop a
#: keep-alive connection after answering a POST whose body the app never read (a 401 from
#: the guard), which would silently move the next request to another worker.
EVALUATE = "/v1/evaluate/auth-improvements?targetingKey=u1"


def test_tokens_create_list_scopes_and_revoke_mid_session(
    server: RunningServer, admin: httpx.Client, pinned: list[Pinned]
) -> None:
    bot, bot_secret = create_token(admin, "ci-bot", "admin")
    portal, portal_secret = create_token(admin, "portal", "sdk")
    assert bot_secret.startswith("fpa_")
    assert portal_secret.startswith("fps_")
    assert bot["scope"] == "admin"
    assert portal["scope"] == "sdk"

    listing = admin.get(TOKENS)
    assert listing.status_code == 200
    assert bot_secret not in listing.text
    assert portal_secret not in listing.text
    tokens = {t["id"]: t for t in listing.json()["tokens"]}
    assert set(tokens) >= {bot["id"], portal["id"]}
    for token in tokens.values():
        assert set(token) <= {"id", "name", "scope", "created_at", "revoked_at"}

    # Every worker knows the new tokens within a second; scopes hold.
    wait_for_status(pinned, "GET", "/admin/v1/flags", bot_secret, 200)
    wait_for_status(pinned, "GET", EVALUATE, portal_secret, 200)
    for connection in pinned:
        assert connection.status("GET", EVALUATE, bot_secret) == 200  # admin may evaluate
        assert connection.status("GET", "/admin/v1/flags", portal_secret) == 403
        assert connection.status("GET", EVALUATE, None) == 401
        assert connection.status("GET", EVALUATE, "fpe_not-a-token") == 401
        assert connection.status("GET", "/admin/v1/flags", None) == 401
        assert connection.status("GET", "/v1/snapshot", portal_secret) == 200
        assert connection.status("GET", "/v1/snapshot", None) == 401
    url = server.url + OFREP
    assert httpx.post(url, json=CONTEXT, headers=bearer(portal_secret)).status_code == 200
    assert httpx.post(url, json=CONTEXT).status_code == 401

    # The bot's writes are audited under its name.
    status, _, _ = pinned[0].request(
        "POST",
        "/admin/v1/flags/auth-improvements/enable",
        bot_secret,
        {"percentage": 5, "reason": "canary by the bot"},
    )
    assert status == 200
    entry = admin.get(AUDIT, params={"actor": "ci-bot"}).json()["entries"][0]
    assert (entry["action"], entry["key"], entry["reason"]) == (
        "enable",
        "auth-improvements",
        "canary by the bot",
    )

    # Revoked mid-session: the very connections that just used the tokens get 401.
    revoked = admin.delete(f"{TOKENS}/{bot['id']}")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"]
    admin_delay = wait_for_status(pinned, "GET", "/admin/v1/flags", bot_secret, 401)
    assert admin.delete(f"{TOKENS}/{portal['id']}").status_code == 200
    eval_delay = wait_for_status(pinned, "GET", EVALUATE, portal_secret, 401)
    print(
        f"\nrevocation seen by every worker after {admin_delay * 1000:.0f} ms (admin token), "
        f"{eval_delay * 1000:.0f} ms (evaluation token)"
    )
    assert admin_delay < REVOCATION_BOUND_S
    assert eval_delay < REVOCATION_BOUND_S
    for connection in pinned:  # and it stays revoked
        assert connection.status("GET", EVALUATE, bot_secret) == 401
        assert connection.status("GET", "/v1/snapshot", portal_secret) == 401
        assert connection.status("GET", "/admin/v1/flags", ADMIN_TOKEN) == 200
    for secret in (bot_secret, portal_secret):
        assert httpx.post(url, json=CONTEXT, headers=bearer(secret)).status_code == 401

    listed = {t["id"]: t for t in admin.get(TOKENS).json()["tokens"]}
    assert listed[bot["id"]]["revoked_at"] == revoked.json()["revoked_at"]
    # Revoking again keeps the first time; unknown ids are 404.
    again = admin.delete(f"{TOKENS}/{bot['id']}")
    assert again.status_code == 200
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
    assert_problem(admin.delete(f"{TOKENS}/no-such-token"), 404, "no-such-token")
    # Token changes are audited, never with the secret.
    entries = admin.get(AUDIT, params={"flag": bot["id"]}).json()["entries"]
    assert entries[0]["action"] == "token.revoke"
    assert "token.create" in [e["action"] for e in entries]
    assert bot_secret not in admin.get(AUDIT, params={"limit": 1000}).text


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "x" * 101},
        {"name": "x", "scope": "root"},
        {"name": "x", "a": 1},
        {"name": "x"},  # no scope: never assumed
        {},
    ],
)
def test_bad_token_requests(admin: httpx.Client, body: dict[str, Any]) -> None:
    before = admin.get(TOKENS).json()
    assert admin.post(TOKENS, json=body).status_code == 400
    assert admin.get(TOKENS).json() == before


# -- audit -----------------------------------------------------------------------------------


def test_audit_entries_have_before_after_and_reason(admin: httpx.Client) -> None:
    create = admin.post("/admin/v1/flags", json={"key": "audited", "reason": "ticket 1"})
    assert create.status_code == 201
    assert (
        admin.post(
            "/admin/v1/flags/audited/enable", json={"percentage": 20, "reason": "ticket 2"}
        ).status_code
        == 200
    )
    assert (
        admin.post("/admin/v1/flags/audited/disable", json={"reason": "ticket 3"}).status_code
        == 200
    )
    assert admin.delete("/admin/v1/flags/audited", params={"reason": "ticket 4"}).status_code == 200
    page = admin.get(AUDIT, params={"flag": "audited"}).json()
    entries = page["entries"]
    assert [e["action"] for e in entries] == ["delete", "disable", "enable", "create"]
    assert [e["reason"] for e in entries] == ["ticket 4", "ticket 3", "ticket 2", "ticket 1"]
    assert {e["actor"] for e in entries} == {"admin"}
    delete, disable, enable, created = entries
    assert created.get("before") is None
    assert created["after"]["version"] == 1
    assert enable["before"].get("enabled", False) is False
    assert enable["after"]["enabled"] is True
    assert enable["after"]["percentage"] == 20
    assert disable["before"]["enabled"] is True
    assert disable["after"].get("enabled", False) is False
    assert delete["before"]["version"] == 3
    assert delete.get("after") is None
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True)
    versions = [e["snapshot_version"] for e in entries]
    assert versions == sorted(versions, reverse=True)
    for entry in entries:
        assert entry["at"].endswith("Z")
    assert page["next_before_id"] is None


def test_audit_filters(admin: httpx.Client) -> None:
    for n in range(3):
        assert (
            admin.post(
                "/admin/v1/flags/enhanced-mobile-nav/enable", json={"percentage": n}
            ).status_code
            == 200
        )
    newest = admin.get(AUDIT, params={"flag": "enhanced-mobile-nav"}).json()["entries"]
    assert len(newest) >= 3
    assert {e["key"] for e in newest} == {"enhanced-mobile-nav"}
    middle = newest[1]
    since = admin.get(AUDIT, params={"since": middle["at"]}).json()["entries"]
    assert since
    assert all(e["at"] >= middle["at"] for e in since)
    assert middle["id"] in {e["id"] for e in since}
    assert newest[-1]["id"] not in {e["id"] for e in since} or newest[-1]["at"] == middle["at"]
    future = admin.get(AUDIT, params={"since": "2999-01-01T00:00:00Z"}).json()
    assert future == {"entries": [], "next_before_id": None}
    by_actor = admin.get(AUDIT, params={"actor": "admin", "flag": "enhanced-mobile-nav"}).json()
    assert [e["id"] for e in by_actor["entries"]] == [e["id"] for e in newest]
    seed = admin.get(AUDIT, params={"actor": "seed"}).json()["entries"]
    assert [e["action"] for e in seed] == ["import"]
    assert admin.get(AUDIT, params={"actor": "nobody"}).json()["entries"] == []
    assert admin.get(AUDIT, params={"flag": "no-such-flag"}).json()["entries"] == []


def test_audit_pagination_over_more_than_a_thousand_entries(admin: httpx.Client) -> None:
    document = admin.get("/admin/v1/snapshot").json()
    for n in range(1_100):
        document["flags"][f"mass.f{n:04d}"] = {"description": f"generated {n}"}
    document["flags"]["mass"] = {}
    imported = admin.post("/admin/v1/snapshot", json=document, params={"reason": "mass import"})
    assert imported.status_code == 200, imported.text
    total = len(admin.get(AUDIT, params={"limit": 1000}).json()["entries"])
    assert total == 1000

    seen: list[int] = []
    before_id = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if before_id is not None:
            params["before_id"] = before_id
        page = admin.get(AUDIT, params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        seen += [e["id"] for e in body["entries"]]
        pages += 1
        before_id = body["next_before_id"]
        if before_id is None:
            break
        assert before_id == body["entries"][-1]["id"]
    assert pages >= 2
    assert len(seen) == len(set(seen)) > 1_100
    assert seen == sorted(seen, reverse=True)
    # Small pages walk the same sequence.
    small: list[int] = []
    before_id = None
    for _ in range(3):
        params = {"limit": 7, **({"before_id": before_id} if before_id else {})}
        body = admin.get(AUDIT, params=params).json()
        small += [e["id"] for e in body["entries"]]
        before_id = body["next_before_id"]
    assert small == seen[:21]
    mass = admin.get(AUDIT, params={"flag": "mass.f0042"}).json()["entries"]
    assert len(mass) == 1
    assert (mass[0]["action"], mass[0]["reason"]) == ("import", "mass import")
    assert mass[0]["after"]["description"] == "generated 42"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 100_000}, "limit"),
        ({"limit": 0}, "limit"),
        ({"limit": -1}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"before_id": 0}, "before_id"),
        ({"since": "yesterday"}, "since"),
    ],
)
def test_bad_audit_queries(admin: httpx.Client, params: dict[str, Any], field: str) -> None:
    assert_problem(admin.get(AUDIT, params=params), 400, field)


def test_audit_is_append_only(server: RunningServer, admin: httpx.Client) -> None:
    count = len(admin.get(AUDIT, params={"limit": 1000}).json()["entries"])
    first_id = admin.get(AUDIT, params={"limit": 1}).json()["entries"][0]["id"]
    for method in ("PUT", "DELETE", "POST", "PATCH"):
        answer = admin.request(method, AUDIT, json={})
        assert answer.status_code == 405, (method, answer.text)
        assert "GET" in answer.headers.get("allow", "GET")
        nested = admin.request(method, f"{AUDIT}/{first_id}", json={})
        assert nested.status_code in (404, 405), (method, nested.text)
    assert len(admin.get(AUDIT, params={"limit": 1000}).json()["entries"]) == count
    schema = httpx.get(server.url + "/schema/openapi.json").json()
    audit_paths = {p: ops for p, ops in schema["paths"].items() if p.startswith(AUDIT)}
    assert list(audit_paths) == [AUDIT]
    assert {m for m in audit_paths[AUDIT] if m != "parameters"} == {"get"}
    # Evaluation tokens cannot read it; no token at all is 401.
    _, secret = create_token(admin, "reader", "evaluate")
    for _ in range(100):
        denied = httpx.get(server.url + AUDIT, headers=bearer(secret))
        if denied.status_code == 403:
            break
        time.sleep(0.02)
    assert denied.status_code == 403
    assert httpx.get(server.url + AUDIT).status_code == 401


# -- attribution and revocation (issue 13) ---------------------------------------------------


def flags_cli(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLAGPORT_")}
    environment.update(FLAGPORT_URL=server.url, FLAGPORT_TOKEN=ADMIN_TOKEN)
    return subprocess.run(
        [flags_executable(), *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    "name",
    ["admin", "ADMIN", "Seed", "two words", "cr\r\nlf", "esc\x1b[2J", "-x", "x" * 65, "ünï", ""],
)
def test_token_names_are_restricted_and_the_bootstrap_actor_reserved(
    admin: httpx.Client, name: str
) -> None:
    before = admin.get(TOKENS).json()
    assert_problem(admin.post(TOKENS, json={"name": name, "scope": "admin"}), 400, "$.name")
    assert admin.get(TOKENS).json() == before


def test_token_names_are_unique_whatever_their_case(admin: httpx.Client) -> None:
    create_token(admin, "Deploy.Bot@ci", "viewer")
    before = admin.get(TOKENS).json()
    for name in ("Deploy.Bot@ci", "deploy.bot@CI"):
        assert_problem(admin.post(TOKENS, json={"name": name, "scope": "sdk"}), 409, repr(name))
    assert admin.get(TOKENS).json() == before


def _store_directly(server: RunningServer, *, token: TokenRecord, entry: AuditEntry) -> None:
    """Write what an older Flagport could have stored, through the store API itself."""

    async def write() -> None:
        store = SQLiteStore(server.workdir / "flagport.db")
        await store.open()
        try:
            await store.add_token(token)
            await store.commit([], [entry])  # a new version: every worker reloads its tokens
        finally:
            await store.close()

    asyncio.run(write())


def test_audit_entries_carry_the_token_id_and_cli_tables_escape_control_characters(
    server: RunningServer, admin: httpx.Client, pinned: list[Pinned]
) -> None:
    assert admin.post("/admin/v1/flags", json={"key": "attributed"}).status_code == 201
    bot, bot_secret = create_token(admin, "release-bot", "admin")
    # A token stored before names were checked keeps working, even one named like the
    # bootstrap token; its entries differ from the bootstrap token's by the token id.
    legacy_secret = "fpa_legacy_" + "0123456789" * 4
    legacy = TokenRecord(
        id="legacy0000000001",
        name="admin",
        scope="admin",
        secret_hash=hash_secret(legacy_secret),
        created_at="2026-01-01T00:00:00.000Z",
    )
    forged = AuditEntry(
        actor="old\r\n9999  2026-01-01  admin  bootstrap  kill  everything",
        action="token.create",
        key="legacy0000000001",
        at="2026-01-01T00:00:00.000Z",
        kind="token",
        reason="\x1b[2J\x1b]0;pwned\x07 cleared your screen",
    )
    _store_directly(server, token=legacy, entry=forged)
    wait_for_status(pinned, "GET", "/admin/v1/flags", bot_secret, 200)
    wait_for_status(pinned, "GET", "/admin/v1/flags", legacy_secret, 200)
    path = "/admin/v1/flags/attributed/"
    assert pinned[0].status("POST", path + "enable", bot_secret, {"reason": "bot"}) == 200
    assert pinned[0].status("POST", path + "disable", legacy_secret, {"reason": "legacy"}) == 200
    assert admin.post(path + "enable", json={"reason": "bootstrap"}).status_code == 200

    entries = admin.get(AUDIT, params={"flag": "attributed"}).json()["entries"]
    assert [(e["reason"], e["actor"], e.get("token_id")) for e in entries[:3]] == [
        ("bootstrap", "admin", "bootstrap"),
        ("legacy", "admin", "legacy0000000001"),
        ("bot", "release-bot", bot["id"]),
    ]
    created = admin.get(AUDIT, params={"flag": bot["id"]}).json()["entries"][-1]
    assert (created["action"], created["token_id"]) == ("token.create", "bootstrap")

    shown = flags_cli(server, "audit", "--limit", "1000")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split()[:4] == ["ID", "AT", "ACTOR", "TOKEN"]
    assert [line.split()[2:4] for line in lines[1:4]] == [  # newest first
        ["admin", "bootstrap"],
        ["admin", "legacy0000000001"],
        ["release-bot", bot["id"]],
    ]
    # Rows from anyone who could write them stay one line each and never reach the terminal
    # as control sequences.
    for control in ("\x1b", "\r", "\x07"):
        assert control not in shown.stdout
    row = next(line for line in lines if "9999" in line)
    assert "old\\r\\n9999" in row
    assert "\\x1b[2J\\x1b]0;pwned\\x07 cleared" in row


def _open_stream(server: RunningServer, secret: str) -> tuple[int, threading.Thread]:
    """An SSE stream with ``secret``: (worker pid, a thread that ends when the stream does)."""
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10.0)
    connection.request("GET", "/v1/stream", headers=bearer(secret))
    response = connection.getresponse()
    assert response.status == 200
    reader = threading.Thread(target=response.read, daemon=True)
    reader.start()
    return int(response.getheader("x-flagport-worker") or 0), reader


def test_revoke_waits_for_every_worker_and_ends_the_token_streams(
    server: RunningServer, admin: httpx.Client, pinned: list[Pinned]
) -> None:
    made, secret = create_token(admin, "streamer", "evaluate")
    wait_for_status(pinned, "GET", EVALUATE, secret, 200)
    _, other_secret = create_token(admin, "bystander", "evaluate")
    wait_for_status(pinned, "GET", EVALUATE, other_secret, 200)
    streams: dict[int, threading.Thread] = {}
    for _ in range(40):  # new connections land on either worker
        worker, reader = _open_stream(server, secret)
        streams.setdefault(worker, reader)
        if len(streams) == 2:
            break
    assert len(streams) == 2, "never got a stream on the second worker"
    _, bystander = _open_stream(server, other_secret)

    revoked = flags_cli(server, "token", "revoke", made["id"])
    assert revoked.returncode == 0, revoked.stderr
    assert "refused by all 2 live worker(s)" in revoked.stdout, revoked.stdout
    # When the command returns, no worker accepts the token any more: no retry needed.
    for connection in pinned:
        assert connection.status("GET", EVALUATE, secret) == 401
    for reader in streams.values():
        reader.join(timeout=2.0)
        assert not reader.is_alive(), "a stream of the revoked token is still open"
    assert bystander.is_alive()  # another token's stream stays
    body = admin.delete(f"{TOKENS}/{made['id']}").json()
    assert body["snapshot_version"] >= 1
    assert body["revoked_at"]

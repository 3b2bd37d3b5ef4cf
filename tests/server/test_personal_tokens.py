"""Personal tokens (issue 19, item 3): an expiry chosen at creation (bounded), shown in the
token list, warned 7 days ahead in a response header; rotation keeps the id, name and audit
trail and the old secret stops working at once; an expired or rotated-away secret gets a 401
whose detail names the moment it stopped working (never a secret). The store's rotation is
a compare-and-set on both backends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import msgspec
import pytest

from flagport_server.runtime import hash_secret
from flagport_server.stores import open_store
from flagport_server.stores.base import SCOPE_MODEL, Store, TokenRecord
from flagport_server.token_expiry import TOKEN_EXPIRES_HEADER
from tests.server._fixtures import live_server
from tests.support.server import RunningServer

server = live_server(workers=2)

TOKENS = "/admin/v1/tokens"


@pytest.fixture(scope="module")
def admin(server: RunningServer) -> Iterator[httpx.Client]:
    with server.admin(timeout=30.0) as client:
        yield client


def _bearer(server: RunningServer, secret: str) -> httpx.Client:
    return server.client(timeout=10.0, headers={"Authorization": f"Bearer {secret}"})


def _create(admin: httpx.Client, name: str, **extra: str) -> tuple[dict[str, object], str]:
    answer = admin.post(TOKENS, json={"name": name, "scope": "admin", **extra})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    version = admin.get("/admin/v1/audit", params={"limit": 1}).json()["entries"][0]
    _wait_applied(admin, version["snapshot_version"])
    return body["token"], body["secret"]


def _wait_applied(admin: httpx.Client, version: int) -> None:
    """Every live worker has applied ``version`` (what ``flags token revoke`` waits on)."""
    for _ in range(500):
        answer = admin.get("/admin/v1/propagation", params={"version": version})
        if answer.json()["complete"]:
            return
        asyncio.run(asyncio.sleep(0.01))
    raise AssertionError(f"version {version} not applied everywhere: {answer.text}")


def _wait_refused(server: RunningServer, secret: str) -> httpx.Response:
    """Every worker refuses ``secret`` (the revocation rule: within about a second)."""
    with _bearer(server, secret) as client:
        for _ in range(200):
            answers = [client.get(TOKENS) for _ in range(4)]
            if all(a.status_code == 401 for a in answers):
                return answers[-1]
            asyncio.run(asyncio.sleep(0.02))
    raise AssertionError(f"still accepted: {[a.status_code for a in answers]}")


def test_expiry_is_listed_and_warned_within_seven_days(
    server: RunningServer, admin: httpx.Client
) -> None:
    far, far_secret = _create(admin, "alice", expires="90d")
    near, near_secret = _create(admin, "bob", expires="3d")
    never, never_secret = _create(admin, "ci-bot")
    listed = {t["name"]: t for t in admin.get(TOKENS).json()["tokens"]}
    assert listed["alice"]["expires_at"] == far["expires_at"]
    assert "status" not in listed["alice"]
    assert listed["bob"]["status"] == "expiring"
    assert "expires_at" not in listed["ci-bot"]
    assert "status" not in listed["ci-bot"]
    with _bearer(server, near_secret) as client:
        answer = client.get("/admin/v1/flags")
        assert answer.status_code == 200
        assert answer.headers[TOKEN_EXPIRES_HEADER] == near["expires_at"]
    for secret in (far_secret, never_secret):
        with _bearer(server, secret) as client:
            answer = client.get("/admin/v1/flags")
            assert answer.status_code == 200
            assert TOKEN_EXPIRES_HEADER not in answer.headers
    del never


@pytest.mark.parametrize(
    ("expires", "problem"),
    [("105w", "too long"), ("731d", "too long"), ("30m", "too short"), ("soon", "invalid")],
)
def test_a_lifetime_out_of_bounds_is_refused_and_nothing_made(
    admin: httpx.Client, expires: str, problem: str
) -> None:
    before = admin.get(TOKENS).json()["tokens"]
    answer = admin.post(TOKENS, json={"name": "too-long", "scope": "admin", "expires": expires})
    assert answer.status_code == 400, answer.text
    assert problem in answer.json()["detail"]
    assert answer.json()["field"] == "$.expires"
    assert admin.get(TOKENS).json()["tokens"] == before


def test_an_expired_token_gets_a_401_naming_its_expiry(
    server: RunningServer, admin: httpx.Client
) -> None:
    secret = "fpa_" + "expired" * 6
    expired = TokenRecord(
        id="0000expired00000",
        name="carol",
        scope="admin",
        secret_hash=hash_secret(secret),
        created_at="2026-01-01T00:00:00.000Z",
        scope_model=SCOPE_MODEL,
        expires_at="2026-02-01T00:00:00Z",
        lifetime_s=31 * 86400,
    )

    async def write() -> None:
        opened = open_store(f"sqlite:///{server.workdir / 'flagport.db'}")
        await opened.open()
        try:
            await opened.add_token(expired)
        finally:
            await opened.close()

    asyncio.run(write())
    _create(admin, "bump-1")  # a token change: every worker reloads the tokens
    answer = _wait_refused(server, secret)
    detail = answer.json()["detail"]
    assert "expired at 2026-02-01T00:00:00Z" in detail
    assert "carol" in detail
    assert secret not in answer.text
    assert "flags token rotate 0000expired00000" in detail
    listed = {t["name"]: t for t in admin.get(TOKENS).json()["tokens"]}
    assert listed["carol"]["status"] == "expired"
    # Rotating an expired personal token renews it for its lifetime, from now.
    rotated = admin.post(f"{TOKENS}/{expired.id}/rotate", json={"reason": "back from leave"})
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert new["token"]["expires_at"] > "2026-02-01T00:00:00Z"
    assert "status" not in new["token"]
    with _bearer(server, new["secret"]) as client:
        assert client.get("/admin/v1/flags").status_code == 200


def test_rotation_keeps_the_id_and_trail_and_the_old_secret_stops_at_once(
    server: RunningServer, admin: httpx.Client
) -> None:
    made, old = _create(admin, "dave", expires="30d")
    with _bearer(server, old) as client:
        created = client.post("/admin/v1/flags", json={"key": "made-by-dave"})
        assert created.status_code == 201, created.text
    answer = admin.post(f"{TOKENS}/{made['id']}/rotate", json={"expires": "60d"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    rotated = answer.json()
    assert rotated["token"]["id"] == made["id"]
    assert rotated["token"]["name"] == "dave"
    assert rotated["token"]["expires_at"] > str(made["expires_at"])
    new = rotated["secret"]
    assert new != old
    assert new.startswith("fpa_")
    # The commit that carries the rotation is applied by this worker before it answers; the
    # others follow like for a revocation.
    refused = _wait_refused(server, old)
    detail = refused.json()["detail"]
    assert "dave" in detail
    assert rotated["token"]["rotated_at"] in detail
    assert "rotated" in detail
    assert old not in refused.text
    assert new not in refused.text
    with _bearer(server, new) as client:
        changed = client.post("/admin/v1/flags/made-by-dave/enable", json={})
        assert changed.status_code == 200, changed.text
    trail = admin.get("/admin/v1/audit", params={"actor": "dave"}).json()["entries"]
    assert {e["token_id"] for e in trail} == {made["id"]}
    assert [e["action"] for e in trail] == ["enable", "create"]
    rotation = admin.get("/admin/v1/audit", params={"flag": made["id"]}).json()["entries"][0]
    assert rotation["action"] == "token.rotate"
    assert rotation["kind"] == "token"
    assert old not in str(rotation)
    assert hash_secret(old) not in str(rotation)


def test_a_revoked_or_unknown_token_cannot_be_rotated(admin: httpx.Client) -> None:
    made, _ = _create(admin, "erin")
    assert admin.delete(f"{TOKENS}/{made['id']}").status_code == 200
    answer = admin.post(f"{TOKENS}/{made['id']}/rotate")
    assert answer.status_code == 409
    assert "revoked" in answer.json()["detail"]
    assert admin.post(f"{TOKENS}/nope/rotate").status_code == 404


# -- the store's rotation, on every backend ---------------------------------------------------


def _token(id_: str, secret_hash: str) -> TokenRecord:
    return TokenRecord(
        id=id_,
        name=f"{id_}-name",
        scope="admin",
        secret_hash=secret_hash,
        created_at="2026-01-01T10:00:00Z",
        scope_model=SCOPE_MODEL,
        expires_at="2026-04-01T10:00:00Z",
        lifetime_s=90 * 86400,
    )


@pytest.mark.anyio
async def test_store_rotation_is_a_compare_and_set(store: Store) -> None:
    original = _token("frank", "a" * 64)
    await store.add_token(original)
    rotated = msgspec.structs.replace(
        original,
        secret_hash="b" * 64,
        rotated_at="2026-02-01T10:00:00Z",
        expires_at="2026-05-01T10:00:00Z",
        retired_hashes=("a" * 64,),
    )
    assert await store.rotate_token(rotated, "a" * 64)
    assert await store.tokens() == [rotated]
    # A second rotation from the same old secret loses: nothing changes.
    again = msgspec.structs.replace(rotated, secret_hash="c" * 64)
    assert not await store.rotate_token(again, "a" * 64)
    assert await store.tokens() == [rotated]
    # A revoked token is never rotated; an unknown one neither.
    await store.revoke_token("frank", "2026-02-02T10:00:00Z")
    assert not await store.rotate_token(again, "b" * 64)
    assert not await store.rotate_token(_token("nobody", "d" * 64), "e" * 64)
    assert [t.secret_hash for t in await store.tokens()] == ["b" * 64]

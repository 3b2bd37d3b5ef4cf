"""The scope model (docs/spec.md section 5) with the real ``flags serve``.

Every route declares the scope it needs (a walk over the app's routes fails on one that
declares none); every token scope is tried on every route class, and a token on a route beyond
its scope is 403 naming the scope, with nothing changed. What a request without a token may
reach depends on the bind: ``sdk`` on loopback and Unix sockets, ``evaluate`` with
``--open-evaluation``, nothing with ``--require-eval-token``. Tokens stored before the four
scopes migrate (``evaluate`` -> ``sdk``) on both stores.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flagport_server.app import create_app
from flagport_server.auth import PUBLIC, SCOPES, declared_scope, grants, scope_guard
from flagport_server.runtime import hash_secret
from flagport_server.settings import Settings
from flagport_server.stores.base import TokenRecord
from tests.server._fixtures import create_flags
from tests.support.server import RunningServer, running_server
from tests.support.stores import BACKENDS

#: The hot evaluation routes check the scope with a plain call (no guard; ADR 0003).
_CHECKED_IN_THE_HANDLER = {"ofrep-single", "ofrep-bulk", "evaluate-get"}


def test_every_route_declares_a_scope_and_is_guarded(tmp_path: Path) -> None:
    app = create_app(
        Settings(store_url=f"sqlite:///{tmp_path / 'flagport.db'}", admin_token="t" * 32)
    )
    seen: dict[str, set[str]] = {}
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            methods = set(handler.http_methods)
            if methods == {"OPTIONS"} and handler.fn.__module__.startswith("litestar"):
                continue  # Litestar's automatic OPTIONS answer: only an Allow header
            scope = declared_scope(handler)
            label = f"{' '.join(sorted(methods))} {route.path}"
            assert scope is not None, f"{label} declares no scope"
            seen.setdefault(scope, set()).add(label)
            if scope == PUBLIC:
                continue
            if handler.name in _CHECKED_IN_THE_HANDLER:
                assert scope_guard not in handler.resolve_guards(), label
            else:
                assert scope_guard in handler.resolve_guards(), f"{label} is not guarded"
    assert seen["sdk"] == {"GET /v1/snapshot", "POST /v1/exposures", "POST /v1/outcomes"}
    assert seen["evaluate"] == {
        "POST /ofrep/v1/evaluate/flags/{key:str}",
        "POST /ofrep/v1/evaluate/flags",
        "GET /v1/evaluate/{key:str}",
        "GET /v1/stream",
    }
    assert all(
        label.startswith("GET ")
        for label in seen["viewer"] - {"POST /admin/v1/flags/{key:str}/explain"}
    )
    operations = ("GET /healthz", "GET /readyz", "GET /metrics", "GET /schema")
    # The admin UI takes no token header: its own guard reads the session (ADR 0026).
    ui = {label for label in seen["public"] if label.split(" ")[-1].startswith("/ui")}
    assert all(label.startswith(operations) for label in seen["public"] - ui), seen["public"]
    assert "POST /ui/flags/{key:str}/disable" in ui
    assert seen["admin"]
    assert not any(label.startswith("GET ") for label in seen["admin"])


# -- every scope on every route class ----------------------------------------------------------

KEY = "scoped"
CONTEXT = {"context": {"targetingKey": "u1"}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("scopes")
    with running_server(workdir, extra=["--require-eval-token"]) as running:
        create_flags(running, {KEY: {"enabled": True}})
        yield running


def _request(client: httpx.Client, route: str, secret: str | None) -> httpx.Response:
    """One request of a route class; the admin one creates a flag, so it is only sent with
    a token that must be refused (or once, on purpose)."""
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    if route == "evaluate":
        return client.post(f"/ofrep/v1/evaluate/flags/{KEY}", json=CONTEXT, headers=headers)
    if route == "evaluate-bulk":
        return client.post("/ofrep/v1/evaluate/flags", json=CONTEXT, headers=headers)
    if route == "evaluate-get":
        return client.get(f"/v1/evaluate/{KEY}?targetingKey=u1", headers=headers)
    if route == "evaluate-stream":
        with client.stream("GET", "/v1/stream", headers=headers) as answer:
            answer.read() if answer.status_code != 200 else None
            return answer
    if route == "sdk":
        return client.get("/v1/snapshot", headers=headers)
    if route == "sdk-exposures":
        return client.post("/v1/exposures", json={"exposures": []}, headers=headers)
    if route == "sdk-outcomes":
        now = time.time()
        return client.post("/v1/outcomes", json={"period": [now - 1, now]}, headers=headers)
    if route == "viewer":
        return client.get("/admin/v1/audit", headers=headers)
    if route == "viewer-explain":
        return client.post(f"/admin/v1/flags/{KEY}/explain", json=CONTEXT, headers=headers)
    if route == "admin":
        return client.post(f"/admin/v1/flags/{KEY}/disable", json={}, headers=headers)
    if route == "admin-token":
        return client.post(
            "/admin/v1/tokens", json={"name": "made-by-x", "scope": "admin"}, headers=headers
        )
    raise AssertionError(route)


ROUTES = [
    "evaluate",
    "evaluate-bulk",
    "evaluate-get",
    "evaluate-stream",
    "sdk",
    "sdk-exposures",
    "sdk-outcomes",
    "viewer",
    "viewer-explain",
    "admin",
    "admin-token",
]


def _detail(answer: httpx.Response) -> str:
    body = answer.json()
    return str(body.get("detail") or body.get("errorDetails"))


def _everything(admin: httpx.Client) -> tuple[Any, ...]:
    return (
        admin.get("/admin/v1/snapshot").json(),
        admin.get("/admin/v1/audit", params={"limit": 1000}).json(),
        [t["id"] for t in admin.get("/admin/v1/tokens").json()["tokens"]],
    )


def test_each_scope_on_each_route_class(server: RunningServer) -> None:
    with server.admin(timeout=10.0) as admin:
        secrets = {}
        for scope in SCOPES:
            made = admin.post("/admin/v1/tokens", json={"name": f"probe-{scope}", "scope": scope})
            assert made.status_code == 201, made.text
            assert made.json()["token"]["scope"] == scope
            secrets[scope] = made.json()["secret"]
        before = _everything(admin)
    allowed: list[tuple[str, str]] = []
    with server.client(timeout=10.0) as client:
        for route in ROUTES:
            needed = route.split("-")[0]
            answer = _request(client, route, None)
            assert answer.status_code == 401, (route, answer.text)
            assert f"the {needed} scope" in _detail(answer), (route, answer.text)
            for scope, secret in secrets.items():
                if grants(scope, needed):  # type: ignore[arg-type]
                    allowed.append((route, scope))
                    continue
                answer = _request(client, route, secret)
                assert answer.status_code == 403, (route, scope, answer.text)
                detail = _detail(answer)
                assert f"has the {scope} scope" in detail, detail
                assert f"needs the {needed} scope" in detail, detail
        with server.admin(timeout=10.0) as admin:
            assert _everything(admin) == before  # nothing refused changed anything
        for route, scope in allowed:
            if route.startswith("admin"):
                continue  # below, once
            answer = _request(client, route, secrets[scope])
            assert answer.status_code == 200, (route, scope, answer.text)
    assert sorted({scope for _, scope in allowed if _.startswith("sdk")}) == ["admin", "sdk"]
    assert sorted({scope for _, scope in allowed if _.startswith("viewer")}) == [
        "admin",
        "viewer",
    ]
    with server.client(timeout=10.0) as client:
        assert _request(client, "admin", secrets["admin"]).status_code == 200
    with server.admin(timeout=10.0) as admin:
        entry = admin.get("/admin/v1/audit", params={"limit": 1}).json()["entries"][0]
        assert (entry["action"], entry["actor"]) == ("disable", "probe-admin")


def test_a_viewer_reads_everything_in_the_admin_api_and_changes_nothing(
    server: RunningServer,
) -> None:
    with server.admin(timeout=10.0) as admin:
        made = admin.post("/admin/v1/tokens", json={"name": "dashboard", "scope": "viewer"})
        secret = made.json()["secret"]
        before = _everything(admin)
    viewer = {"Authorization": f"Bearer {secret}"}
    with server.client(timeout=10.0, headers=viewer) as client:
        for path in (
            "/admin/v1/flags",
            f"/admin/v1/flags/{KEY}",
            "/admin/v1/segments",
            "/admin/v1/audit",
            "/admin/v1/tokens",
            "/admin/v1/snapshot",
            "/admin/v1/propagation?version=0",
            f"/admin/v1/flags/{KEY}/stats",
            "/admin/v1/stale",
        ):
            assert client.get(path).status_code == 200, path
        for method, path, body in (
            ("POST", "/admin/v1/flags", {"key": "by-viewer"}),
            ("POST", f"/admin/v1/flags/{KEY}/enable", {}),
            ("POST", "/admin/v1/kill", {"all": True, "reason": "x"}),
            ("PUT", "/admin/v1/segments/s", {"units": ["1"]}),
            ("DELETE", f"/admin/v1/flags/{KEY}", None),
            ("POST", "/admin/v1/snapshot", {"flags": {}}),
        ):
            answer = client.request(method, path, json=body)
            assert answer.status_code == 403, (method, path, answer.text)
            assert "needs the admin scope" in answer.json()["detail"]
    with server.admin(timeout=10.0) as admin:
        assert _everything(admin) == before


# -- what a request without a token reaches, by bind ------------------------------------------


def _tokenless(client: httpx.Client) -> dict[str, int]:
    return {
        route: _request(client, route, None).status_code for route in ROUTES if route != "admin"
    }


def _expected(open_scope: str | None) -> dict[str, int]:
    return {
        route: 200 if open_scope and grants(open_scope, route.split("-")[0]) else 401  # type: ignore[arg-type]
        for route in ROUTES
        if route != "admin"
    }


def test_a_loopback_bind_opens_the_sdk_scope(tmp_path: Path) -> None:
    with running_server(tmp_path) as running, running.client(timeout=10.0) as client:
        create_flags(running, {KEY: {"enabled": True}})
        assert _tokenless(client) == _expected("sdk")


def test_a_unix_socket_bind_opens_the_sdk_scope(tmp_path: Path) -> None:
    with running_server(tmp_path, uds=True) as running, running.client(timeout=10.0) as client:
        create_flags(running, {KEY: {"enabled": True}})
        assert _tokenless(client) == _expected("sdk")


def test_open_evaluation_opens_the_evaluate_scope_only(tmp_path: Path) -> None:
    with running_server(tmp_path, extra=["--host", "0.0.0.0", "--open-evaluation"]) as running:
        create_flags(running, {KEY: {"enabled": True}})
        with running.admin(timeout=10.0) as admin:
            made = admin.post("/admin/v1/tokens", json={"name": "page", "scope": "evaluate"})
            page = made.json()["secret"]
            made = admin.post("/admin/v1/tokens", json={"name": "srv", "scope": "sdk"})
            sdk = made.json()["secret"]
        with running.client(timeout=10.0) as client:
            assert _tokenless(client) == _expected("evaluate")
            refused = _request(client, "sdk", None)
            assert "needs a token with the sdk scope" in refused.json()["detail"]
            assert _request(client, "sdk", page).status_code == 403
            assert _request(client, "sdk", sdk).status_code == 200
            assert _request(client, "sdk-exposures", sdk).status_code == 200
            assert _request(client, "sdk-outcomes", page).status_code == 403
            assert _request(client, "sdk-outcomes", sdk).status_code == 200
            # The OpenAPI document says so too: OFREP may go without a token, the feed not.
            paths = client.get("/schema/openapi.json").json()["paths"]
        assert {} in paths["/ofrep/v1/evaluate/flags"]["post"]["security"]
        assert {} not in paths["/v1/snapshot"]["get"]["security"]
        assert {} not in paths["/v1/exposures"]["post"]["security"]
        assert {} not in paths["/v1/outcomes"]["post"]["security"]
    assert "evaluation is open to anyone" in running.log()


# -- tokens stored before the four scopes ---------------------------------------------------


@pytest.mark.parametrize("backend_name", ["sqlite", "redis"])
def test_an_evaluate_token_stored_before_the_scopes_works_as_sdk(
    backend_name: str, tmp_path: Path
) -> None:
    secret = "fpe_" + "legacy" * 8
    legacy = TokenRecord(
        id="legacy0000000002",
        name="old-local-client",
        scope="evaluate",  # scope model 1: it reached /v1/snapshot
        secret_hash=hash_secret(secret),
        created_at="2025-06-01T00:00:00.000Z",
    )
    with BACKENDS[backend_name](tmp_path) as backend:

        async def write() -> None:
            store = backend.make()
            await store.open()
            try:
                await store.add_token(legacy)
            finally:
                await store.close()

        asyncio.run(write())
        with running_server(
            tmp_path / "server", store=backend.url, extra=["--require-eval-token"]
        ) as running:
            bearer = {"Authorization": f"Bearer {secret}"}
            with running.client(timeout=10.0, headers=bearer) as client:
                feed = client.get("/v1/snapshot")
                assert feed.status_code == 200, feed.text
                assert client.post("/v1/exposures", json={"exposures": []}).status_code == 200
                answer = client.get("/admin/v1/flags")
                assert answer.status_code == 403
                assert "has the sdk scope" in answer.json()["detail"]
            with running.admin(timeout=10.0) as admin:
                listed = admin.get("/admin/v1/tokens").json()["tokens"]
                assert [t["scope"] for t in listed if t["id"] == legacy.id] == ["sdk"]

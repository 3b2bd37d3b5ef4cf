"""The evaluation dispatch (docs/adr/0021-evaluation-dispatch.md): it answers exactly what the
Litestar routes answer, byte for byte, for any request on the dispatched paths (any method,
body, media type, query, token, CORS origin); it serves its routes without the framework; the
route table and the Litestar declarations agree. The live-server tests (OFREP, schemathesis,
the OpenFeature and web providers) reach it through ``flags serve``, which serves
:func:`~flagport_server.asgi.serving_app`."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient

from flagport_server.app import create_app
from flagport_server.asgi import serving_app
from flagport_server.auth import declared_scope
from flagport_server.cors import Cors, CorsPolicy
from flagport_server.dispatch import EvaluationDispatch, Front
from flagport_server.settings import Settings
from flagport_server.surface import DISPATCHED, dispatched_route
from tests.support.server import PORTAL_FLAGS

ADMIN_TOKEN = "dispatch-admin-token-0123456789abcdef"
ORIGIN = "https://portal.example"
#: Small, so that the strategies reach it.
MAX_BODY = 300
POLICY = CorsPolicy((ORIGIN,))


def _settings(directory: Path, open_scope: Any) -> Settings:
    return Settings(
        store_url=f"sqlite:///{directory / 'flagport.db'}",
        admin_token=ADMIN_TOKEN,
        seed_file=str(PORTAL_FLAGS),
        open_scope=open_scope,
        cors_origins=(ORIGIN,),
        max_eval_body=MAX_BODY,
        stats_flush_interval=60.0,
    )


def _client(app: Any) -> TestClient[Any]:
    with warnings.catch_warnings():  # "localhost might cause issues": a loopback bind wants it
        warnings.simplefilter("ignore")
        return TestClient(app, base_url="http://localhost")


@pytest.fixture(scope="module", params=["sdk", None], ids=["open", "tokens"])
def pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient[Any], TestClient[Any]]]:
    """The served stack (dispatch in front) and the bare Litestar app behind the CORS layer
    (as the dispatch hands requests on), on one store (one server secret: the same stream
    tickets)."""
    directory = tmp_path_factory.mktemp("dispatch")
    with (
        _client(serving_app(_settings(directory, request.param))) as dispatched,
        _client(Cors(create_app(_settings(directory, request.param)), POLICY)) as litestar,
    ):
        yield dispatched, litestar


KEYS = st.sampled_from(
    ["ui-improvements", "ui-improvements.dropdown-fixes", "no-such-flag", "a%2Fb", "", "x/y"]
)
PATHS = st.one_of(
    st.just("/ofrep/v1/evaluate/flags"),
    KEYS.map(lambda key: f"/ofrep/v1/evaluate/flags/{key}"),
    KEYS.map(lambda key: f"/v1/evaluate/{key}"),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
CONTEXTS = st.one_of(
    st.fixed_dictionaries(
        {"targetingKey": st.text(max_size=8)},
        optional={"company_id": st.integers(0, 9), "role": st.sampled_from(["admin", "x"])},
    ),
    st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=4),
    JSON_VALUES,
)
BODIES = st.one_of(
    CONTEXTS.map(lambda context: msgspec.json.encode({"context": context})),
    st.binary(max_size=20),
    st.just(b'{"context":{"targetingKey":"' + b"x" * MAX_BODY + b'"}}'),
    st.just(b'{"context": {"targetingKey": "\\ud800"}}'),
    st.just(b'{"nocontext": 1}'),
)


def _same(name: str, value: str) -> Any:
    """A header's value as compared: ``Allow`` lists Litestar's methods in set order."""
    return frozenset(value.split(", ")) if name == "allow" else value


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=st.sampled_from(["POST", "GET", "PUT", "HEAD"]),
    path=PATHS,
    body=BODIES,
    content_type=st.sampled_from(
        ["application/json", "text/plain", None, "application/json; charset=utf-8"]
    ),
    query=st.sampled_from(["", "targetingKey=u1&company_id=7", "flagConfigLastModified=x", "a"]),
    token=st.sampled_from([None, ADMIN_TOKEN, "wrong-token"]),
    origin=st.sampled_from([None, ORIGIN, "https://evil.example"]),
    if_none_match=st.sampled_from([None, '"1-x"']),
)
def test_the_dispatch_answers_what_the_framework_answers(
    pair: tuple[TestClient[Any], TestClient[Any]],
    method: str,
    path: str,
    body: bytes,
    content_type: str | None,
    query: str,
    token: str | None,
    origin: str | None,
    if_none_match: str | None,
) -> None:
    headers = {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if origin is not None:
        headers["Origin"] = origin
    if if_none_match is not None:
        headers["If-None-Match"] = if_none_match
    target = f"{path}?{query}" if query else path
    dispatched, litestar = pair
    content = body if method != "GET" else None
    ours = dispatched.request(method, target, content=content, headers=headers)
    theirs = litestar.request(method, target, content=content, headers=headers)
    assert ours.status_code == theirs.status_code, (ours.text, theirs.text)
    assert ours.content == theirs.content
    # CORS headers included: the dispatch adds to its answers what the CORS layer adds to
    # Litestar's.
    ours_headers = {k: _same(k, v) for k, v in ours.headers.items()}
    assert ours_headers == {k: _same(k, v) for k, v in theirs.headers.items()}
    if origin == ORIGIN and dispatched_route(path, method) is not None:
        assert ours.headers["access-control-allow-origin"] == ORIGIN
        assert ours.headers["vary"] == "Origin"
    elif origin != ORIGIN:
        assert "access-control-allow-origin" not in ours.headers


def test_the_dispatch_serves_its_routes_without_the_framework(tmp_path: Path) -> None:
    """The happy path and every refusal the dispatch computes never reach Litestar; what it
    cannot read does, with its body replayed."""
    app = create_app(_settings(tmp_path, None))
    reached: list[str] = []

    async def framework(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            reached.append(f"{scope['method']} {scope['path']}")
        await app(scope, receive, send)

    dispatch = EvaluationDispatch(app, MAX_BODY, front=Front(framework, framework))
    token = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with _client(dispatch) as client:
        context = {"context": {"targetingKey": "u1"}}
        for answer, status in (
            (client.post("/ofrep/v1/evaluate/flags/ui-improvements", json=context), 401),
            (
                client.post(
                    "/ofrep/v1/evaluate/flags/ui-improvements", json=context, headers=token
                ),
                200,
            ),
            (client.post("/ofrep/v1/evaluate/flags/nope", json=context, headers=token), 404),
            (client.post("/ofrep/v1/evaluate/flags", json=context, headers=token), 200),
            (
                client.post(
                    "/ofrep/v1/evaluate/flags", json={"context": {"targetingKey": 3}}, headers=token
                ),
                400,
            ),
            (client.get("/v1/evaluate/ui-improvements?targetingKey=u1", headers=token), 200),
        ):
            assert answer.status_code == status, answer.text
        assert reached == []
        refused = client.post(
            "/ofrep/v1/evaluate/flags",
            content=b"{",
            headers={**token, "Content-Type": "application/json"},
        )
        assert refused.status_code == 400
        assert "not valid JSON" in refused.json()["errorDetails"]
        too_large = client.post(
            "/ofrep/v1/evaluate/flags",
            json={"context": {"targetingKey": "x" * MAX_BODY}},
            headers=token,
        )
        assert too_large.status_code == 413
        not_an_object = client.post("/ofrep/v1/evaluate/flags", json={"context": 3}, headers=token)
        assert not_an_object.status_code == 400
        assert reached == ["POST /ofrep/v1/evaluate/flags"] * 3


def test_the_route_table_names_the_litestar_declarations(tmp_path: Path) -> None:
    app: Litestar = create_app(_settings(tmp_path, None))
    for route in DISPATCHED:
        handler = app.get_handler_index_by_name(route.name)
        assert handler is not None
        assert handler["paths"] == [route.path]
        assert route.method in handler["handler"].http_methods
        assert declared_scope(handler["handler"]) == "evaluate"

"""CORS on the evaluation surface only (docs/spec.md section 12): which routes, which origins,
and what a bad ``--cors-origin`` gets. The real browser's view is tests/browser/."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from litestar.testing import TestClient

from flagport_server.asgi import serving_app
from flagport_server.cors import EXPOSED_HEADERS, normalise_origin
from flagport_server.settings import Settings
from flagport_server.surface import evaluation_surface_method
from tests.cli.conftest import run_flags
from tests.support.server import PORTAL_FLAGS, free_port, running_server

ORIGIN = "https://portal.example"


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/ofrep/v1/evaluate/flags", "POST"),
        ("/ofrep/v1/evaluate/flags/ui-improvements", "POST"),
        ("/v1/evaluate/ui-improvements", "GET"),
        ("/v1/stream", "GET"),
        ("/ofrep/v1/evaluate/flags/", None),
        ("/v1/evaluate/", None),
        ("/v1/snapshot", None),
        ("/v1/exposures", None),
        ("/v1/outcomes", None),
        ("/admin/v1/flags", None),
        ("/admin/v1/flags/ui-improvements/disable", None),
        ("/healthz", None),
        ("/metrics", None),
        ("/schema/openapi.json", None),
        ("/v1/streams", None),
    ],
)
def test_only_the_evaluation_surface_answers_cross_origin(path: str, method: str | None) -> None:
    assert evaluation_surface_method(path) == method


@given(st.text(max_size=40))
def test_no_admin_path_is_ever_cross_origin(suffix: str) -> None:
    for prefix in ("/admin/", "/v1/snapshot", "/v1/exposures", "/v1/outcomes", "/stats/"):
        assert evaluation_surface_method(prefix + suffix) is None


@pytest.mark.parametrize(
    ("given_origin", "normalised"),
    [
        ("*", "*"),
        ("https://portal.example", "https://portal.example"),
        ("https://Portal.Example/", "https://portal.example"),
        ("https://portal.example:443", "https://portal.example"),
        ("http://localhost:5173", "http://localhost:5173"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_origins_are_normalised(given_origin: str, normalised: str) -> None:
    assert normalise_origin(given_origin) == normalised


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ("portal.example", "is not an origin"),
        ("ftp://portal.example", "is not an origin"),
        ("https://portal.example/app", "has no path"),
        ("https://user@portal.example", "has no path, query, fragment or user"),
        ("https://portal.example:99999", "port"),
        ("", "is not an origin"),
        ("https://" + "a" * 300, "too long"),
    ],
)
def test_a_bad_origin_is_refused_naming_it(bad: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        normalise_origin(bad)


def test_serve_refuses_a_bad_cors_origin_before_starting(tmp_path: Path) -> None:
    result = run_flags(
        "serve",
        "--port",
        str(free_port()),
        "--cors-origin",
        "https://portal.example/app",
        url=None,
        token=None,
        cwd=tmp_path,
        timeout=20.0,
    )
    assert result.code == 2, str(result)
    assert "--cors-origin" in result.err
    assert "'https://portal.example/app' is not an origin" in result.err
    assert not (tmp_path / "flagport.db").exists()


def test_a_server_marks_answers_for_its_origins_only(tmp_path: Path) -> None:
    with (
        running_server(
            tmp_path,
            seed=PORTAL_FLAGS,
            extra=["--cors-origin", ORIGIN, "--cors-origin", "http://b.test"],
        ) as server,
        httpx.Client(base_url=server.url, timeout=5) as client,
    ):
        body = b'{"context":{"targetingKey":"user-1"}}'
        json_type = {"Content-Type": "application/json"}
        for origin in (ORIGIN, "http://b.test"):
            answer = client.post(
                "/ofrep/v1/evaluate/flags", content=body, headers={**json_type, "Origin": origin}
            )
            assert answer.status_code == 200
            assert answer.headers["access-control-allow-origin"] == origin
            assert answer.headers["vary"] == "Origin"
            exposed = {
                h.strip() for h in answer.headers["access-control-expose-headers"].split(",")
            }
            assert exposed == set(EXPOSED_HEADERS)
        other = client.post(
            "/ofrep/v1/evaluate/flags",
            content=body,
            headers={**json_type, "Origin": "http://c.test"},
        )
        assert other.status_code == 200  # the answer itself; the browser keeps it from the page
        assert "access-control-allow-origin" not in other.headers
        # Errors carry the headers too, so a page can read why (here: a bad context).
        bad = client.post(
            "/ofrep/v1/evaluate/flags", content=b"[]", headers={**json_type, "Origin": ORIGIN}
        )
        assert bad.status_code == 400
        assert bad.headers["access-control-allow-origin"] == ORIGIN
        get = client.get("/v1/evaluate/ui-improvements", headers={"Origin": ORIGIN})
        assert get.headers["access-control-allow-origin"] == ORIGIN
        preflight = client.options(
            "/v1/evaluate/ui-improvements",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"},
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-methods"] == "GET"
        assert "Authorization" in preflight.headers["access-control-allow-headers"]
        assert int(preflight.headers["access-control-max-age"]) > 0
        wrong_method = client.options(
            "/v1/evaluate/ui-improvements",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "DELETE"},
        )
        assert wrong_method.status_code == 403
        assert "access-control-allow-origin" not in wrong_method.headers
        snapshot = client.get("/v1/snapshot", headers={"Origin": ORIGIN})
        assert "access-control-allow-origin" not in snapshot.headers
        admin = client.options(
            "/admin/v1/flags", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
        )
        assert "access-control-allow-origin" not in admin.headers


def test_any_origin(tmp_path: Path) -> None:
    with running_server(tmp_path, seed=PORTAL_FLAGS, extra=["--cors-origin", "*"]) as server:
        answer = httpx.get(
            server.url + "/v1/evaluate/ui-improvements", headers={"Origin": "http://x.test"}
        )
        assert answer.headers["access-control-allow-origin"] == "*"


def test_without_cors_origins_nothing_answers_cross_origin(tmp_path: Path) -> None:
    with (
        running_server(tmp_path, seed=PORTAL_FLAGS) as server,
        httpx.Client(base_url=server.url, timeout=5) as client,
    ):
        for method, path in (
            ("POST", "/ofrep/v1/evaluate/flags"),
            ("POST", "/ofrep/v1/evaluate/flags/ui-improvements"),
            ("GET", "/v1/evaluate/ui-improvements"),
            ("GET", "/v1/stream"),
        ):
            preflight = client.options(
                path, headers={"Origin": ORIGIN, "Access-Control-Request-Method": method}
            )
            assert not [h for h in preflight.headers if h.startswith("access-control-")], path


def _client(app: Any) -> TestClient[Any]:
    with warnings.catch_warnings():  # "localhost might cause issues": a loopback bind wants it
        warnings.simplefilter("ignore")
        return TestClient(app, base_url="http://localhost")


def test_every_answer_on_the_surface_carries_the_headers_whoever_makes_it(tmp_path: Path) -> None:
    """The dispatch's own answers, what it hands on to Litestar (behind the CORS layer), a 405,
    a preflight, and the refusals made before the dispatch (host check, rate limit): each
    carries the CORS headers for an allowed origin, and none does for another origin."""
    settings = Settings(
        store_url=f"sqlite:///{tmp_path / 'flagport.db'}",
        seed_file=str(PORTAL_FLAGS),
        cors_origins=(ORIGIN,),
        rate_limit=1000.0,
        rate_burst=1000,
        stats_flush_interval=60.0,
    )
    assert settings.checks_host  # the default bind is loopback: the host check is on
    json_type = {"Content-Type": "application/json"}
    body = b'{"context":{"targetingKey":"user-1"}}'
    single = "/ofrep/v1/evaluate/flags/ui-improvements"
    with _client(serving_app(settings)) as client:
        client.headers["Origin"] = ORIGIN
        answers = {
            "dispatched": client.post(single, content=body, headers=json_type),
            "handed on (media type)": client.post(
                single, content=body, headers={"Content-Type": "a/b"}
            ),
            "handed on (bad JSON)": client.post(single, content=b"{", headers=json_type),
            "405": client.put(single, content=body, headers=json_type),
            "GET": client.get("/v1/evaluate/ui-improvements?targetingKey=u"),
            "host check (421)": client.post(
                single, content=body, headers={**json_type, "Host": "rebound.example"}
            ),
        }
        statuses = {name: answer.status_code for name, answer in answers.items()}
        assert statuses == {
            "dispatched": 200,
            "handed on (media type)": 400,
            "handed on (bad JSON)": 400,
            "405": 405,
            "GET": 200,
            "host check (421)": 421,
        }
        for name, answer in answers.items():
            assert answer.request.headers["origin"] == ORIGIN, name
            assert answer.headers["access-control-allow-origin"] == ORIGIN, name
            assert answer.headers["vary"] == "Origin", name
        preflight = client.options(
            single, headers={"Access-Control-Request-Method": "POST", "Origin": ORIGIN}
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-methods"] == "POST"
        other = client.post(single, content=body, headers={**json_type, "Origin": "http://x.test"})
        assert "access-control-allow-origin" not in other.headers
        # Off the surface: never, whatever layer answers.
        assert "access-control-allow-origin" not in client.get("/v1/snapshot").headers
    limited = Settings(
        store_url=f"sqlite:///{tmp_path / 'flagport.db'}",
        cors_origins=(ORIGIN,),
        rate_limit=1.0,
        rate_burst=1,
        stats_flush_interval=60.0,
    )
    with _client(serving_app(limited)) as client:
        limited_answers = [
            client.post(single, content=body, headers={**json_type, "Origin": ORIGIN})
            for _ in range(3)
        ]
        refused = limited_answers[-1]
        assert refused.status_code == 429
        assert refused.headers["access-control-allow-origin"] == ORIGIN
        assert "retry-after" in refused.headers

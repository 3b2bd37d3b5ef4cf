"""The admin UI over HTTP against one real server (docs/adr/0026-admin-ui.md): sign-in,
the session cookie, CSRF, the kill switch through the admin service, a viewer's refusals,
escaping, and the monitor's stream. The browser test is tests/ui/test_ui_browser.py."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from flagport_server.app import create_app
from flagport_server.settings import Settings
from tests.support.server import PORTAL_FLAGS, RunningServer, running_server, wait_until
from tests.ui._plans import GUARD, send_breach, start_guarded_plan

KEY = "ui-improvements.dropdown-fixes"
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("ui")
    # The test client is the trusted proxy (X-Forwarded-Proto) of the Secure cookie's test.
    extra = ["--trusted-proxy", "127.0.0.1"]
    with running_server(workdir, seed=PORTAL_FLAGS, extra=extra) as running:
        yield running


def _token(server: RunningServer, name: str, scope: str) -> tuple[str, str]:
    with server.admin() as admin:
        answer = admin.post("/admin/v1/tokens", json={"name": name, "scope": scope})
        assert answer.status_code == 201, answer.text
        body = answer.json()
        return body["secret"], body["token"]["id"]


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]*)"', html)
    assert found is not None, html
    return found.group(1)


@contextmanager
def _signed_in(server: RunningServer, token: str) -> Iterator[httpx.Client]:
    with server.client() as client:
        page = client.get("/ui/sign-in")
        answer = client.post(
            "/ui/sign-in", data={"token": token, "csrf": _csrf(page.text), "next": "/ui/flags"}
        )
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"] == "/ui/flags"
        yield client


def _enabled(server: RunningServer, key: str) -> bool:
    with server.admin() as admin:
        enabled: bool = admin.get(f"/admin/v1/flags/{key}").json()["enabled"]
        return enabled


def test_sign_in_sets_a_strict_session_cookie_and_pages_carry_the_csp(
    server: RunningServer,
) -> None:
    with server.client() as client:
        page = client.get("/ui/sign-in")
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp
        assert "script-src 'self'" in csp
        answer = client.post(
            "/ui/sign-in",
            data={"token": server.admin_token, "csrf": _csrf(page.text), "next": "/ui/flags"},
        )
        cookie = next(
            c for c in answer.headers.get_list("set-cookie") if c.startswith("fp_session=")
        )
        lowered = cookie.lower()
        assert "httponly" in lowered
        assert "samesite=strict" in lowered
        assert "path=/ui" in lowered
        assert "max-age=43200" in lowered
        flags = client.get("/ui/flags")
        assert flags.status_code == 200
        assert KEY in flags.text
        # UI pages are sent compressed to a client that asks; the admin API and the
        # evaluation surface never are.
        assert flags.headers.get("content-encoding") == "gzip"
        for path in ("/admin/v1/flags", "/metrics"):
            plain = client.get(path, headers={**server.admin_headers, "Accept-Encoding": "gzip"})
            assert "content-encoding" not in plain.headers, path
        # Every flag has its evaluations-per-minute sparkline, drawn in the page.
        assert flags.text.count('<svg class="spark"') == flags.text.count('class="flag ')
        # Nothing on the page is fetched from another origin.
        assert not re.search(r'(src|href)="(https?:)?//', flags.text)
        # The admin API never takes the cookie.
        assert client.get("/admin/v1/flags").status_code == 401


def test_a_wrong_token_is_refused_logged_and_rate_limited(server: RunningServer) -> None:
    with server.client() as client:
        page = client.get("/ui/sign-in")
        csrf = _csrf(page.text)
        first = client.post("/ui/sign-in", data={"token": "nope", "csrf": csrf})
        assert first.status_code == 401
        assert "unknown or revoked token" in first.text
        assert 'name="token"' in first.text  # the sign-in page again, saying why
        for _ in range(20):
            answer = client.post("/ui/sign-in", data={"token": "nope", "csrf": csrf})
        assert answer.status_code == 429
        assert "retry in" in answer.text
        assert answer.headers["content-type"].startswith("text/html")
        # The refusal's form signs in on the next try: a valid token always passes.
        retry = client.post(
            "/ui/sign-in", data={"token": server.admin_token, "csrf": _csrf(answer.text)}
        )
        assert retry.status_code == 303
    assert "admin UI sign-in" in server.log()


def test_a_missing_or_wrong_csrf_token_is_refused_and_changes_nothing(
    server: RunningServer,
) -> None:
    with _signed_in(server, server.admin_token) as client:
        for data in ({}, {"csrf": "forged"}):
            answer = client.post(f"/ui/flags/{KEY}/disable", data=data)
            assert answer.status_code in (400, 403), answer.text
        assert _enabled(server, KEY)
    with server.client() as client:  # sign-in without the pre-session cookie's token
        answer = client.post("/ui/sign-in", data={"token": server.admin_token, "csrf": "x"})
        assert answer.status_code == 403
        assert "CSRF" in answer.text


def test_the_kill_switch_disables_through_the_admin_service(server: RunningServer) -> None:
    key = "night-release"
    with server.admin() as admin:
        created = admin.post(
            "/admin/v1/flags", json={"key": key, "enabled": True, "percentage": 100}
        )
        assert created.status_code == 201, created.text
    with server.client() as evaluator:
        before = evaluator.post(
            f"/ofrep/v1/evaluate/flags/{key}", json={"context": {"targetingKey": "u1"}}
        )
        assert before.json()["value"] is True
    with _signed_in(server, server.admin_token) as client:
        page = client.get("/ui/flags")
        assert f'action="/ui/flags/{key}/disable"' in page.text
        answer = client.post(
            f"/ui/flags/{key}/disable",
            data={"csrf": _csrf(page.text), "reason": f"night {HOSTILE}"},
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui/flags"
    assert not _enabled(server, key)
    with server.admin() as admin:
        entry = admin.get("/admin/v1/audit", params={"key": key}).json()["entries"][0]
        assert entry["action"] == "disable"
        assert entry["actor"] == "admin"
    with server.client() as evaluator:

        def off() -> bool:
            answer = evaluator.post(
                f"/ofrep/v1/evaluate/flags/{key}", json={"context": {"targetingKey": "u1"}}
            )
            return answer.json()["value"] is False

        assert wait_until(off, 5.0)
    # The reason shows on the monitor, escaped.
    with _signed_in(server, server.admin_token) as client:
        monitor = client.get("/ui/deployment-monitor").text
        assert "&lt;script&gt;alert(" in monitor
        assert HOSTILE not in monitor


def test_a_viewer_sees_no_buttons_and_its_posts_are_refused(server: RunningServer) -> None:
    secret, _ = _token(server, "night-viewer", "viewer")
    with _signed_in(server, secret) as client:
        page = client.get("/ui/flags")
        assert page.status_code == 200
        assert KEY in page.text
        assert "/disable" not in page.text
        assert "night-viewer (viewer)" in page.text
        answer = client.post(f"/ui/flags/{KEY}/disable", data={"csrf": _csrf(page.text)})
        assert answer.status_code == 403
        assert "only an admin token" in answer.text
        assert "/disable" not in client.get("/ui/deployment-monitor").text
    assert _enabled(server, KEY)


def test_an_sdk_token_may_not_sign_in(server: RunningServer) -> None:
    secret, _ = _token(server, "backend-sdk", "sdk")
    with server.client() as client:
        page = client.get("/ui/sign-in")
        answer = client.post("/ui/sign-in", data={"token": secret, "csrf": _csrf(page.text)})
        assert answer.status_code == 403
        assert "admin or a viewer token" in answer.text


def test_revoking_the_token_ends_its_session_and_sign_in_returns_to_the_page(
    server: RunningServer,
) -> None:
    secret, token_id = _token(server, "short-lived", "viewer")
    with _signed_in(server, secret) as client:
        assert client.get("/ui/deployment-monitor").status_code == 200
        with server.admin() as admin:
            assert admin.delete(f"/admin/v1/tokens/{token_id}").status_code == 200

        def gone() -> bool:
            return client.get("/ui/deployment-monitor").status_code == 303

        assert wait_until(gone, 5.0)
        answer = client.get("/ui/deployment-monitor")
        assert answer.headers["location"] == "/ui/sign-in?next=%2Fui%2Fdeployment-monitor"
        assert (
            'name="next" value="/ui/deployment-monitor"'
            in client.get(answer.headers["location"]).text
        )


def test_rotating_the_token_ends_the_sessions_of_its_old_secret(server: RunningServer) -> None:
    """A leaked secret's holder signed in; the owner rotates the token (the documented
    answer to a leak): the old secret's session is over, the new secret signs in."""
    secret, token_id = _token(server, "leaked", "admin")
    with _signed_in(server, secret) as client:
        assert client.get("/ui/flags").status_code == 200
        with server.admin() as admin:
            rotated = admin.post(f"/admin/v1/tokens/{token_id}/rotate", json={})
            assert rotated.status_code == 200, rotated.text

        def gone() -> bool:
            return client.get("/ui/flags").status_code == 303

        assert wait_until(gone, 5.0)
    with _signed_in(server, rotated.json()["secret"]) as client:
        assert client.get("/ui/flags").status_code == 200


def test_changing_the_admin_token_ends_the_bootstrap_sessions(tmp_path: Path) -> None:
    """A session of the bootstrap token outlives a restart with the same admin token, not
    one with another (what an operator does when that token leaked)."""
    with running_server(tmp_path) as first, _signed_in(first, first.admin_token) as client:
        cookie = client.cookies["fp_session"]

    def flags_page(env: dict[str, str]) -> int:
        with running_server(tmp_path, env=env) as again, again.client() as browser:
            browser.cookies.set("fp_session", cookie, path="/ui")
            return browser.get("/ui/flags").status_code

    assert flags_page({}) == 200
    assert flags_page({"FLAGPORT_ADMIN_TOKEN": "fpa_" + "changed-after-a-leak" * 2}) == 303


def test_a_forged_or_expired_session_goes_back_to_sign_in(server: RunningServer) -> None:
    with _signed_in(server, server.admin_token) as client:
        value = client.cookies["fp_session"]
        token_id, expires, mac = value.split(".")
        for forged in (f"{token_id}.{int(expires) + 1}.{mac}", f"{token_id}.1.{mac}", "x" * 500):
            client.cookies.set("fp_session", forged, path="/ui")
            assert client.get("/ui/flags").status_code == 303


def test_descriptions_are_escaped(server: RunningServer) -> None:
    with server.admin() as admin:
        created = admin.post(
            "/admin/v1/flags",
            json={"key": "escape-check", "description": HOSTILE, "tags": ["t"], "owner": HOSTILE},
        )
        assert created.status_code == 201, created.text
    with _signed_in(server, server.admin_token) as client:
        page = client.get("/ui/flags").text
        assert HOSTILE not in page
        assert "&lt;img src=x onerror=alert(1)&gt;" in page
        monitor = client.get("/ui/deployment-monitor").text
        assert "escape-check" in monitor
        assert HOSTILE not in monitor


def _fragments(lines: Iterator[str]) -> Iterator[str]:
    """The data of each server-sent event (its ``data:`` lines joined)."""
    data: list[str] = []
    for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif not line and data:
            yield "\n".join(data)
            data = []


def test_the_monitor_streams_a_fragment_on_change(server: RunningServer) -> None:
    key = "ui-improvements.mobile-navigation-fix"
    with _signed_in(server, server.admin_token) as client:
        page = client.get("/ui/flags")
        with client.stream("GET", "/ui/deployment-monitor/events", timeout=10.0) as events:
            assert events.headers["content-type"].startswith("text/event-stream")
            fragments = _fragments(events.iter_lines())
            first = next(fragments)
            kill = f'action="/ui/flags/{key}/disable"'
            assert "Health" in first
            assert kill in first
            client.post(f"/ui/flags/{key}/disable", data={"csrf": _csrf(page.text)})
            started = time.monotonic()
            changed = next(fragments)
            # Pushed on the change, not at the next heartbeat (5 s).
            assert f'id="monitor-{key}"' in changed
            assert kill not in changed
            assert time.monotonic() - started < 3.0


def test_sign_in_off_loopback_over_plain_http_is_refused(tmp_path: Path) -> None:
    from litestar.testing import TestClient

    settings = Settings(
        store_url=f"sqlite:///{tmp_path / 'flagport.db'}",
        admin_token="t" * 32,
        host="0.0.0.0",
        driver=False,
    )
    with TestClient(create_app(settings), base_url="http://flagport.example") as client:
        page = client.get("/ui/sign-in")
        assert "refused over plain HTTP" in page.text
        assert "TLS" in page.text
        answer = client.post("/ui/sign-in", data={"token": "t" * 32, "csrf": "x"})
        assert answer.status_code == 403
        assert "refused over plain HTTP" in answer.text
    no_ui = create_app(
        Settings(store_url=f"sqlite:///{tmp_path / 'other.db'}", admin_token="t" * 32, ui=False)
    )
    assert not [route for route in no_ui.routes if route.path.startswith("/ui")]


def test_the_monitor_shows_a_plan_with_each_guard_reading_per_cohort(
    server: RunningServer,
) -> None:
    with server.admin() as admin:
        created = admin.post("/admin/v1/flags", json={"key": "guarded-checkout"})
        assert created.status_code == 201, created.text
        started = admin.post(
            "/admin/v1/rollouts",
            json={"key": "guarded-checkout", "guards": ["error_rate > 5% over 5m"], "hold": "1h"},
        )
        assert started.status_code == 201, started.text
        # A flag changed after the plan started: still below the plan's flag.
        changed = admin.post("/admin/v1/flags", json={"key": "changed-later"})
        assert changed.status_code == 201, changed.text
    with _signed_in(server, server.admin_token) as client:
        page = client.get("/ui/deployment-monitor")
        assert page.status_code == 200
        order = re.findall(r'id="monitor-([^"]+)"', page.text)
        assert order[0] == "guarded-checkout", order  # flags under a plan first
        assert order.index("changed-later") < order.index("ui-improvements"), order
        section = page.text.split('id="monitor-guarded-checkout"', 1)[1].split("</section>")[0]
        assert re.search(r"Plan (scheduled|running), step \d of 4", section), section
        assert "error_rate &gt; 5% over 5m" in section
        assert "<th>Treatment (n)</th>" in section
        assert "not enough data" in section
        assert "admin: plan-create" in section
    # Once the driver runs the plan, the outcome signals fill the cohort table.
    with server.admin() as admin:

        def running() -> bool:
            status = admin.get("/admin/v1/rollouts/guarded-checkout").json()["status"]
            return bool(status == "running")

        assert wait_until(running, 10.0)
    now = time.time()
    items = [
        _outcome("on", "treatment", requests=40, failures=4),
        _outcome("off", "control", requests=60, failures=0),
    ]
    with server.client() as sdk:
        posted = sdk.post("/v1/outcomes", json={"period": [now - 1, now], "items": items})
        assert posted.status_code in (200, 202), posted.text
    with _signed_in(server, server.admin_token) as client:

        def table() -> str:
            text = client.get("/ui/deployment-monitor").text
            return text.split('id="monitor-guarded-checkout"', 1)[1].split("</section>")[0]

        assert wait_until(lambda: "10.00 %" in table(), 10.0), table()
        rows = re.findall(r'<tr class="(treatment|control)"><td>\w+</td><td>(\d+)</td>', table())
        assert rows == [("treatment", "40"), ("control", "60")]
        assert "0.00 %" in table()
        # Pause and resume from the card: the plan service's transitions, audited.
        action = 'action="/ui/rollouts/guarded-checkout/pause"'
        assert action in table()
        paused = client.post("/ui/rollouts/guarded-checkout/pause", data={"csrf": _csrf(table())})
        assert paused.status_code == 303, paused.text
        assert _plan_status(server, "guarded-checkout") == "paused"
        assert 'action="/ui/rollouts/guarded-checkout/resume"' in table()
        wrong = client.post("/ui/rollouts/guarded-checkout/launch", data={"csrf": _csrf(table())})
        assert wrong.status_code == 404
        resumed = client.post("/ui/rollouts/guarded-checkout/resume", data={"csrf": _csrf(table())})
        assert resumed.status_code == 303, resumed.text
        assert _plan_status(server, "guarded-checkout") == "running"
    viewer, _ = _token(server, "plan-viewer", "viewer")
    with _signed_in(server, viewer) as client:
        page = client.get("/ui/deployment-monitor").text
        assert "/ui/rollouts/guarded-checkout/" not in page  # no buttons for a viewer
        refused = client.post("/ui/rollouts/guarded-checkout/pause", data={"csrf": _csrf(page)})
        assert refused.status_code == 403
        assert _plan_status(server, "guarded-checkout") == "running"


def _plan_status(server: RunningServer, key: str) -> str:
    with server.admin() as admin:
        status: str = admin.get(f"/admin/v1/rollouts/{key}").json()["status"]
        return status


def _outcome(variant: str, cohort: str, *, requests: int, failures: int) -> dict[str, object]:
    """Requests served in ``cohort``, all in the 25-50 ms latency bucket."""
    return {
        "key": "guarded-checkout",
        "variant": variant,
        "cohort": cohort,
        "requests": requests,
        "failures": failures,
        "latency_ms_sum": 40.0 * requests,
        "latency_buckets": [0, 0, 0, requests] + [0] * 9,
    }


def test_sign_out_ends_the_session(server: RunningServer) -> None:
    with _signed_in(server, server.admin_token) as client:
        page = client.get("/ui/flags")
        answer = client.post("/ui/sign-out", data={"csrf": _csrf(page.text)})
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui/sign-in"
        assert "fp_session" not in client.cookies
        assert client.get("/ui/flags").status_code == 303


@pytest.mark.parametrize(("forwarded", "secure"), [(None, False), ("https", True)])
def test_the_cookie_is_secure_when_a_trusted_proxy_terminated_tls(
    server: RunningServer, forwarded: str | None, secure: bool
) -> None:
    headers = {"X-Forwarded-Proto": forwarded} if forwarded else {}
    with server.client(headers=headers) as client:
        page = client.get("/ui/sign-in")
        # httpx sends no Secure cookie over plain HTTP: sent by hand, as the browser would
        # over the proxy's HTTPS.
        nonce = page.cookies["fp_presession"]
        answer = client.post(
            "/ui/sign-in",
            data={"token": server.admin_token, "csrf": _csrf(page.text)},
            headers={"Cookie": f"fp_presession={nonce}"},
        )
        assert answer.status_code == 303, answer.text
        cookie = next(
            c for c in answer.headers.get_list("set-cookie") if c.startswith("fp_session=")
        )
        assert ("secure" in cookie.lower().split("; ")) is secure


#: The UI routes anyone may open: the sign-in form, its redirect and the stylesheet/script.
PUBLIC_UI = {"GET /ui", "GET /ui/static/{name:str}", "GET /ui/sign-in", "POST /ui/sign-in"}


def test_every_other_ui_route_needs_a_session(tmp_path: Path) -> None:
    """Whatever route a later change adds under /ui, without a session it is sent to sign-in
    (a page) or refused (a change), and nothing changes."""
    admin_token = "ui-routes-admin-token-0123456789abcdef"
    settings = Settings(
        store_url=f"sqlite:///{tmp_path / 'flagport.db'}",
        seed_file=str(PORTAL_FLAGS),
        admin_token=admin_token,
        driver=False,
    )
    app = create_app(settings)
    routes = {
        f"{method} {route.path}"
        for route in app.routes
        if route.path == "/ui" or route.path.startswith("/ui/")
        for method in route.methods - {"HEAD", "OPTIONS"}
    }
    assert routes >= PUBLIC_UI, routes
    guarded = sorted(routes - PUBLIC_UI)
    assert "POST /ui/flags/{key:str}/disable" in guarded
    with _in_process(app) as client:
        for label in guarded:
            method, path = label.split(" ")
            answer = client.request(method, path.replace("{key:str}", KEY), follow_redirects=False)
            if method == "GET":
                assert answer.status_code == 303, (label, answer.status_code)
                assert answer.headers["location"].startswith("/ui/sign-in"), label
            else:
                assert answer.status_code in (303, 403), (label, answer.status_code)
        flag = client.get(
            f"/admin/v1/flags/{KEY}", headers={"Authorization": f"Bearer {admin_token}"}
        )
        assert flag.json()["enabled"] is True  # the disable above changed nothing


@contextmanager
def _in_process(app: Any) -> Iterator[Any]:
    from litestar.testing import TestClient

    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client


def test_the_flags_page_filters_by_text_and_tag_keeping_the_tree(server: RunningServer) -> None:
    with _signed_in(server, server.admin_token) as client:
        everything = client.get("/ui/flags").text
        assert 'id="flag-performance-monitoring"' in everything
        dropdown = client.get("/ui/flags", params={"q": "DROPDOWN"}).text
        assert 'id="flag-ui-improvements.dropdown-fixes"' in dropdown
        assert 'id="flag-ui-improvements"' in dropdown  # its parent, to keep its place
        assert 'id="flag-ui-improvements.mobile-navigation-fix"' not in dropdown
        assert 'id="flag-performance-monitoring"' not in dropdown
        tagged = client.get("/ui/flags", params={"tag": "release-2026-12"}).text
        assert 'id="flag-ui-improvements"' in tagged
        assert 'id="flag-ui-improvements.dropdown-fixes"' not in tagged
        # The filter is shown back escaped, and anything too long is cut, never an error.
        hostile = client.get("/ui/flags", params={"q": HOSTILE + "x" * 500, "tag": "<b>"})
        assert hostile.status_code == 200
        assert "<script>alert" not in hostile.text
        assert "&lt;script&gt;" in hostile.text


def test_an_automatic_rollback_shows_its_evidence(server: RunningServer) -> None:
    key = "guarded-rollback"
    start_guarded_plan(server, key)
    assert wait_until(lambda: _plan_status(server, key) == "running", 10.0)
    send_breach(server, key)
    assert wait_until(lambda: _plan_status(server, key) == "paused", 10.0)
    with _signed_in(server, server.admin_token) as client:
        page = client.get("/ui/deployment-monitor").text
        card = page.split(f'id="monitor-{key}"', 1)[1].split("</section>")[0]
        assert "plan-rollback" in card, card
        evidence = card.split('<details class="evidence">', 1)[1].split("</details>")[0]
        assert html.escape(GUARD) in evidence, evidence
        assert "treatment" in evidence


def test_the_rollouts_page_shows_every_plan_its_next_step_and_the_driver_evidence(
    server: RunningServer,
) -> None:
    """Every plan, live first: its steps with the current one marked, the time to its next
    move, each guard against its threshold, pause / resume / abort coming back to this page,
    and for a plan the driver rolled back its evidence; a finished plan under "Finished"."""
    live, rolled_back = "rollouts-live", "rollouts-rolled-back"
    with server.admin() as admin:
        created = admin.post("/admin/v1/flags", json={"key": live})
        assert created.status_code == 201, created.text
        started = admin.post(
            "/admin/v1/rollouts",
            json={"key": live, "steps": "10,25,50,100", "hold": "1h", "guards": [GUARD]},
        )
        assert started.status_code == 201, started.text
    start_guarded_plan(server, rolled_back)
    assert wait_until(lambda: _plan_status(server, live) == "running", 10.0)
    assert wait_until(lambda: _plan_status(server, rolled_back) == "running", 10.0)
    send_breach(server, rolled_back)
    # The driver rolls back (the flag off) and pauses the plan for a person to look.
    assert wait_until(lambda: _plan_status(server, rolled_back) == "paused", 10.0)

    def card(page: str, key: str) -> str:
        return page.split(f'id="rollout-{key}"', 1)[1].split("</section>", maxsplit=1)[0]

    with _signed_in(server, server.admin_token) as client:
        page = client.get("/ui/rollouts")
        assert page.status_code == 200, page.text
        assert '<a href="/ui/rollouts" aria-current="page">' in page.text
        order = re.findall(r'id="rollout-([^"]+)"', page.text)
        assert order.index(live) < order.index(rolled_back), order  # running before paused
        running = card(page.text, live)
        steps = re.findall(r"<li( [^>]*)?>(\d+)\u202f%</li>", running)
        assert [pct for _, pct in steps] == ["10", "25", "50", "100"]
        assert 'aria-current="step"' in steps[0][0]
        # The hold is an hour: the next step, to 25 %, is that far away.
        found = re.search(r"Next: step to 25\u202f% in <strong>(\w+)</strong>", running)
        assert found is not None, running
        assert found.group(1) == "1h" or found.group(1).startswith("59m"), found.group(1)
        assert html.escape(GUARD) in running
        assert "not enough data" in running
        # The driver's rollback, with the evidence it acted on.
        rolled = card(page.text, rolled_back)
        assert "driver: plan-rollback" in rolled
        assert "Automatic actions" in rolled
        evidence = rolled.split('<details class="evidence">', 1)[1].split("</details>")[0]
        assert html.escape(GUARD) in evidence
        assert "treatment" in evidence
        # Pause, and abort, come back to this page.
        paused = client.post(
            f"/ui/rollouts/{live}/pause", data={"csrf": _csrf(running), "back": "rollouts"}
        )
        assert paused.status_code == 303
        assert paused.headers["location"] == "/ui/rollouts"
        assert _plan_status(server, live) == "paused"
        page = client.get("/ui/rollouts")
        assert f'action="/ui/rollouts/{live}/resume"' in card(page.text, live)
        assert "Next:" not in card(page.text, live)  # a paused plan waits for a person
        wrong_back = client.post(
            f"/ui/rollouts/{live}/resume", data={"csrf": _csrf(page.text), "back": "//evil"}
        )
        assert wrong_back.status_code == 400
        assert _plan_status(server, live) == "paused"  # the refused form changed nothing
        aborted = client.post(
            f"/ui/rollouts/{rolled_back}/abort", data={"csrf": _csrf(page.text), "back": "rollouts"}
        )
        assert aborted.status_code == 303
        assert aborted.headers["location"] == "/ui/rollouts"
        finished = client.get("/ui/rollouts").text.split("<h2>Finished</h2>", 1)[1]
        assert f'id="rollout-{rolled_back}"' in finished
        ended = card(finished, rolled_back)
        assert "aborted" in ended
        assert "driver: plan-rollback" in ended
        assert f"/ui/rollouts/{rolled_back}/" not in ended  # nothing to pause when finished
    viewer, _ = _token(server, "rollouts-viewer", "viewer")
    with _signed_in(server, viewer) as client:
        page = client.get("/ui/rollouts").text
        assert f'id="rollout-{live}"' in page
        assert "<button" not in page.split("<main>", 1)[1]  # no buttons for a viewer
        refused = client.post(f"/ui/rollouts/{live}/resume", data={"csrf": _csrf(page)})
        assert refused.status_code == 403
        assert _plan_status(server, live) == "paused"


def test_children_are_collapsed_under_their_parent_unless_a_filter_narrows(
    server: RunningServer,
) -> None:
    with _signed_in(server, server.admin_token) as client:
        page = client.get("/ui/flags").text
        assert re.search(r'<details class="children">\s*<summary>\d+ under ui-improvements<', page)
        narrowed = client.get("/ui/flags", params={"q": "dropdown"}).text
        assert '<details class="children" open>' in narrowed

"""The published OpenFeature web provider against a real Flagport, in Debian's Chromium.

The page (``page.html``) lives on another origin than the server and loads
``@openfeature/web-sdk`` with ``@openfeature/ofrep-web-provider`` exactly as published on npm
(bundled by ``bundle/build.sh``, pinned in ``bundle/package-lock.json``). It proves, with the
real client rather than our reading of it (docs/spec.md section 12):

- the provider becomes READY through CORS, and every flag's value, variant, reason and error
  code equal the engine's in the same test, for a signed-in and an anonymous visitor;
- polls send ``If-None-Match`` (the page can read ``ETag``) and are answered 304;
- ``flags disable ui-improvements`` reaches the page through the change stream within 1 s and
  fires ``PROVIDER_CONFIGURATION_CHANGED`` naming the flag;
- the console shows no CORS error.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

import flagport
from tests.support.browser import launched_chromium
from tests.support.http_server import serving
from tests.support.server import (
    PORTAL_FLAGS,
    RunningServer,
    flags_executable,
    running_server,
)

HERE = Path(__file__).resolve().parent
BUNDLE = HERE / "vendor" / "openfeature-web.js"
PAGE = HERE / "page.html"

#: Flags beyond the portal's that are not plain booleans: a string flag served to everyone,
#: and a number flag split by percentage (which an anonymous visitor cannot be bucketed into).
EXTRA_FLAGS: list[dict[str, Any]] = [
    {
        "key": "checkout-theme",
        "enabled": True,
        "percentage": 100,
        "variants": {"on": "midnight", "off": "classic"},
    },
    {
        "key": "search-page-size",
        "enabled": True,
        "percentage": 50,
        "variants": {"on": 50, "off": 20},
    },
]
SIGNED_IN = {"targetingKey": "user-4242", "company_id": 7, "role": "member"}
ANONYMOUS = {"company_id": 7}


@contextmanager
def page_origin() -> Iterator[str]:
    """Serve the page and the bundle on another port: another origin than the server's."""
    files = {"/": (PAGE, "text/html"), "/openfeature-web.js": (BUNDLE, "text/javascript")}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = files.get(self.path.split("?")[0])
            if found is None:
                self.send_error(404)
                return
            body = found[0].read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", found[1])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with serving(Handler) as url:
        # "localhost" for the page, 127.0.0.1 for Flagport: two origins on one machine.
        yield url.replace("127.0.0.1", "localhost")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launched_chromium() as launched:
        yield launched


@pytest.fixture
def origin() -> Iterator[str]:
    with page_origin() as served:
        yield served


def add_flags(server: RunningServer) -> dict[str, str]:
    """Create the extra flags and start the runbook (10 %); the JS type of every flag."""
    with server.admin(timeout=10) as admin:
        for flag in EXTRA_FLAGS:
            assert admin.post("/admin/v1/flags", json=flag).status_code == 201
        enabled = admin.post("/admin/v1/flags/ui-improvements/enable", json={"percentage": 10})
        assert enabled.status_code == 200, enabled.text
        listed = admin.get("/admin/v1/flags").json()
    flags = listed["flags"] if isinstance(listed, dict) else listed
    types = {flag["key"]: "boolean" for flag in flags}
    types["checkout-theme"] = "string"
    types["search-page-size"] = "number"
    return types


def evaluate_token(server: RunningServer) -> str:
    """The secret of a new ``evaluate`` token: what a page may hold."""
    with server.admin(timeout=10) as admin:
        made = admin.post("/admin/v1/tokens", json={"name": "portal-page", "scope": "evaluate"})
    assert made.status_code == 201, made.text
    return str(made.json()["secret"])


def engine_answers(server: RunningServer, types: dict[str, str], context: dict[str, Any]) -> Any:
    """What the engine serves for each flag, as the web SDK reports it (a default on error)."""
    defaults = {"boolean": False, "string": "", "number": 0}
    client = flagport.LocalClient(server.url, report_exposures=False, stream=False)
    try:
        assert client.wait_ready(10)
        answers = {}
        for key, kind in types.items():
            result = client.evaluate(key, context)
            error = result.error_code.value if result.error_code is not None else None
            answers[key] = {
                "value": defaults[kind] if error else result.value,
                "variant": None if error else result.variant,
                "reason": "ERROR" if error else result.reason.value,
                "errorCode": error,
            }
        return answers
    finally:
        client.close()


class PageWatch:
    """A page on the test origin, with what its console and network said."""

    def __init__(self, browser: Any, origin: str, server: RunningServer) -> None:
        self.page = browser.new_page()
        self.console_errors: list[str] = []
        self.bulk_statuses: list[tuple[int, str | None]] = []
        self.page.on(
            "console",
            lambda message: (
                self.console_errors.append(message.text) if message.type == "error" else None
            ),
        )
        self.page.on("pageerror", lambda error: self.console_errors.append(str(error)))
        bulk = server.url + "/ofrep/v1/evaluate/flags"

        def on_response(response: Any) -> None:
            if response.url == bulk and response.request.method == "POST":
                sent = response.request.headers.get("if-none-match")
                self.bulk_statuses.append((response.status, sent))

        self.page.on("response", on_response)
        self.page.goto(origin + "/")

    def start(self, options: dict[str, Any], context: dict[str, Any]) -> str:
        return str(self.page.evaluate("([o, c]) => window.startFlags(o, c)", [options, context]))

    def read(self, types: dict[str, str]) -> Any:
        return self.page.evaluate("(types) => window.readFlags(types)", types)

    def wait_for(self, predicate: Any, timeout: float = 5.0) -> bool:
        """Wait, letting the page run: Playwright delivers the page's network and console
        events to Python only while Python calls into it, never during a plain sleep."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            self.page.wait_for_timeout(10)
        return bool(predicate())

    def heard_change(self, key: str, since: int) -> bool:
        """Whether a ``PROVIDER_CONFIGURATION_CHANGED`` naming ``key`` fired after the
        first ``since`` events."""
        return any(
            event["event"] == "ConfigurationChanged" and key in (event["flagsChanged"] or [])
            for event in self.events()[since:]
        )

    def events(self) -> list[dict[str, Any]]:
        return list(self.page.evaluate("() => window.events"))

    def cors_errors(self) -> list[str]:
        return [
            text
            for text in self.console_errors
            if "CORS" in text or "Access-Control" in text or "cross-origin" in text.lower()
        ]


def disable(server: RunningServer, key: str) -> None:
    done = subprocess.run(
        [flags_executable(), "--url", server.url, "disable", key],
        env={**os.environ, "FLAGPORT_ADMIN_TOKEN": server.admin_token},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_published_web_provider_reads_flags_and_follows_the_kill_switch(
    browser: Any, origin: str, tmp_path: Path
) -> None:
    with running_server(tmp_path, seed=PORTAL_FLAGS, extra=["--cors-origin", origin]) as server:
        types = add_flags(server)
        watch = PageWatch(browser, origin, server)
        options = {"baseUrl": server.url, "cacheMode": "disabled"}
        assert watch.start(options, SIGNED_IN) == "READY"
        assert watch.read(types) == engine_answers(server, types, SIGNED_IN)
        assert watch.bulk_statuses[0][0] == 200

        # The change stream: the kill switch reaches the page, naming the flag.
        assert watch.wait_for(lambda: any(e["event"] == "Ready" for e in watch.events()))
        before = len(watch.events())
        disable(server, "ui-improvements")
        disabled_at = time.monotonic()

        assert watch.wait_for(lambda: watch.heard_change("ui-improvements", before))
        assert time.monotonic() - disabled_at <= 1.0
        after = watch.read(types)
        assert after["ui-improvements"]["value"] is False
        assert after == engine_answers(server, types, SIGNED_IN)
        assert watch.cors_errors() == []


def test_an_anonymous_visitor_gets_every_flag_that_needs_no_unit(
    browser: Any, origin: str, tmp_path: Path
) -> None:
    with running_server(tmp_path, seed=PORTAL_FLAGS, extra=["--cors-origin", origin]) as server:
        types = add_flags(server)
        watch = PageWatch(browser, origin, server)
        assert watch.start({"baseUrl": server.url, "cacheMode": "disabled"}, ANONYMOUS) == "READY"
        answers = watch.read(types)
        assert answers == engine_answers(server, types, ANONYMOUS)
        # Served to everyone alike: a value; a percentage split needs a unit: its own error.
        assert answers["checkout-theme"]["value"] == "midnight"
        assert answers["search-page-size"]["errorCode"] == "TARGETING_KEY_MISSING"
        assert answers["auth-improvements"] == {
            "value": False,
            "variant": "off",
            "reason": "DISABLED",
            "errorCode": None,
        }
        assert watch.cors_errors() == []


def test_polls_revalidate_and_are_answered_not_modified(
    browser: Any, origin: str, tmp_path: Path
) -> None:
    with running_server(tmp_path, seed=PORTAL_FLAGS, extra=["--cors-origin", origin]) as server:
        types = add_flags(server)
        watch = PageWatch(browser, origin, server)
        options = {
            "baseUrl": server.url,
            "cacheMode": "disabled",
            "changeDetection": "polling",
            "pollInterval": 200,
        }
        assert watch.start(options, SIGNED_IN) == "READY"
        assert watch.wait_for(lambda: len(watch.bulk_statuses) >= 4), watch.bulk_statuses
        first, *polls = watch.bulk_statuses
        assert first == (200, None)
        # Every poll sends the ETag the page read, and nothing changed: 304 each time, and
        # no spurious change event.
        assert all(status == 304 and etag for status, etag in polls), polls
        assert not [e for e in watch.events() if e["event"] == "ConfigurationChanged"]
        assert watch.read(types) == engine_answers(server, types, SIGNED_IN)
        assert watch.cors_errors() == []


def test_other_origins_and_routes_get_no_cross_origin_answer(
    browser: Any, origin: str, tmp_path: Path
) -> None:
    with running_server(tmp_path, seed=PORTAL_FLAGS, extra=["--cors-origin", origin]) as server:
        preflight = {
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        }
        with httpx.Client(base_url=server.url, timeout=5) as client:
            allowed = client.options("/ofrep/v1/evaluate/flags", headers=preflight)
            assert allowed.status_code == 204
            assert allowed.headers["access-control-allow-origin"] == origin
            refused = client.options(
                "/ofrep/v1/evaluate/flags", headers={**preflight, "Origin": "http://evil.example"}
            )
            assert refused.status_code == 403
            assert "access-control-allow-origin" not in refused.headers
            for path in ("/v1/snapshot", "/admin/v1/flags", "/v1/exposures"):
                answer = client.options(path, headers=preflight)
                assert "access-control-allow-origin" not in answer.headers, path
        # The browser itself refuses a page's read of the snapshot.
        watch = PageWatch(browser, origin, server)
        outcome = watch.page.evaluate(
            "(url) => fetch(url).then(() => 'read', () => 'refused')", server.url + "/v1/snapshot"
        )
        assert outcome == "refused"


def test_an_evaluate_token_on_a_server_that_requires_tokens(
    browser: Any, origin: str, tmp_path: Path
) -> None:
    """A page on a token server holds an ``evaluate`` token (sent as ``Authorization``, so
    preflighted): the provider is READY, polls get 304s, and the same token cannot read the
    configuration."""
    extra = ["--require-eval-token", "--cors-origin", origin]
    with running_server(tmp_path, seed=PORTAL_FLAGS, extra=extra) as server:
        token = evaluate_token(server)
        watch = PageWatch(browser, origin, server)
        options = {
            "baseUrl": server.url,
            "cacheMode": "disabled",
            "changeDetection": "polling",
            "pollInterval": 200,
            "headers": [["Authorization", f"Bearer {token}"]],
        }
        assert watch.start(options, SIGNED_IN) == "READY"
        assert watch.wait_for(lambda: len(watch.bulk_statuses) >= 4), watch.bulk_statuses
        first, *polls = watch.bulk_statuses
        assert first[0] == 200
        assert all(status == 304 for status, _ in polls), polls
        feed = httpx.get(
            server.url + "/v1/snapshot", headers={"Authorization": f"Bearer {token}"}, timeout=5
        )
        assert feed.status_code == 403
        assert watch.cors_errors() == []


def test_on_a_token_server_the_stream_opens_with_a_server_minted_ticket(
    browser: Any, origin: str, tmp_path: Path
) -> None:
    """The same kill switch on a server that requires tokens: the page holds an ``evaluate``
    token, the bulk answer's stream URL carries a ticket EventSource can open, and ``flags
    disable`` reaches the page through it within 1 s."""
    extra = ["--require-eval-token", "--cors-origin", origin]
    with running_server(tmp_path, seed=PORTAL_FLAGS, extra=extra) as server:
        types = add_flags(server)
        token = evaluate_token(server)
        streams: list[tuple[str, int]] = []
        watch = PageWatch(browser, origin, server)
        watch.page.on(
            "response",
            lambda response: (
                streams.append((response.url, response.status))
                if "/v1/stream" in response.url
                else None
            ),
        )
        options = {
            "baseUrl": server.url,
            "cacheMode": "disabled",
            "headers": [["Authorization", f"Bearer {token}"]],
        }
        assert watch.start(options, SIGNED_IN) == "READY"
        assert watch.wait_for(lambda: bool(streams)), streams
        url, status = streams[0]
        assert "ticket=" in url
        assert token not in url  # the ticket stands in for the token, never carries it
        assert status == 200
        before = len(watch.events())
        disable(server, "ui-improvements")
        disabled_at = time.monotonic()

        assert watch.wait_for(lambda: watch.heard_change("ui-improvements", before))
        assert time.monotonic() - disabled_at <= 1.0
        assert watch.read(types)["ui-improvements"]["value"] is False
        assert watch.cors_errors() == []

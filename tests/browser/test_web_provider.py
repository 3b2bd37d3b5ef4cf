"""The published OpenFeature web SDK and OFREP web provider (pinned from npm, bundled with
esbuild into ``vendor/``; ``js/`` rebuilds it) on a page served from another origin, in
Debian's Chromium: the provider becomes READY through CORS; its values, variants and reasons
are the engine's for a signed-in and an anonymous visitor; its polls are 304s; ``flags disable``
reaches the page through the change stream within 1 s as ``PROVIDER_CONFIGURATION_CHANGED``
naming the flag; and the console shows no CORS error.
"""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flagport.document import load_document
from flagport.engine import CompiledSnapshot, compile_snapshot
from tests.support.browser import chromium
from tests.support.server import (
    ADMIN_TOKEN,
    PORTAL_FLAGS,
    RunningServer,
    flags_executable,
    free_port,
    running_server,
)

VENDOR = Path(__file__).with_name("vendor")
BUNDLE = "openfeature-ofrep-web.js"
PAGE = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>portal</title>
<script type="module" src="/{BUNDLE}"></script></head><body>portal</body></html>
"""
SIGNED_IN = {"targetingKey": "42", "company_id": "7", "role": "admin"}
ANONYMOUS: dict[str, Any] = {"company_id": "7"}
BULK = "/ofrep/v1/evaluate/flags"
CANARY = "/admin/v1/flags/ui-improvements/enable"
_TYPES = {bool: "boolean", str: "string", int: "number", float: "number", dict: "object"}


@pytest.fixture(scope="module")
def page_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The portal's pages: another origin (another port) than Flagport's."""
    root = tmp_path_factory.mktemp("page")
    (root / "index.html").write_text(PAGE)
    (root / BUNDLE).write_bytes((VENDOR / BUNDLE).read_bytes())
    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
    }

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def flagport(tmp_path_factory: pytest.TempPathFactory, page_server: str) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("flagport")
    extra = ["--cors-origin", page_server]
    with running_server(workdir, seed=PORTAL_FLAGS, extra=extra) as server:
        # The portal's canary: 10 % of users, so a visitor without a unit meets flags that
        # need one (the three UI fixes under it) beside flags that do not.
        with server.admin(timeout=10.0) as admin:
            assert admin.post(CANARY, json={"percentage": 10}).status_code == 200
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def engine(flagport: RunningServer) -> CompiledSnapshot:
    """The engine on the server's configuration as it is now (its export)."""
    with flagport.admin(timeout=10.0) as admin:
        exported = admin.get("/admin/v1/snapshot", params={"format": "json"})
    assert exported.status_code == 200, exported.text
    return compile_snapshot(load_document(exported.content))


class Page:
    """One browser page of the portal, with what it logged and what it asked Flagport."""

    def __init__(self, browser: Any, url: str) -> None:
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.console: list[str] = []
        self.bulk_statuses: list[int] = []
        self.page.on("console", lambda message: self.console.append(message.text))
        self.page.on("pageerror", lambda error: self.console.append(str(error)))
        self.page.on(
            "response",
            lambda answer: (
                self.bulk_statuses.append(answer.status)
                if answer.url.split("?")[0].endswith(BULK) and answer.request.method == "POST"
                else None
            ),
        )
        self.page.goto(url)
        self.page.wait_for_function("() => window.flagportPage !== undefined", timeout=10_000)

    def start(self, base_url: str, context: dict[str, Any], **options: Any) -> str:
        config = {"baseUrl": base_url, "context": context, **options}
        return str(self.page.evaluate("config => window.flagportPage.start(config)", config))

    def details(self, flags: list[tuple[str, str]]) -> dict[str, Any]:
        return self.page.evaluate(  # type: ignore[no-any-return]
            "flags => window.flagportPage.details(flags)", [list(pair) for pair in flags]
        )

    def events(self) -> list[dict[str, Any]]:
        return self.page.evaluate("() => window.flagportPage.events")  # type: ignore[no-any-return]

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def page(browser: Any, page_server: str) -> Iterator[Page]:
    opened = Page(browser, page_server + "/index.html")
    try:
        yield opened
    finally:
        opened.close()


def _flag_types(engine: CompiledSnapshot) -> list[tuple[str, str]]:
    document = engine.document
    return [
        (key, _TYPES[type(flag.variants[flag.off_variant])])
        for key, flag in sorted(document.flags.items())
    ]


def _engine_details(
    engine: CompiledSnapshot, flags: list[tuple[str, str]], context: dict[str, Any]
) -> dict[str, Any]:
    expected: dict[str, Any] = {}
    defaults = {"boolean": False, "string": "", "number": 0, "object": {}}
    for key, kind in flags:
        result = engine.evaluate(key, context, time.time())
        if result.error_code is not None:
            expected[key] = {
                "value": defaults[kind],
                "variant": None,
                "reason": "ERROR",
                "errorCode": result.error_code.value,
            }
        else:
            expected[key] = {
                "value": result.value,
                "variant": result.variant,
                "reason": result.reason.value,
                "errorCode": None,
            }
    return expected


def _no_cors_error(page: Page) -> None:
    problems = [line for line in page.console if "CORS" in line or "Access-Control" in line]
    assert not problems, problems


@pytest.mark.parametrize(
    ("visitor", "context"), [("signed-in", SIGNED_IN), ("anonymous", ANONYMOUS)]
)
def test_the_provider_answers_as_the_engine(
    page: Page, flagport: RunningServer, engine: CompiledSnapshot, visitor: str, context: Any
) -> None:
    assert page.start(flagport.url, context) == "READY"
    flags = _flag_types(engine)
    got = page.details(flags)
    expected = _engine_details(engine, flags, context)
    wrong = {key: (got[key], expected[key]) for key in expected if got[key] != expected[key]}
    assert not wrong, wrong
    if visitor == "anonymous":  # per flag: only the flags needing a unit fail
        codes = {got[key]["errorCode"] for key in got}
        assert "TARGETING_KEY_MISSING" in codes
        assert None in codes
    _no_cors_error(page)


def test_polls_answer_304(page: Page, flagport: RunningServer) -> None:
    started = page.start(flagport.url, SIGNED_IN, changeDetection="polling", pollInterval=200)
    assert started == "READY"
    page.page.wait_for_timeout(1500)
    statuses = page.bulk_statuses
    assert statuses[0] == 200, statuses
    assert len(statuses) >= 4, statuses
    assert set(statuses[1:]) == {304}, statuses
    changed = [e for e in page.events() if e["type"] == "PROVIDER_CONFIGURATION_CHANGED"]
    assert changed == []  # an unchanged configuration is no change event
    _no_cors_error(page)


def test_a_disable_reaches_the_page_through_the_stream_within_a_second(
    page: Page, flagport: RunningServer
) -> None:
    assert page.start(flagport.url, SIGNED_IN) == "READY"
    page.page.wait_for_timeout(300)  # the provider opens the stream after READY
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLAGPORT_")}
    environment.update(FLAGPORT_URL=flagport.url, FLAGPORT_TOKEN=ADMIN_TOKEN)
    before = time.time() * 1000
    done = subprocess.run(
        [flags_executable(), "disable", "ui-improvements", "--reason", "browser test"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    page.page.wait_for_function(
        "() => window.flagportPage.events.some(e => e.type === "
        "'PROVIDER_CONFIGURATION_CHANGED' && (e.flagsChanged || []).includes('ui-improvements'))",
        timeout=5_000,
    )
    event = next(
        e
        for e in page.events()
        if e["type"] == "PROVIDER_CONFIGURATION_CHANGED"
        and "ui-improvements" in (e["flagsChanged"] or [])
    )
    print(f"\ndisable reached the page in {event['at'] - before:.0f} ms")
    assert event["at"] - before < 1000
    assert page.details([("ui-improvements", "boolean")])["ui-improvements"]["reason"] == "DISABLED"
    _no_cors_error(page)
    with flagport.admin(timeout=10.0) as admin:
        assert admin.post(CANARY, json={"percentage": 10}).status_code == 200


def test_an_evaluate_token_on_a_server_that_requires_tokens(
    page: Page, page_server: str, tmp_path: Path
) -> None:
    """The README's set-up for a token server until stream tickets exist: the page holds an
    ``evaluate`` token (preflighted ``Authorization``), polls get 304s, and the same token
    cannot read the configuration."""
    extra = ["--require-eval-token", "--cors-origin", page_server]
    with running_server(tmp_path, seed=PORTAL_FLAGS, extra=extra) as server:
        with server.admin(timeout=10.0) as admin:
            made = admin.post("/admin/v1/tokens", json={"name": "portal-page", "scope": "evaluate"})
            token = made.json()["secret"]
        started = page.start(
            server.url, SIGNED_IN, changeDetection="polling", pollInterval=200, token=token
        )
        assert started == "READY"
        page.page.wait_for_timeout(1000)
        assert page.bulk_statuses[0] == 200, page.bulk_statuses
        assert set(page.bulk_statuses[1:]) == {304}, page.bulk_statuses
        with server.client(timeout=5.0) as client:
            feed = client.get("/v1/snapshot", headers={"Authorization": f"Bearer {token}"})
            assert feed.status_code == 403
        _no_cors_error(page)

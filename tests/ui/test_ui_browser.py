"""The admin UI in Debian's Chromium (Playwright, pinned; never ``playwright install``):
one server and one browser, one test (docs/adr/0026-admin-ui.md).

- An admin signs in on a phone-sized screen (390x844), watches a guarded plan roll back
  on the monitor and finds its evidence on the rollouts page, pulls the kill switch on the
  deployment monitor and OFREP evaluations of the flag turn off; the monitor's stream shows it.
- A viewer sees no buttons, and the server refuses the POST it makes anyway (403); revoking
  its token sends the open monitor back to sign-in.
- No page scrolls horizontally, a very long key included; any request to another origin fails
  the test (a route handler records and aborts it); stopping the server makes the monitor say
  plainly that it lost it. A failure keeps a screenshot of the page in the server's
  work directory.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.browser import launched_chromium
from tests.support.server import PORTAL_FLAGS, RunningServer, running_server, wait_until
from tests.ui._plans import send_breach, start_guarded_plan

KEY = "night-release"
LONG_KEY = "checkout." + "very-long-segment-" * 6 + "end"
PHONE = {"width": 390, "height": 844}
#: axe-core, vendored for the tests (tests/ui/vendor/README.md).
AXE_SOURCE = (Path(__file__).parent / "vendor" / "axe.min.js").read_text()


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("ui-browser"), seed=PORTAL_FLAGS) as running:
        with running.admin() as admin:
            for key in (KEY, LONG_KEY):
                created = admin.post(
                    "/admin/v1/flags",
                    json={"key": key, "enabled": True, "percentage": 100, "tags": ["night"]},
                )
                assert created.status_code == 201, created.text
        yield running


@pytest.fixture
def browser() -> Iterator[Any]:
    with launched_chromium() as launched:
        yield launched


class Page:
    """A phone-sized page whose requests to any other origin are aborted and recorded."""

    def __init__(self, browser: Any, server: RunningServer) -> None:
        self.origin = server.url
        self.foreign: list[str] = []
        self.context = browser.new_context(viewport=PHONE)
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()

    def _route(self, route: Any) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" != self.origin:
            self.foreign.append(url)
            route.abort()
        else:
            route.continue_()

    def sign_in(self, token: str, then: str) -> None:
        self.page.goto(f"{self.origin}{then}")
        assert urlsplit(self.page.url).path == "/ui/sign-in"  # sent to sign in first...
        self.accessible()
        self.page.fill("#token", token)
        self.page.click("button[type=submit]")
        self.page.wait_for_url(f"{self.origin}{then}")  # ...and back to the page asked for

    def no_horizontal_scroll(self) -> None:
        """No horizontal scroll at 390x844, and no serious or critical accessibility issue
        that axe-core finds (evaluated through the browser's protocol: the page's CSP, which
        forbids inline scripts, is not relaxed for it)."""
        width = self.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{self.page.url} is {width} px wide"
        self.accessible()

    def accessible(self) -> None:
        self.page.evaluate(AXE_SOURCE)
        found = self.page.evaluate(
            """async () => (await axe.run(document, {resultTypes: ['violations']}))
                .violations.filter(v => ['serious', 'critical'].includes(v.impact))
                .map(v => `${v.id} (${v.impact}): ${v.help} at `
                     + v.nodes.map(n => n.target.join(' ')).join('; '))"""
        )
        assert not found, f"{self.page.url}: {found}"

    def close(self, artifacts: Path) -> None:
        """Close the page; while a failure propagates, keep a screenshot of it first (in
        the server's work directory, which pytest keeps)."""
        if sys.exc_info()[0] is not None:
            name = urlsplit(self.page.url).path.strip("/").replace("/", "-") or "page"
            with contextlib.suppress(Exception):
                self.page.screenshot(path=str(artifacts / f"failed-{name}.png"), full_page=True)
        self.context.close()
        assert not self.foreign, f"requests to another origin: {self.foreign}"


def _value(server: RunningServer, key: str) -> Any:
    with server.client() as client:
        answer = client.post(
            f"/ofrep/v1/evaluate/flags/{key}", json={"context": {"targetingKey": "u-42"}}
        )
        return answer.json().get("value")


def _viewer_sees_no_buttons_and_its_post_is_refused(server: RunningServer, browser: Any) -> None:
    with server.admin() as admin:
        created = admin.post("/admin/v1/tokens", json={"name": "watcher", "scope": "viewer"})
        secret = created.json()["secret"]
        token_id = created.json()["token"]["id"]
    tab = Page(browser, server)
    try:
        tab.sign_in(secret, "/ui/flags")
        assert tab.page.locator(f"text={KEY}").count() >= 1
        assert tab.page.locator("button.danger").count() == 0
        tab.no_horizontal_scroll()
        csrf = tab.page.locator("input[name=csrf]").first.get_attribute("value")
        refused = tab.page.request.post(
            f"{server.url}/ui/flags/{KEY}/disable", form={"csrf": csrf}, max_redirects=0
        )
        assert refused.status == 403
        assert _value(server, KEY) is True
        # Revoking the token ends the session: the open monitor goes back to sign-in.
        tab.page.goto(f"{server.url}/ui/deployment-monitor")
        tab.page.wait_for_selector("#live:has-text('Live')")
        with server.admin() as admin:
            assert admin.delete(f"/admin/v1/tokens/{token_id}").status_code == 200
        tab.page.wait_for_url(re.compile(r".*/ui/sign-in\?next=.*"), timeout=10_000)
    finally:
        tab.close(server.workdir)


def test_a_viewer_then_an_admin_on_a_phone(server: RunningServer, browser: Any) -> None:
    """One test, in this order (the end stops the server; tests run in random order)."""
    _viewer_sees_no_buttons_and_its_post_is_refused(server, browser)
    _the_monitor_shows_a_guarded_plan_roll_back_live(server, browser)
    _admin_pulls_the_kill_switch_and_evaluations_turn_off(server, browser)


def _the_monitor_shows_a_guarded_plan_roll_back_live(server: RunningServer, browser: Any) -> None:
    """The page stays open; outcomes turn bad; the driver rolls the plan back and the card
    shows it, with its evidence, without a reload."""
    key = "guarded-night"
    tab = Page(browser, server)
    try:
        tab.sign_in(server.admin_token, "/ui/deployment-monitor")
        page = tab.page
        page.wait_for_selector("#live:has-text('Live')")
        start_guarded_plan(server, key)
        page.wait_for_selector(f"#monitor-{key} :text('Plan running')", timeout=15_000)
        send_breach(server, key)
        page.wait_for_selector(f"#monitor-{key} :text('plan-rollback')", timeout=15_000)
        assert page.locator(f"#monitor-{key} details.evidence").count() >= 1
        tab.no_horizontal_scroll()
        # The rollouts page: the plan, its steps and the driver's evidence, opened by a tap.
        page.click("nav a[href='/ui/rollouts']")
        page.wait_for_url(f"{server.url}/ui/rollouts")
        card = page.locator(f"#rollout-{key}")
        assert card.locator("ol.steps li").count() == 2
        card.locator("details.evidence summary").first.click()
        assert card.locator("details.evidence[open] dt").count() >= 1
        tab.no_horizontal_scroll()
    finally:
        tab.close(server.workdir)


def _admin_pulls_the_kill_switch_and_evaluations_turn_off(
    server: RunningServer, browser: Any
) -> None:
    assert _value(server, KEY) is True
    tab = Page(browser, server)
    try:
        tab.sign_in(server.admin_token, "/ui/deployment-monitor")
        page = tab.page
        page.wait_for_selector("#live:has-text('Live')")
        tab.no_horizontal_scroll()
        page.click(f"#monitor-{KEY} button[aria-label='Disable {KEY}']")
        page.wait_for_url(f"{server.url}/ui/deployment-monitor")
        assert wait_until(lambda: _value(server, KEY) is False, 5.0)
        assert page.locator(f"#monitor-{KEY} .state.off").count() == 1
        assert page.locator(f"button[aria-label='Disable {KEY}']").count() == 0
        for path in ("/ui/flags", "/ui/sign-in"):
            page.goto(f"{server.url}{path}")
            tab.no_horizontal_scroll()
        # The monitor says plainly when it has lost the server.
        page.goto(f"{server.url}/ui/deployment-monitor")
        page.wait_for_selector("#live:has-text('Live')")
        server.stop()
        page.wait_for_selector("#live.lost", timeout=10_000)
        assert re.search("Lost the server", page.inner_text("#live"))
    finally:
        tab.close(server.workdir)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{server.url}/healthz", timeout=1.0)

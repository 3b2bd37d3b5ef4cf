"""The page of one flag in Debian's Chromium (Playwright; docs/spec.md section 14): one
server and one browser, one test, on a phone-sized screen (390x844).

- HTML and script in a description, a reason and targets are shown as text, never run (a
  script that would set a marker did not); a very long key does not scroll the page sideways.
- An admin changes the percentage: the confirmation says how many units it removes, and the
  audit entry appears on the page.
- Two browsers change the same flag: the second sees the conflict and the newer state.
- The kill switch on the page turns every evaluation off.
- A viewer sees no button that changes anything.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.browser import launched_chromium
from tests.support.server import PORTAL_FLAGS, RunningServer, running_server, wait_until
from tests.ui._session import new_token
from tests.ui.test_ui_browser import Page

KEY = "night.checkout"
LONG_KEY = "night." + "a-very-long-segment-of-a-key-" * 5 + "end"
#: Would set a marker if the page ran it (it must not: it is text).
SCRIPT = '<script>window.__owned = 1</script><img src=x onerror="window.__owned = 2">'
UNITS = 20


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("ui-flag-browser"), seed=PORTAL_FLAGS) as running:
        with running.admin() as admin:
            for key, description in ((KEY, SCRIPT), (LONG_KEY, "long")):
                created = admin.post(
                    "/admin/v1/flags",
                    json={
                        "key": key,
                        "enabled": True,
                        "percentage": 100,
                        "description": description,
                    },
                )
                assert created.status_code == 201, created.text
            targets = admin.put(
                f"/admin/v1/flags/{KEY}/targets", json={"targets": {"on": [SCRIPT]}}
            )
            assert targets.status_code == 200, targets.text
        yield running


def _values(server: RunningServer, key: str, units: int = UNITS) -> list[Any]:
    with server.client() as client:
        return [
            client.post(
                f"/ofrep/v1/evaluate/flags/{key}", json={"context": {"targetingKey": f"u-{n}"}}
            ).json()["value"]
            for n in range(units)
        ]


def test_the_flag_page_on_a_phone(server: RunningServer) -> None:
    assert all(_values(server, KEY))  # 20 units seen: the estimate's base
    with server.admin() as admin:

        def counted() -> bool:
            stats = admin.get(f"/admin/v1/flags/{KEY}/stats", params={"since": "7d"}).json()
            return bool(stats["units_seen"] >= UNITS)

        assert wait_until(counted, 10.0)
    secret, _ = new_token(server, "night-viewer", "viewer")
    with launched_chromium() as browser:
        first, second, viewer = Page(browser, server), Page(browser, server), Page(browser, server)
        try:
            _escaped_and_the_layout_holds(first, server)
            _a_percentage_change_is_confirmed_and_audited(first, server)
            _the_second_browser_sees_the_conflict(first, second, server)
            _a_viewer_sees_no_buttons(viewer, secret)
            _the_kill_switch_turns_every_evaluation_off(first, server)
        finally:
            for tab in (first, second, viewer):
                tab.close(server.workdir)


def _escaped_and_the_layout_holds(tab: Page, server: RunningServer) -> None:
    tab.sign_in(server.admin_token, f"/ui/flags/{KEY}")
    page = tab.page
    assert SCRIPT in page.inner_text("#description")
    assert json.dumps(SCRIPT) in page.input_value("#targets")
    assert page.evaluate("window.__owned") is None
    assert page.locator("#chart-evaluations svg").count() == 1
    tab.no_horizontal_scroll()
    page.goto(f"{server.url}/ui/flags/{LONG_KEY}")
    assert page.locator("h1.key").inner_text() == LONG_KEY
    tab.no_horizontal_scroll()


def _a_percentage_change_is_confirmed_and_audited(tab: Page, server: RunningServer) -> None:
    page = tab.page
    page.goto(f"{server.url}/ui/flags/{KEY}")
    page.fill("#percentage", "fifty")
    page.click("#percentage-form button[type=submit]")
    assert "must be a number" in page.inner_text("#percentage-problem")
    page.fill("#percentage", "25")
    page.fill("#percentage-reason", SCRIPT)
    page.click("#percentage-form button[type=submit]")
    estimate = page.inner_text("#estimate")
    assert "removes about 15 unit(s)" in estimate  # 20 units x (25 % - 100 %)
    assert f"estimate from {UNITS} units seen in 7 days" in estimate
    tab.no_horizontal_scroll()
    page.click("#confirm-form button[type=submit]")
    page.wait_for_url(f"{server.url}/ui/flags/{KEY}")
    newest = page.locator("#audit li").first.inner_text()
    assert "admin enable: 100 % -> 25 %" in newest
    assert SCRIPT in newest  # the reason, as text
    assert page.evaluate("window.__owned") is None


def _the_second_browser_sees_the_conflict(first: Page, second: Page, server: RunningServer) -> None:
    second.sign_in(server.admin_token, f"/ui/flags/{KEY}")
    first.page.goto(f"{server.url}/ui/flags/{KEY}")  # both at the same version
    for tab, percentage in ((second, "30"), (first, "70")):
        tab.page.fill("#percentage", percentage)
        tab.page.click("#percentage-form button[type=submit]")
    second.page.click("#confirm-form button[type=submit]")
    second.page.wait_for_url(f"{server.url}/ui/flags/{KEY}")
    first.page.click("#confirm-form button[type=submit]")
    problem = first.page.inner_text("#page-problem")
    assert "changed by someone else" in problem
    assert "nothing was overwritten" in problem
    assert "30" in first.page.inner_text("#state")  # the newer state
    with server.admin() as admin:
        assert admin.get(f"/admin/v1/flags/{KEY}").json()["percentage"] == 30


def _a_viewer_sees_no_buttons(tab: Page, secret: str) -> None:
    tab.sign_in(secret, f"/ui/flags/{KEY}")
    page = tab.page
    actions = page.eval_on_selector_all(
        "form[method=post]", "forms => forms.map(f => f.getAttribute('action'))"
    )
    assert actions == ["/ui/sign-out"]
    assert page.locator("button.danger").count() == 0
    assert json.dumps(SCRIPT) in page.inner_text("#targets")
    tab.no_horizontal_scroll()


def _the_kill_switch_turns_every_evaluation_off(tab: Page, server: RunningServer) -> None:
    page = tab.page
    page.goto(f"{server.url}/ui/flags/{KEY}")
    page.click(f"button[aria-label='Disable {KEY}']")
    page.wait_for_url(f"{server.url}/ui/flags/{KEY}")
    assert wait_until(lambda: not any(_values(server, KEY)), 5.0)
    assert re.match(r"off", page.inner_text("#state"))
    assert page.locator(f"button[aria-label='Disable {KEY}']").count() == 0
    assert "admin disable" in page.locator("#audit li").first.inner_text()
    assert json.dumps(_values(server, KEY, 3)) == "[false, false, false]"

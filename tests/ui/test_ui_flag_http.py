"""The admin UI's page of one flag over HTTP against one real server (docs/spec.md section
14): the page (state, charts, audit trail, explain), the percentage's confirmation with its
unit estimate, versioned edits and their conflicts, targets and rules through the API's
models, an approval policy holding a change while the kill switch still applies, a viewer's
refusals, and bad input at its field. The browser test is tests/ui/test_ui_flag_browser.py."""

from __future__ import annotations

import html
import itertools
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.server import PORTAL_FLAGS, RunningServer, running_server, wait_until
from tests.ui._session import csrf_of, new_token, signed_in

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'
UNITS = 40


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("ui-flag"), seed=PORTAL_FLAGS) as running:
        yield running


def _create(server: RunningServer, key: str, **fields: Any) -> None:
    with server.admin() as admin:
        body = {"key": key, "enabled": True, "percentage": 100, **fields}
        created = admin.post("/admin/v1/flags", json=body)
        assert created.status_code == 201, created.text


def _flag(server: RunningServer, key: str) -> dict[str, Any]:
    with server.admin() as admin:
        body: dict[str, Any] = admin.get(f"/admin/v1/flags/{key}").json()
        return body


def _evaluate_units(server: RunningServer, key: str, count: int) -> None:
    """Evaluate ``count`` distinct units and wait until the stats have counted them."""
    with server.client() as client:
        for n in range(count):
            answer = client.post(
                f"/ofrep/v1/evaluate/flags/{key}", json={"context": {"targetingKey": f"u-{n}"}}
            )
            assert answer.status_code == 200, answer.text
    with server.admin() as admin:

        def counted() -> bool:
            stats = admin.get(f"/admin/v1/flags/{key}/stats", params={"since": "7d"}).json()
            return bool(stats["units_seen"] >= count)

        assert wait_until(counted, 10.0)


def _form(page: str, form_id: str) -> dict[str, str]:
    """The hidden and text inputs of the form ``form_id`` on ``page``, as they would post."""
    found = re.search(rf'<form[^>]*id="{form_id}".*?</form>', page, re.S)
    assert found is not None, page
    fields = {
        m.group(1): html.unescape(m.group(2))
        for m in re.finditer(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', found.group(0))
    }
    textarea = re.search(r"<textarea[^>]*>(.*?)</textarea>", found.group(0), re.S)
    if textarea is not None:
        fields["value"] = html.unescape(textarea.group(1))
    return fields


def test_the_page_shows_state_charts_audit_and_explain_escaped(server: RunningServer) -> None:
    key = "page.shown"
    _create(server, key, description=HOSTILE, owner=HOSTILE, tags=["night"])
    _evaluate_units(server, key, 5)
    with signed_in(server, server.admin_token) as client:
        answer = client.get(f"/ui/flags/{key}")
        assert answer.status_code == 200, answer.text
        page = answer.text
        assert "content-security-policy" in answer.headers
        assert HOSTILE not in page
        assert "&lt;script&gt;alert(" in page
        assert 'id="state">on · 100\u202f%' in page
        assert page.count("<svg") == 2  # evaluations and unique units
        assert re.search(r'<polyline class="tone-0" points="[\d., ]+">', page)
        assert '<g class="mark"><title>' in page  # the creation, on the time axis
        assert "5 units seen in 7 days" in page
        assert re.search(r"<strong>admin</strong> create: created \(on, 100", page)
        assert 'action="/ui/flags/page.shown/disable"' in page
        explained = client.get(f"/ui/flags/{key}", params={"unit": "u-1"}).text
        assert 'id="explained"' in explained
        assert "&#34;snapshot_version&#34;" in explained or "&quot;snapshot_version" in explained
        for window in ("1h", "48h"):
            assert client.get(f"/ui/flags/{key}", params={"window": window}).status_code == 200
        assert client.get(f"/ui/flags/{key}", params={"window": "9y"}).status_code == 400
        assert client.get(f"/ui/flags/{key}", params={"unit": "u" * 300}).status_code == 400
        assert client.get("/ui/flags/no.such.flag").status_code == 404
        # The list links each key to its page.
        assert f'href="/ui/flags/{key}"' in client.get("/ui/flags").text


def test_a_percentage_is_confirmed_with_the_units_it_moves_then_applied(
    server: RunningServer,
) -> None:
    key = "page.percentage"
    _create(server, key)
    _evaluate_units(server, key, UNITS)
    with signed_in(server, server.admin_token) as client:
        form = _form(client.get(f"/ui/flags/{key}").text, "percentage-form")
        assert form["version"] == "1"
        confirm = client.post(
            f"/ui/flags/{key}/percentage", data={**form, "percentage": "25", "reason": "slow"}
        )
        assert confirm.status_code == 200, confirm.text
        # 40 units seen x (25 % - 100 %) = 30 fewer served on; nothing changed yet.
        text = re.sub(r"<[^>]+>", "", confirm.text)
        assert "This removes about 30 unit(s)" in text
        assert "An estimate from 40 units seen in 7 days" in text
        assert _flag(server, key)["percentage"] == 100
        applied = client.post(
            f"/ui/flags/{key}/percentage", data=_form(confirm.text, "confirm-form")
        )
        assert applied.status_code == 303, applied.text
        assert applied.headers["location"] == f"/ui/flags/{key}"
        assert _flag(server, key)["percentage"] == 25
        page = client.get(f"/ui/flags/{key}").text
        assert re.search(r"<strong>admin</strong> enable: 100 % -&gt; 25 %\s*<q>slow</q>", page)
    with server.admin() as admin:
        entry = admin.get("/admin/v1/audit", params={"flag": key}).json()["entries"][0]
        assert (entry["action"], entry["actor"], entry["reason"]) == ("enable", "admin", "slow")
        assert entry["token_id"]


WRONG_PERCENTAGES = [
    ("fifty", "percentage must be a number from 0 to 100"),
    ("100.0001", "between 0 and 100"),
    ("12.34567", "more than 3 decimals"),
    ("nan", "between 0 and 100"),
    ("", "percentage must be a number"),
]


def test_a_percentage_typed_wrong_is_refused_at_its_field(server: RunningServer) -> None:
    key = "page.typed-wrong"
    _create(server, key, percentage=10)
    with signed_in(server, server.admin_token) as client:
        form = _form(client.get(f"/ui/flags/{key}").text, "percentage-form")
        for (typed, why), confirmed in itertools.product(
            WRONG_PERCENTAGES, ({}, {"confirmed": "yes"})
        ):
            answer = client.post(
                f"/ui/flags/{key}/percentage", data={**form, "percentage": typed, **confirmed}
            )
            assert answer.status_code == 400, answer.text
            problem = re.search(r'id="percentage-problem" role="alert">([^<]*)<', answer.text)
            assert problem is not None, answer.text
            assert why in html.unescape(problem.group(1)), answer.text
            assert 'aria-invalid="true" aria-describedby="percentage-problem"' in answer.text
    assert _flag(server, key)["percentage"] == 10


def test_an_edit_made_on_an_older_version_is_a_conflict_that_overwrites_nothing(
    server: RunningServer,
) -> None:
    key = "page.conflict"
    _create(server, key, percentage=10)
    with (
        signed_in(server, server.admin_token) as first,
        signed_in(server, server.admin_token) as second,
    ):
        mine = _form(first.get(f"/ui/flags/{key}").text, "percentage-form")
        theirs = _form(second.get(f"/ui/flags/{key}").text, "percentage-form")
        confirmed = {"confirmed": "yes"}
        done = second.post(
            f"/ui/flags/{key}/percentage", data={**theirs, "percentage": "30", **confirmed}
        )
        assert done.status_code == 303
        for data in ({**mine, "percentage": "70"}, {**mine, "percentage": "70", **confirmed}):
            refused = first.post(f"/ui/flags/{key}/percentage", data=data)
            assert refused.status_code == 409, refused.text
            assert "changed by someone else" in refused.text
            assert "nothing was overwritten" in refused.text
            assert 'id="state">on · 30\u202f%' in refused.text  # the newer state
            assert _form(refused.text, "percentage-form")["version"] == "2"
        targets = _form(first.get(f"/ui/flags/{key}").text, "targets-form")
        assert (
            second.post(
                f"/ui/flags/{key}/targets", data={**targets, "value": '{"on": ["a"]}'}
            ).status_code
            == 303
        )
        stale = first.post(f"/ui/flags/{key}/targets", data={**targets, "value": '{"on": ["b"]}'})
        assert stale.status_code == 409
    flag = _flag(server, key)
    assert (flag["percentage"], flag["targets"]) == (30, {"on": ["a"]})


def test_targets_and_rules_are_validated_by_the_api_models(server: RunningServer) -> None:
    key = "page.targeting"
    _create(server, key)
    with signed_in(server, server.admin_token) as client:
        page = client.get(f"/ui/flags/{key}").text
        targets = _form(page, "targets-form")
        bad = [
            ("targets", "{not json", "targets must be JSON"),
            ("targets", '{"on": "u-1"}', "Expected `array`"),
            ("targets", '{"nope": ["u-1"]}', "nope"),
            ("rules", '[{"conditions": [], "bogus": 1}]', "bogus"),
        ]
        for name, value, why in bad:
            form = _form(client.get(f"/ui/flags/{key}").text, f"{name}-form")
            answer = client.post(f"/ui/flags/{key}/{name}", data={**form, "value": value})
            assert answer.status_code == 400, (value, answer.text)
            assert why in html.unescape(answer.text), answer.text
            assert f'id="{name}-problem"' in answer.text
            assert f">{value}</textarea>" in html.unescape(answer.text)  # what was typed, kept
        assert (
            client.post(
                f"/ui/flags/{key}/targets", data={**targets, "value": json.dumps({"on": [HOSTILE]})}
            ).status_code
            == 303
        )
        rules = _form(client.get(f"/ui/flags/{key}").text, "rules-form")
        condition = '{"attribute": "plan", "op": "in", "values": ["pro"]}'
        rule = f'[{{"conditions": [{condition}], "variant": "off"}}]'
        answer = client.post(f"/ui/flags/{key}/rules", data={**rules, "value": rule})
        assert answer.status_code == 303, answer.text
        page = client.get(f"/ui/flags/{key}").text
        assert HOSTILE not in page
    flag = _flag(server, key)
    assert flag["targets"] == {"on": [HOSTILE]}
    assert flag["rules"][0]["variant"] == "off"
    with server.client() as evaluator:
        answer = evaluator.post(
            f"/ofrep/v1/evaluate/flags/{key}",
            json={"context": {"targetingKey": "x", "plan": "pro"}},
        )
        assert answer.json()["value"] is False


def test_an_approval_policy_holds_a_raise_and_the_kill_switch_still_applies(
    server: RunningServer,
) -> None:
    key = "page.guarded"
    _create(server, key, percentage=10)
    with server.admin() as admin:
        policy = admin.post("/admin/v1/approvals", json={"flag": key, "reason": "payments"})
        assert policy.status_code == 201, policy.text
    with signed_in(server, server.admin_token) as client:
        page = client.get(f"/ui/flags/{key}").text
        assert f"flag:{key}" in page
        form = _form(page, "percentage-form")
        held = client.post(
            f"/ui/flags/{key}/percentage",
            data={**form, "percentage": "50", "confirmed": "yes"},
        )
        assert held.status_code == 409, held.text
        assert re.search(r'id="page-problem" role="alert">Approval required: ', held.text)
        assert _flag(server, key)["percentage"] == 10
        lowered = client.post(
            f"/ui/flags/{key}/percentage", data={**form, "percentage": "5", "confirmed": "yes"}
        )
        assert lowered.status_code == 303, lowered.text
        killed = client.post(
            f"/ui/flags/{key}/disable", data={"csrf": form["csrf"], "back": "flag"}
        )
        assert killed.status_code == 303
        assert killed.headers["location"] == f"/ui/flags/{key}"
    assert _flag(server, key)["enabled"] is False
    with server.admin() as admin:
        entry = admin.get("/admin/v1/audit", params={"flag": key}).json()["entries"][0]
        assert (entry["action"], entry.get("break_glass")) == ("disable", True)


def test_a_viewer_sees_no_form_that_changes_and_its_posts_are_refused(
    server: RunningServer,
) -> None:
    key = "page.viewed"
    _create(server, key, percentage=10)
    secret, _ = new_token(server, "page-viewer", "viewer")
    with signed_in(server, secret) as client:
        page = client.get(f"/ui/flags/{key}")
        assert page.status_code == 200
        assert re.findall(r'<form method="post" action="([^"]+)"', page.text) == ["/ui/sign-out"]
        assert "<button" in page.text  # sign out and explain only
        assert 'id="targets"' in page.text  # targets and rules shown as text
        csrf = csrf_of(page.text)
        for path, data in (
            ("percentage", {"version": "1", "percentage": "90", "confirmed": "yes"}),
            ("targets", {"version": "1", "value": "{}"}),
            ("rules", {"version": "1", "value": "[]"}),
            ("disable", {}),
        ):
            answer = client.post(f"/ui/flags/{key}/{path}", data={"csrf": csrf, **data})
            assert answer.status_code == 403, (path, answer.text)
    flag = _flag(server, key)
    assert (flag["enabled"], flag["percentage"], flag["version"]) == (True, 10, 1)


def test_forms_are_decoded_strictly_and_need_their_csrf_token(server: RunningServer) -> None:
    key = "page.strict"
    _create(server, key, percentage=10)
    with signed_in(server, server.admin_token) as client:
        form = _form(client.get(f"/ui/flags/{key}").text, "percentage-form")
        change = {**form, "percentage": "90", "confirmed": "yes"}
        refusals = [
            ({**change, "csrf": "forged"}, 403),
            ({k: v for k, v in change.items() if k != "csrf"}, 400),
            ({**change, "enabled": "true"}, 400),  # unknown field
            ({**change, "version": "two"}, 400),
            ({**change, "confirmed": "maybe"}, 400),
            ({**change, "reason": "x" * 1001}, 400),
            ({**change, "reason": "a\x1b[31mforged log line"}, 400),
        ]
        for data, status in refusals:
            assert client.post(f"/ui/flags/{key}/percentage", data=data).status_code == status
        big = client.post(
            f"/ui/flags/{key}/targets",
            data={
                **_form(client.get(f"/ui/flags/{key}").text, "targets-form"),
                "value": "x" * 70_000,
            },
        )
        assert big.status_code in (400, 413)
    assert _flag(server, key)["version"] == 1


def test_the_audit_trail_pages_back_and_a_large_target_list_fits(server: RunningServer) -> None:
    key = "page.history"
    _create(server, key, percentage=0)
    with server.admin() as admin:
        for step in range(1, 21):
            answer = admin.post(f"/admin/v1/flags/{key}/enable", json={"percentage": step})
            assert answer.status_code == 200, answer.text
    with signed_in(server, server.admin_token) as client:
        newest = client.get(f"/ui/flags/{key}").text
        entries = re.findall(r'<li><span class="at">', newest)
        assert len(entries) == 20
        assert "19 % -&gt; 20 %" in newest
        older = re.search(r'href="\?before_id=(\d+)#audit-title" rel="next"', newest)
        assert older is not None, newest
        last = client.get(f"/ui/flags/{key}", params={"before_id": older.group(1)}).text
        assert re.search(r"<strong>admin</strong> create: created \(on, 0", last)
        assert 'rel="next"' not in last
        # Targets larger than the other forms' 8 KiB bound: their own, larger one.
        units = [f"user-{n:06d}" for n in range(2000)]
        form = _form(newest, "targets-form")
        answer = client.post(
            f"/ui/flags/{key}/targets", data={**form, "value": json.dumps({"on": units})}
        )
        assert answer.status_code == 303, answer.text
    assert _flag(server, key)["targets"] == {"on": units}

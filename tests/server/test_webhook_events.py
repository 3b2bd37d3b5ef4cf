"""Webhook events and bodies, in process: which event each audit entry is (kinds added later
included), which names a webhook may ask for, the tag filter, the signature, the Slack
message within Slack's limits, and how URLs are checked and shown."""

from __future__ import annotations

import json

import pytest

from flagport_server.errors import InvalidInput
from flagport_server.settings import Settings
from flagport_server.stores.base import AuditEntry
from flagport_server.stores.webhook_records import WebhookRecord
from flagport_server.webhooks.delivery import backoff
from flagport_server.webhooks.events import check_events, event_of, wanted
from flagport_server.webhooks.payloads import (
    SLACK_MAX_BLOCKS,
    SLACK_MAX_SECTION,
    json_payload,
    sign,
    slack_payload,
)
from flagport_server.webhooks.urls import check_url, url_hint

AT = "2027-01-15T08:00:00Z"


def entry(**fields: object) -> AuditEntry:
    values: dict[str, object] = {"actor": "alice", "action": "enable", "key": "checkout", "at": AT}
    values.update(fields)
    return AuditEntry(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "event"),
    [
        ({"action": "enable"}, "flag.changed"),
        ({"action": "rules"}, "flag.changed"),
        ({"action": "delete"}, "flag.changed"),
        ({"action": "update", "kind": "segment"}, "segment.changed"),
        ({"action": "import", "kind": "segment"}, "import.applied"),
        ({"action": "import"}, "import.applied"),
        ({"action": "import", "kind": "snapshot", "key": "*"}, "import.applied"),
        ({"action": "token.create", "kind": "token"}, "token.changed"),
        ({"action": "secret.rotate", "kind": "token"}, "token.changed"),
        ({"action": "webhook.create", "kind": "token"}, "webhook.changed"),
        ({"action": "plan-create"}, "rollout.step"),
        ({"action": "plan-advance", "actor": "driver"}, "rollout.step"),
        ({"action": "plan-pause"}, "rollout.step"),  # a person's
        ({"action": "plan-rollback", "actor": "driver"}, "rollout.action"),
        ({"action": "plan-breach-pause", "actor": "driver"}, "rollout.action"),
        ({"action": "plan-pause", "actor": "driver"}, "rollout.action"),  # max hold
        ({"action": "flag.stale", "kind": "notice", "actor": "driver"}, "flag.stale"),
    ],
)
def test_each_audit_entry_is_one_event(fields: dict[str, object], event: str) -> None:
    assert event_of(entry(**fields)) == event


def test_an_entry_of_a_kind_this_server_does_not_know_is_an_event_too() -> None:
    # Change requests (another feature): kind "request", actions "request.created"...
    created = entry(kind="request", action="request.approved")
    assert event_of(created) == "request.approved"
    created = entry(kind="request", action="expired")
    assert event_of(created) == "request.expired"


def test_subscriptions_name_known_events_families_or_everything() -> None:
    assert check_events(["rollout.step", "flag.changed", "flag.changed"]) == (
        "flag.changed",
        "rollout.step",
    )
    assert check_events(["*"]) == ("*",)
    assert check_events(["rollout.*", "request.approved", "request.*"])
    for bad in (["flag.chnged"], ["nope.*"], ["flag"], ["request.Bad"], [], ["*"] * 33):
        with pytest.raises(InvalidInput):
            check_events(bad)


def hook(events: tuple[str, ...] = ("*",), tag: str | None = None) -> WebhookRecord:
    return WebhookRecord(
        id="wh_1", url="https://x.example/", secret="s" * 16, created_at=AT, events=events, tag=tag
    )


def test_a_webhook_wants_its_events_and_with_a_tag_only_flags_carrying_it() -> None:
    tagged = entry(before={"tags": ["payments"]}, after={"tags": []})
    assert wanted(hook(), tagged, "flag.changed")
    assert wanted(hook(("rollout.*",)), tagged, "rollout.action")
    assert not wanted(hook(("rollout.step",)), tagged, "rollout.action")
    assert wanted(hook(tag="payments"), tagged, "flag.changed")  # untagged by this change
    assert not wanted(hook(tag="search"), tagged, "flag.changed")
    assert not wanted(hook(tag="payments"), entry(kind="token"), "token.changed")


def test_the_json_body_is_the_whole_entry_with_the_event_and_the_actor() -> None:
    body = json_payload(
        entry(
            id=42,
            token_id="t1",
            reason="canary",
            before={"enabled": False, "percentage": 10},
            after={"enabled": True, "percentage": 50},
            evidence={"rule": "error_rate > 5%"},
        ),
        "flag.changed",
    )
    assert body["event"] == "flag.changed"
    assert body["id"] == 42
    assert body["actor"] == {"name": "alice", "token_id": "t1"}
    assert "token_id" not in body
    assert body["summary"] == "enable: on, 10 % -> 50 %"
    assert body["evidence"] == {"rule": "error_rate > 5%"}


def test_the_signature_is_the_hmac_of_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    expected = hmac.new(b"k" * 16, b"1700000000.{}", hashlib.sha256).hexdigest()
    assert sign("k" * 16, 1700000000, b"{}") == "sha256=" + expected


def test_a_slack_message_says_what_changed_links_the_flag_and_escapes_text() -> None:
    message = slack_payload(
        entry(
            reason="<!channel> & co",
            before={"enabled": False, "percentage": 10},
            after={"enabled": True, "percentage": 50},
        ),
        "flag.changed",
        "https://flags.example/",
    )
    text = json.dumps(message, ensure_ascii=False)
    assert "`checkout`: enable: on, 10 % -&gt; 50 %" in text  # shown as ->
    assert "&lt;!channel&gt; &amp; co" in text
    assert "<!channel>" not in text
    assert "<https://flags.example/ui/flags?q=checkout|open in Flagport>" in text
    assert "open in Flagport" not in json.dumps(slack_payload(entry(), "flag.changed", None))


def test_a_huge_entry_stays_within_slack_limits_and_says_it_was_cut() -> None:
    evidence = {f"guard{n}": {"value": "x" * 5000} for n in range(80)}
    message = slack_payload(
        entry(action="plan-rollback", actor="driver", reason="r" * 10_000, evidence=evidence),
        "rollout.action",
        None,
    )
    blocks = message["blocks"]
    assert len(blocks) <= SLACK_MAX_BLOCKS
    for block in blocks:
        texts = [block["text"]] if "text" in block else block["elements"]
        for text in texts:
            assert len(text["text"]) <= SLACK_MAX_SECTION
    assert "truncated" in json.dumps(blocks)
    assert len(message["text"]) <= 3000


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    settings = Settings(webhook_backoff=10.0, webhook_backoff_max=3600.0)
    assert [backoff(n, settings, 1.0) for n in (1, 2, 3)] == [10.0, 20.0, 40.0]
    assert backoff(1, settings, 0.0) == 5.0
    assert backoff(40, settings, 1.0) == 3600.0


def test_urls_are_checked_and_shown_without_their_secrets() -> None:
    settings = Settings(host="0.0.0.0", port=8787, public_url="https://flags.example")
    assert check_url("https://hooks.example/x", settings)
    assert check_url("http://127.0.0.1:9000/x", settings)
    for own in (
        "http://127.0.0.1:8787/x",
        "http://localhost:8787/",
        "http://[::1]:8787/",
        "http://0.0.0.0:8787/",
        "https://flags.example/hook",
        "http://[::ffff:127.0.0.1]:8787/",  # IPv4-mapped
        "http://[0:0:0:0:0:0:0:1]:8787/",  # not canonical
    ):
        with pytest.raises(InvalidInput, match="itself"):
            check_url(own, settings)
    for legacy in ("http://127.1:8787/", "http://2130706433:8787/", "http://0x7f.1:8787/"):
        with pytest.raises(InvalidInput, match="dotted-quad form"):
            check_url(legacy, settings)
    assert check_url("http://10.0.0.5:8787/", Settings(host="127.0.0.1", port=8787))
    assert (
        url_hint("https://user:pw@hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX?a=1")
        == "https://hooks.slack.com/services/T000/B000/XXXX…?…"
    )

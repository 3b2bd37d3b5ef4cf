"""Webhooks end to end: a real server process (on SQLite and on a spawned redis-server), a
real receiver in a thread, the admin API and the CLI (docs/spec.md, "Webhooks").

A change reaches the receiver within a second, signed (checked by the README's recipe, run
verbatim); a receiver that is down gets everything in order once it is up; a failing one gets
retries with growing gaps, then a dead letter that ``redeliver`` sends; two instances on one
store deliver each entry once; bad input changes nothing."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.receiver import Delivery, Receiver
from tests.support.redis import shared_redis, unique_prefix
from tests.support.server import (
    ADMIN_TOKEN,
    RunningServer,
    flags_executable,
    running_server,
    wait_until,
)
from tests.support.tools import REPO_ROOT

#: Short retries: the first after 50 ms, dead 2 s after the change.
FAST_RETRIES = ["--webhook-backoff", "0.05", "--webhook-retry-for", "2"]
SECRET = "a-shared-secret-of-32-characters"


def readme_verify() -> Callable[[str, bytes, str, str], bool]:
    """The README's signature check, extracted by its marker and run as written."""
    text = (REPO_ROOT / "README.md").read_text()
    after = text.split("<!-- webhook-signature-check -->", 1)[1]
    code = re.search(r"```python\n(.*?)```", after, re.S)
    assert code is not None, "the README's verification recipe is missing"
    namespace: dict[str, Any] = {}
    exec(code.group(1), namespace)
    verify: Callable[[str, bytes, str, str], bool] = namespace["verify"]
    return verify


def store_url(backend: str, workdir: Path) -> str:
    if backend == "redis":
        return f"{shared_redis().url}?prefix={unique_prefix()}"
    return f"sqlite:///{workdir / 'flagport.db'}"


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server(backend: str, tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(tmp_path, store=store_url(backend, tmp_path), extra=FAST_RETRIES) as s:
        yield s


def add_webhook(server: RunningServer, url: str, **fields: Any) -> dict[str, Any]:
    with server.admin() as client:
        answer = client.post("/admin/v1/webhooks", json={"url": url, **fields})
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


def change(server: RunningServer, key: str, action: str, **body: Any) -> None:
    with server.admin() as client:
        answer = client.post(f"/admin/v1/flags/{key}/{action}", json=body or None)
    assert answer.status_code == 200, answer.text


def create_flags(server: RunningServer, *keys: str, tags: tuple[str, ...] = ()) -> None:
    with server.admin() as client:
        for key in keys:
            answer = client.post("/admin/v1/flags", json={"key": key, "tags": list(tags)})
            assert answer.status_code == 201, answer.text


def events(received: list[Delivery]) -> list[dict[str, Any]]:
    return [json.loads(d.body) for d in received]


def test_a_change_reaches_the_receiver_signed_within_a_second(server: RunningServer) -> None:
    create_flags(server, "checkout", tags=("payments",))
    with Receiver() as receiver:
        made = add_webhook(
            server, receiver.url, events=["flag.changed"], tag="payments", secret=SECRET
        )
        assert made["secret"] == SECRET
        assert made["webhook"]["secret_hint"] == "…ters"
        started = time.time()
        change(server, "checkout", "enable", percentage=10, reason="canary")
        (delivery,) = receiver.wait_for(lambda r: len(r) >= 1, timeout=5)
        assert delivery.at - started < 1.0
        verify = readme_verify()
        headers = {k.lower(): v for k, v in delivery.headers.items()}
        assert verify(
            SECRET, delivery.body, headers["x-flagport-timestamp"], headers["x-flagport-signature"]
        )
        assert not verify(
            "another-secret-of-enough-length",
            delivery.body,
            headers["x-flagport-timestamp"],
            headers["x-flagport-signature"],
        )
        assert not verify(
            SECRET,
            delivery.body + b" ",
            headers["x-flagport-timestamp"],
            headers["x-flagport-signature"],
        )
        payload = json.loads(delivery.body)
        assert payload["event"] == "flag.changed" == headers["x-flagport-event"]
        assert str(payload["id"]) == headers["x-flagport-delivery"] == headers["idempotency-key"]
        assert payload["actor"] == {"name": "admin", "token_id": "bootstrap"}
        assert payload["action"] == "enable"
        assert payload["key"] == "checkout"
        assert payload["reason"] == "canary"
        assert payload["before"].get("enabled", False) is False  # defaults are left out
        assert payload["after"]["percentage"] == 10
        assert payload["summary"] == "enable: on, 100 % -> 10 %"
        # The webhook's own creation was not a flag change: it was not sent.
        assert len(receiver.deliveries()) == 1


def test_a_receiver_down_gets_every_change_in_order_once_it_is_up(server: RunningServer) -> None:
    create_flags(server, "a", "b")
    receiver = Receiver()  # not started: connections are refused
    add_webhook(server, receiver.url, events=["flag.changed"])
    sequence = [("a", "enable"), ("b", "enable"), ("a", "disable"), ("b", "disable")]
    for key, action in sequence:
        change(server, key, action)
    with server.admin() as client:
        assert wait_until(
            lambda: client.get("/admin/v1/webhooks/deliveries?failed=true").json()["deliveries"],
            5,
        )
    with receiver:
        received = receiver.wait_for(lambda r: len({d.body for d in r}) >= 4, timeout=10)
    got = events(received)
    ids = [e["id"] for e in got]
    assert ids == sorted(ids)
    assert [(e["key"], e["action"]) for e in got] == sequence
    with server.admin() as client:
        assert client.get("/admin/v1/webhooks/deliveries?failed=true").json()["deliveries"] == []


def test_a_failing_receiver_gets_retries_with_backoff_then_a_dead_letter(
    server: RunningServer,
) -> None:
    create_flags(server, "a")
    with Receiver(status=503) as receiver:
        webhook = add_webhook(server, receiver.url, events=["flag.changed"])["webhook"]
        change(server, "a", "enable")
        with server.admin() as client:

            def dead() -> list[dict[str, Any]]:
                found = client.get("/admin/v1/webhooks/deliveries?failed=true").json()
                return [d for d in found["deliveries"] if d["status"] == "dead"]

            assert wait_until(dead, 10)
            (letter,) = dead()
        tries = receiver.deliveries()
        assert len(tries) == letter["attempts"] >= 4
        assert len({d.body for d in tries}) == 1  # the same entry every time
        gaps = [b.at - a.at for a, b in itertools.pairwise(tries)]
        assert gaps[-1] > 2 * gaps[0]  # backing off
        assert letter["last_status"] == 503
        metrics = httpx.get(server.url + "/metrics").text
        assert 'flagport_webhook_attempts_total{result="dead"} 1.0' in metrics
        assert 'flagport_webhook_attempts_total{result="failed"}' in metrics
        # The dead letter is kept; the next change goes on; redeliver sends the letter.
        receiver.status = 200
        change(server, "a", "disable")
        receiver.wait_for(lambda r: json.loads(r[-1].body)["action"] == "disable")
        with server.admin() as client:
            again = client.post(
                f"/admin/v1/webhooks/{webhook['id']}/deliveries/{letter['audit_id']}/redeliver"
            )
            assert again.status_code == 200, again.text
            assert again.json()["status"] == "delivered"
            twice = client.post(
                f"/admin/v1/webhooks/{webhook['id']}/deliveries/{letter['audit_id']}/redeliver"
            )
            assert twice.status_code == 409


def test_two_instances_on_one_store_deliver_each_change_once(backend: str, tmp_path: Path) -> None:
    url = store_url(backend, tmp_path)
    with (
        running_server(tmp_path / "one", store=url) as one,
        running_server(tmp_path / "two", store=url) as two,
        Receiver() as receiver,
    ):
        create_flags(one, "a")
        add_webhook(one, receiver.url, events=["flag.changed"])
        for n in range(6):
            change(one if n % 2 else two, "a", "enable" if n % 2 == 0 else "disable")
        receiver.wait_for(lambda r: len(r) >= 6)
        with one.admin() as client:
            newest = client.get("/admin/v1/audit", params={"limit": 1}).json()["entries"][0]
            # Every entry is behind the cursor: whoever delivered is done sending them.
            assert wait_until(
                lambda: (
                    client.get("/admin/v1/webhooks").json()["webhooks"][0]["cursor"] == newest["id"]
                ),
                5,
            )
        ids = [e["id"] for e in events(receiver.deliveries())]
        assert len(ids) == len(set(ids)) == 6


def test_bad_webhooks_are_refused_naming_the_problem_and_nothing_changes(
    server: RunningServer,
) -> None:
    port = server.url.rsplit(":", 1)[1]
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"url": "ftp://files.example/x"}, 400, "http:// or https://"),
        ({"url": "javascript:alert(1)"}, 400, "http:// or https://"),
        ({"url": "https://"}, 400, "no host"),
        ({"url": "http://127.0.0.1:" + port + "/admin/v1/kill"}, 400, "itself"),
        ({"url": "http://localhost:" + port + "/x"}, 400, "itself"),
        ({"url": "http://[::1]:" + port + "/x"}, 400, "itself"),
        ({"url": "https://ok.example/" + "a" * 2100}, 400, "url"),
        ({"url": "https://ok.example/x y"}, 400, "spaces"),
        ({"url": "https://ok.example/x", "events": ["flag.chnged"]}, 400, "unknown event"),
        ({"url": "https://ok.example/x", "events": ["nope.*"]}, 400, "unknown event"),
        ({"url": "https://ok.example/x", "events": []}, 400, "events"),
        ({"url": "https://ok.example/x", "secret": "short"}, 400, "16"),
        ({"url": "https://ok.example/x", "secret": "é" * 7}, 400, "16"),
        ({"url": "https://ok.example/x", "format": "xml"}, 400, "format"),
        ({"url": "https://ok.example/x", "tag": "a\nb"}, 400, "tag"),
        ({"url": "https://ok.example/x", "extra": 1}, 400, "extra"),
        ({"url": 7}, 400, "url"),
    ]
    with server.admin() as client:
        audit_before = client.get("/admin/v1/audit").json()["entries"]
        for body, status, text in cases:
            answer = client.post("/admin/v1/webhooks", json=body)
            assert answer.status_code == status, (body, answer.text)
            assert answer.headers["content-type"].startswith("application/problem+json")
            assert text in answer.text, (body, answer.text)
        assert client.get("/admin/v1/webhooks").json() == {"webhooks": []}
        assert client.get("/admin/v1/audit").json()["entries"] == audit_before
        # Another port on loopback is another service: allowed.
        assert (
            client.post("/admin/v1/webhooks", json={"url": "http://127.0.0.1:9/x"}).status_code
            == 201
        )
        for n in range(19):
            made = client.post("/admin/v1/webhooks", json={"url": f"https://h{n}.example/"})
            assert made.status_code == 201, made.text
        over = client.post("/admin/v1/webhooks", json={"url": "https://one-more.example/"})
        assert over.status_code == 409
        assert "at most 20" in over.text
        assert len(client.get("/admin/v1/webhooks").json()["webhooks"]) == 20
        assert client.delete("/admin/v1/webhooks/wh_nope").status_code == 404
        viewer = client.post("/admin/v1/tokens", json={"name": "watch", "scope": "viewer"})
        headers = {"Authorization": f"Bearer {viewer.json()['secret']}"}
    with httpx.Client(base_url=server.url, headers=headers) as as_viewer:
        assert as_viewer.get("/admin/v1/webhooks").status_code == 200
        assert as_viewer.get("/admin/v1/webhooks/deliveries").status_code == 200
        refused = as_viewer.post("/admin/v1/webhooks", json={"url": "https://x.example/"})
        assert refused.status_code == 403


def flags(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [flags_executable(), "--url", server.url, "--token", ADMIN_TOKEN, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_cli_adds_lists_tests_and_removes_a_webhook(server: RunningServer) -> None:
    with Receiver() as receiver:
        added = flags(
            server,
            "webhook",
            "add",
            receiver.url,
            "--events",
            "flag.changed,rollout.*",
            "--reason",
            "ci",
        )
        assert added.returncode == 0, added.stderr
        secret = added.stdout.strip()
        assert secret.startswith("whsec_")
        assert "shown only now" in added.stderr
        listed = json.loads(flags(server, "webhook", "list", "--json").stdout)
        (webhook,) = listed["webhooks"]
        assert webhook["events"] == ["flag.changed", "rollout.*"]
        assert secret not in json.dumps(listed)
        tested = flags(server, "webhook", "test", webhook["id"])
        assert tested.returncode == 0, tested.stderr
        (test_delivery,) = receiver.deliveries()
        assert json.loads(test_delivery.body)["event"] == "webhook.test"
        assert readme_verify()(
            secret,
            test_delivery.body,
            test_delivery.headers["X-Flagport-Timestamp"],
            test_delivery.headers["X-Flagport-Signature"],
        )
        receiver.status = 500
        failed = flags(server, "webhook", "test", webhook["id"])
        assert failed.returncode == 1
        assert "HTTP 500" in failed.stderr
        shown = flags(server, "webhook", "deliveries", "--failed")
        assert shown.returncode == 0, shown.stderr
        removed = flags(server, "webhook", "remove", webhook["id"], "--reason", "done")
        assert removed.returncode == 0, removed.stderr
        assert json.loads(flags(server, "webhook", "list", "--json").stdout) == {"webhooks": []}
        audit = json.loads(flags(server, "audit", "--json").stdout)
        actions = [e["action"] for e in audit["entries"]]
        assert "webhook.create" in actions
        assert "webhook.remove" in actions
        assert not any(secret in json.dumps(e) for e in audit["entries"])
    # Checked before any request: exit 2.
    assert flags(server, "webhook", "add", "ftp://x.example/").returncode == 2
    assert (
        flags(server, "webhook", "add", "https://x.example/", "--secret", "short").returncode == 2
    )
    # Refused by the server: exit 1, the message names the problem.
    unknown = flags(server, "webhook", "add", "https://x.example/", "--events", "flag.chnged")
    assert unknown.returncode == 1
    assert "unknown event" in unknown.stderr


def test_a_silent_receiver_never_holds_up_a_slack_channel(tmp_path: Path) -> None:
    extra = ["--public-url", "https://flags.portal.example"]
    with (
        running_server(tmp_path, extra=extra) as server,
        Receiver(status=None) as silent,
        Receiver() as slack,
    ):
        create_flags(server, "checkout")
        add_webhook(server, silent.url)
        add_webhook(server, slack.url, format="slack", events=["flag.changed"])
        silent.wait_for(lambda r: len(r) >= 1)  # its task now waits for an answer
        started = time.time()
        change(server, "checkout", "enable", percentage=25, reason="canary <!here>")
        (message,) = slack.wait_for(lambda r: len(r) >= 1, timeout=5)
        assert message.at - started < 1.0
        body = json.loads(message.body)
        assert set(body) == {"text", "blocks"}
        shown = json.dumps(body["blocks"], ensure_ascii=False)
        assert "`checkout`: enable: on, 100 % -&gt; 25 %" in shown
        assert "&lt;!here&gt;" in shown
        assert "<https://flags.portal.example/ui/flags?q=checkout|open in Flagport>" in shown

"""``webhook add|list|remove|test|deliveries|redeliver``: change notifications (docs/spec.md,
"Webhooks"). A webhook's secret is printed once, when it is added."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

import click

from flagport_cli._app import App, json_option, pass_app, reason_option
from flagport_cli._errors import Refused, UsageProblem
from flagport_cli._output import echo_json, printable, table

__all__ = ["webhook"]

#: The shortest secret the server accepts (bytes), checked here before any request.
MIN_SECRET_BYTES = 16


@click.group()
def webhook() -> None:
    """Send every change (flags, segments, tokens, imports, rollout steps and actions, stale
    flags) to a URL or to Slack, signed, at least once."""


def _path(webhook_id: str) -> str:
    return f"/admin/v1/webhooks/{quote(webhook_id, safe='')}"


@webhook.command("add")
@click.argument("url")
@click.option(
    "--events",
    metavar="E1,E2",
    help="Events to send (default: all): flag.changed, segment.changed, token.changed, "
    "webhook.changed, import.applied, rollout.step, rollout.action, flag.stale, "
    "FAMILY.* or *.",
)
@click.option("--tag", metavar="TAG", help="Only changes of flags with this tag.")
@click.option(
    "--format",
    "format_",
    type=click.Choice(["json", "slack"]),
    default="json",
    show_default=True,
    help="json: the audit entry, signed; slack: a Slack message (an incoming-webhook URL).",
)
@click.option(
    "--secret",
    metavar="S",
    help="The shared signing secret (16 bytes or more); default: one is made and printed once.",
)
@reason_option
@json_option
@pass_app
def add(
    app: App,
    url: str,
    events: str | None,
    tag: str | None,
    format_: str,
    secret: str | None,
    reason: str | None,
) -> None:
    """Add a webhook; it gets the changes made from now on."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise UsageProblem(f"the webhook URL must start with http:// or https://: {url!r}")
    if secret is not None and len(secret.encode()) < MIN_SECRET_BYTES:
        raise UsageProblem(
            f"--secret must be at least {MIN_SECRET_BYTES} bytes (leave it out and one is made)"
        )
    body: dict[str, Any] = {"url": url, "format": format_}
    if events is not None:
        names = [name.strip() for name in events.split(",") if name.strip()]
        if not names:
            raise UsageProblem("--events names no event")
        body["events"] = names
    for name, value in (("tag", tag), ("secret", secret), ("reason", reason)):
        if value is not None:
            body[name] = value
    answer = app.api().call("POST", "/admin/v1/webhooks", json=body)
    if app.json:
        echo_json(answer)
        return
    made = answer["webhook"]
    click.echo(
        f"added webhook {printable(made['id'])} -> {printable(made['url_hint'])} "
        f"({made['format']}; events: {', '.join(map(printable, made['events']))}"
        + (f"; tag {printable(made['tag'])}" if made.get("tag") else "")
        + ")",
        err=True,
    )
    if secret is None:
        click.echo("the signing secret is shown only now:", err=True)
        click.echo(answer["secret"])


@webhook.command("list")
@json_option
@pass_app
def list_webhooks(app: App) -> None:
    """List webhooks (never their secrets)."""
    answer = app.api().call("GET", "/admin/v1/webhooks")
    if app.json:
        echo_json(answer)
        return
    rows = [
        (
            w["id"],
            w["format"],
            ",".join(w["events"]),
            w.get("tag") or "",
            w.get("cursor") if w.get("cursor") is not None else "",
            w["url_hint"],
        )
        for w in answer.get("webhooks", [])
    ]
    table(["ID", "FORMAT", "EVENTS", "TAG", "CURSOR", "URL"], rows)


@webhook.command("remove")
@click.argument("webhook_id")
@reason_option
@json_option
@pass_app
def remove(app: App, webhook_id: str, reason: str | None) -> None:
    """Remove a webhook with its delivery states."""
    params = {"reason": reason} if reason else None
    answer = app.api().call("DELETE", _path(webhook_id), params=params)
    if app.json:
        echo_json(answer)
        return
    click.echo(f"removed webhook {printable(answer['id'])} ({printable(answer['url_hint'])})")


@webhook.command("test")
@click.argument("webhook_id")
@json_option
@pass_app
def test(app: App, webhook_id: str) -> None:
    """Send a signed webhook.test event now; exit 1 unless the receiver answers 2xx."""
    answer = app.api().call("POST", f"{_path(webhook_id)}/test")
    if app.json:
        echo_json(answer)
    if not answer["delivered"]:
        raise Refused(
            f"webhook {webhook_id} test failed: {printable(answer.get('error') or '')} "
            f"after {answer['elapsed_ms']} ms"
        )
    if not app.json:
        click.echo(f"delivered: HTTP {answer['status']} in {answer['elapsed_ms']} ms")


@webhook.command("deliveries")
@click.argument("webhook_id", required=False)
@click.option("--failed", is_flag=True, help="Only pending retries and dead letters.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@json_option
@pass_app
def deliveries(app: App, webhook_id: str | None, failed: bool, limit: int) -> None:
    """Delivery states, newest first (of one webhook, or all)."""
    params: dict[str, Any] = {"limit": limit}
    if failed:
        params["failed"] = "true"
    if webhook_id is not None:
        params["webhook"] = webhook_id
    answer = app.api().call("GET", "/admin/v1/webhooks/deliveries", params=params)
    if app.json:
        echo_json(answer)
        return
    rows = [
        (
            d["webhook_id"],
            d["audit_id"],
            d["event"],
            d["status"],
            d["attempts"],
            d.get("last_status") or "",
            d.get("last_error") or "",
        )
        for d in answer.get("deliveries", [])
    ]
    table(["WEBHOOK", "AUDIT ID", "EVENT", "STATUS", "ATTEMPTS", "HTTP", "ERROR"], rows)


@webhook.command("redeliver")
@click.argument("webhook_id")
@click.argument("audit_id", type=click.IntRange(1))
@json_option
@pass_app
def redeliver(app: App, webhook_id: str, audit_id: int) -> None:
    """Send a dead letter again now; exit 1 unless it is delivered."""
    answer = app.api().call("POST", f"{_path(webhook_id)}/deliveries/{audit_id}/redeliver")
    if app.json:
        echo_json(answer)
    if answer["status"] != "delivered":
        raise Refused(
            f"audit entry {audit_id} still fails: {printable(answer.get('last_error') or '')}"
        )
    if not app.json:
        click.echo(f"delivered audit entry {audit_id} to webhook {printable(webhook_id)}")

"""``token create|list|rotate|revoke``: API tokens (secrets are shown once, stored hashed;
personal tokens expire and are renewed by rotating them)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from flagport_cli._app import (
    App,
    confirm_applied,
    json_option,
    pass_app,
    reason_option,
    wait_options,
)
from flagport_cli._errors import UsageProblem
from flagport_cli._output import echo_json, printable, table, warn
from flagport_cli._validate import check_token_lifetime

__all__ = ["SCOPES", "token"]

#: The token scopes, narrowest first (docs/spec.md section 5).
SCOPES = ("evaluate", "sdk", "viewer", "admin")


@click.group()
def token() -> None:
    """Create, list and revoke API tokens."""


@token.command("create")
@click.argument("name")
@click.option(
    "--scope",
    type=click.Choice(SCOPES),
    help="evaluate: browser-safe evaluation; sdk: server SDKs and the PHP bridge (evaluation, "
    "/v1/snapshot, exposures); viewer: admin reads; admin: everything. Required.",
)
@click.option(
    "--expires",
    metavar="DURATION",
    help="A personal token's lifetime, e.g. 90d, 12w or 36h (1h to 730d); it stops working "
    "then (rotate it to renew it). Without it the token never expires.",
)
@wait_options
@json_option
@pass_app
def create_token(
    app: App, name: str, scope: str | None, expires: str | None, no_wait: bool, timeout: float
) -> None:
    """Create a token; its secret is printed once.

    Exits 0 once every live worker accepts it, so a script can use it at once."""
    if scope is None:
        # No default: a token's reach is chosen, never assumed (docs/spec.md section 5).
        raise UsageProblem(
            "token create needs --scope: evaluate (browser-safe: OFREP and the change "
            "stream), sdk (server SDKs and the PHP bridge: evaluate plus /v1/snapshot and "
            "exposures), viewer (admin reads, no change) or admin (everything)"
        )
    check_token_lifetime(expires)
    request: dict[str, str] = {"name": name, "scope": scope}
    if expires is not None:
        request["expires"] = expires
    body = app.api().call("POST", "/admin/v1/tokens", json=request)
    _show_secret(app, body, f"created {printable(body['token']['scope'])} token", "the secret")
    # A server too old to say from which version its workers accept the token: no wait.
    version = body.get("snapshot_version")
    confirm_applied(
        app,
        version,
        no_wait=no_wait,
        timeout=timeout,
        said="accepted by all {workers} live worker(s)",
        err=True,
    )


def _show_secret(app: App, body: dict[str, Any], done: str, secret: str) -> None:
    """Print a created or rotated token's answer: what was done (stderr) and its secret, the
    only thing on stdout (or the whole answer with --json)."""
    if app.json:
        echo_json(body)
        return
    made = body["token"]
    until = f", expires {printable(made['expires_at'])}" if made.get("expires_at") else ""
    click.echo(f"{done} {printable(made['name'])} (id {printable(made['id'])}{until})", err=True)
    click.echo(f"{secret} is shown only now:", err=True)
    click.echo(body["secret"])


@token.command("rotate")
@click.argument("token_id")
@click.option(
    "--expires",
    metavar="DURATION",
    help="The new secret's lifetime (e.g. 90d); default: the token's lifetime so far, from "
    "now (a token that never expired still never does).",
)
@reason_option
@wait_options
@json_option
@pass_app
def rotate_token(
    app: App,
    token_id: str,
    expires: str | None,
    reason: str | None,
    no_wait: bool,
    timeout: float,
) -> None:
    """Give a token a new secret, printed once; the old secret stops working.

    The token keeps its id, name and scope, so its audit trail goes on. Exits 0 once every
    live worker refuses the old secret (like `flags token revoke`)."""
    check_token_lifetime(expires)
    request = {k: v for k, v in (("expires", expires), ("reason", reason)) if v is not None}
    body = app.api().call(
        "POST", f"/admin/v1/tokens/{quote(token_id, safe='')}/rotate", json=request or None
    )
    _show_secret(app, body, "rotated token", "the new secret")
    confirm_applied(
        app,
        int(body["snapshot_version"]),
        no_wait=no_wait,
        timeout=timeout,
        said="old secret refused by all {workers} live worker(s)",
        err=True,
    )


@token.command("list")
@json_option
@pass_app
def list_tokens(app: App) -> None:
    """List tokens (never their secrets)."""
    body = app.api().call("GET", "/admin/v1/tokens")
    if app.json:
        echo_json(body)
        return
    tokens = body.get("tokens", [])
    rows = [
        (
            t["id"],
            t["name"],
            t["scope"],
            t["created_at"],
            t.get("expires_at") or "never",
            t.get("status") or "valid",
        )
        for t in tokens
    ]
    table(["ID", "NAME", "SCOPE", "CREATED", "EXPIRES", "STATUS"], rows)
    for t in tokens:
        if t.get("status") == "expiring":
            warn(
                f"token {printable(t['name'])} expires at {printable(t['expires_at'])}: "
                f"flags token rotate {printable(t['id'])}"
            )


@token.command("revoke")
@click.argument("token_id")
@wait_options
@json_option
@pass_app
def revoke_token(app: App, token_id: str, no_wait: bool, timeout: float) -> None:
    """Revoke a token by id.

    Exits 0 only once every live worker refuses the token (like `flags disable`), and its
    open change streams are closed."""
    body = app.api().call("DELETE", f"/admin/v1/tokens/{quote(token_id, safe='')}")
    if app.json:
        echo_json(body)
    else:
        click.echo(
            f"revoked token {printable(body['name'])} (id {printable(body['id'])}) "
            f"at {body.get('revoked_at')}"
        )
    version = body.get("snapshot_version")
    # An older server does not say which version carries it: no wait.
    confirm_applied(
        app,
        version,
        no_wait=no_wait,
        timeout=timeout,
        said="refused by all {workers} live worker(s) from snapshot version {version}",
    )


@token.command("rotate-secret")
@reason_option
@wait_options
@json_option
@pass_app
def rotate_secret(app: App, reason: str | None, no_wait: bool, timeout: float) -> None:
    """Replace the server secret that signs browser stream tickets.

    Pages re-fetch their flags for a new ticket when their stream is refused. Exits 0 once
    every live worker uses the new secret."""
    body = app.api().call(
        "POST", "/admin/v1/secret/rotate", json={"reason": reason} if reason else None
    )
    # Both are in every answer of this route: anything else is not Flagport's answer.
    rotated_at, version = str(body["rotated_at"]), int(body["snapshot_version"])
    if app.json:
        echo_json(body)
    else:
        click.echo(f"server secret rotated at {printable(rotated_at)}")
    confirm_applied(
        app,
        version,
        no_wait=no_wait,
        timeout=timeout,
        said="used by all {workers} live worker(s) from snapshot version {version}",
    )

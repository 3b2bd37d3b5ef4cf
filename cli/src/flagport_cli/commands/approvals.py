"""Approvals (docs/spec.md, "Approvals"): ``approvals require|list|remove`` (policies),
``request ...`` (file a change for a second person), ``requests``, ``approve ID``,
``reject ID``. A change refused for want of an approved request exits 6
(:class:`~flagport_cli._errors.ApprovalNeeded`); disabling never needs one."""

from __future__ import annotations

import json
from pathlib import Path
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
from flagport_cli._output import echo_json, fmt_percentage, printable, table
from flagport_cli._validate import check_key, parse_percentage

__all__ = ["approvals", "approve", "reject", "request", "requests"]

#: Bytes a change file may have (a flag or a segment body: far below the server's limit).
_MAX_CHANGE_FILE = 1 << 20


def _policy_body(key: str | None, tag: str | None) -> dict[str, str]:
    if (key is None) == (tag is None):
        raise UsageProblem("name a flag KEY or --tag TAG (one of them)")
    return {"flag": check_key(key)} if key is not None else {"tag": str(tag)}


@click.group()
def approvals() -> None:
    """Approval policies: which flags need a second person for a change that widens them."""


@approvals.command("require")
@click.argument("key", required=False)
@click.option("--tag", help="Guard every flag with this tag (now and later).")
@reason_option
@json_option
@pass_app
def require(app: App, key: str | None, tag: str | None, reason: str | None) -> None:
    """Guard flag KEY (or every flag with --tag): enabling, a higher percentage, targets,
    rules, segments it uses, a plan start or resume, a PUT or an import need an approved
    change request; disabling and lowering never wait."""
    body = _policy_body(key, tag)
    if reason:
        body["reason"] = reason
    answer = app.api().call("POST", "/admin/v1/approvals", json=body)
    if app.json:
        echo_json(answer)
    else:
        click.echo(f"approval policy {printable(answer['policy']['id'])} added")


@approvals.command("list")
@json_option
@pass_app
def list_policies(app: App) -> None:
    """List approval policies."""
    answer = app.api().call("GET", "/admin/v1/approvals")
    if app.json:
        echo_json(answer)
        return
    rows = [
        (p["id"], p["created_at"], p["created_by"], p.get("reason") or "")
        for p in answer.get("policies", [])
    ]
    table(["POLICY", "CREATED", "BY", "REASON"], rows)


@approvals.command("remove")
@click.argument("key", required=False)
@click.option("--tag", help="The tag policy to remove.")
@json_option
@pass_app
def remove(app: App, key: str | None, tag: str | None) -> None:
    """Remove the policy of flag KEY (or of --tag)."""
    body = _policy_body(key, tag)
    policy = f"flag:{body['flag']}" if "flag" in body else f"tag:{body['tag']}"
    answer = app.api().call("DELETE", f"/admin/v1/approvals/{quote(policy, safe=':')}")
    if app.json:
        echo_json(answer)
    else:
        # The answer names what was removed: anything else is not Flagport's answer.
        click.echo(f"approval policy {printable(answer['id'])} removed")


def _reason(function: Any) -> Any:
    return click.option(
        "--reason", required=True, help="Why (the approver reads it; kept in the audit log)."
    )(function)


def _read_object(path: str) -> dict[str, Any]:
    """A JSON object from ``path``, checked before any request (exit 2 naming the file and
    the position)."""
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(_MAX_CHANGE_FILE + 1)
    except OSError as error:
        raise UsageProblem(f"cannot read {path}: {error.strerror or error}") from None
    if len(data) > _MAX_CHANGE_FILE:
        raise UsageProblem(f"{path} is larger than {_MAX_CHANGE_FILE} bytes")
    try:
        body = json.loads(data)
    except json.JSONDecodeError as error:
        raise UsageProblem(
            f"{path} (line {error.lineno}, column {error.colno}): not JSON: {error.msg}"
        ) from None
    except ValueError as error:  # not UTF-8
        raise UsageProblem(f"{path}: not JSON: {error}") from None
    if not isinstance(body, dict):
        raise UsageProblem(f"{path}: a JSON object is needed")
    return body


def _file(app: App, key: str, change: dict[str, Any], reason: str) -> None:
    answer = app.api().call(
        "POST", "/admin/v1/requests", json={"key": key, "change": change, "reason": reason}
    )
    if app.json:
        echo_json(answer)
        return
    filed = answer["request"]
    click.echo(
        f"request {printable(filed['id'])} filed: {printable(filed['change'].get('kind'))} "
        f"{printable(filed['key'])}, expires {printable(filed['expires_at'])}; "
        f"a second person approves it with: flags approve {printable(filed['id'])}"
    )


@click.group()
def request() -> None:
    """File a change request for a second person to approve (expires in 24 h)."""


@request.command("enable")
@click.argument("key")
@click.option("--percentage", help="0-100, up to 3 decimals; default: the stored one.")
@_reason
@json_option
@pass_app
def request_enable(app: App, key: str, percentage: str | None, reason: str) -> None:
    """Ask for `flags enable KEY [--percentage N]`."""
    change: dict[str, Any] = {"kind": "enable"}
    if percentage is not None:
        change["percentage"] = parse_percentage(percentage)
    _file(app, check_key(key), change, reason)


@request.command("put")
@click.argument("key")
@click.option("--file", "path", required=True, help="The whole flag as JSON (as `flags show`).")
@_reason
@json_option
@pass_app
def request_put(app: App, key: str, path: str, reason: str) -> None:
    """Ask for a PUT of the whole flag KEY (variants, targets, rules, state...)."""
    flag = _read_object(path)
    for stamped in ("key", "version", "created_at", "updated_at"):
        flag.pop(stamped, None)  # what `flags show --json` prints: the server sets them
    _file(app, check_key(key), {"kind": "put", "flag": flag}, reason)


@request.command("segment")
@click.argument("key")
@click.option("--file", "path", required=True, help="The whole segment as JSON.")
@_reason
@json_option
@pass_app
def request_segment(app: App, key: str, path: str, reason: str) -> None:
    """Ask for a PUT of segment KEY (used by a guarded flag)."""
    segment = _read_object(path)
    for stamped in ("key", "version", "updated_at"):
        segment.pop(stamped, None)
    _file(app, check_key(key), {"kind": "segment", "segment": segment}, reason)


@request.command("delete")
@click.argument("key")
@_reason
@json_option
@pass_app
def request_delete(app: App, key: str, reason: str) -> None:
    """Ask for `flags delete KEY`."""
    _file(app, check_key(key), {"kind": "delete"}, reason)


@request.command("rollout-resume")
@click.argument("key")
@_reason
@json_option
@pass_app
def request_resume(app: App, key: str, reason: str) -> None:
    """Ask for `flags rollout resume KEY`."""
    _file(app, check_key(key), {"kind": "rollout-resume"}, reason)


@click.command()
@click.option("--all", "everything", is_flag=True, help="Decided requests too.")
@json_option
@pass_app
def requests(app: App, everything: bool) -> None:
    """List change requests (pending ones; --all for every kept one)."""
    answer = app.api().call("GET", "/admin/v1/requests")
    if app.json:
        echo_json(answer)
        return
    rows = [
        (
            r["id"],
            r["status"],
            r["key"],
            _change_text(r["change"]),
            r["requested_by"],
            r["expires_at"] if r["status"] == "pending" else (r.get("decided_by") or ""),
            r["reason"],
        )
        for r in answer.get("requests", [])
        if everything or r["status"] == "pending"
    ]
    table(["ID", "STATUS", "KEY", "CHANGE", "BY", "EXPIRES/DECIDED BY", "REASON"], rows)


def _change_text(change: dict[str, Any]) -> str:
    kind = str(change.get("kind"))
    if kind == "enable" and change.get("percentage") is not None:
        return f"enable {fmt_percentage(change['percentage'])}"
    return kind


def _decide(app: App, request_id: str, verb: str, reason: str | None) -> dict[str, Any]:
    answer: dict[str, Any] = app.api().call(
        "POST",
        f"/admin/v1/requests/{quote(request_id, safe='')}/{verb}",
        json={"reason": reason} if reason else None,
    )
    if app.json:
        echo_json(answer)
    return answer


@click.command()
@click.argument("request_id")
@reason_option
@wait_options
@json_option
@pass_app
def approve(app: App, request_id: str, reason: str | None, no_wait: bool, timeout: float) -> None:
    """Approve change request ID (filed by someone else): its change is applied now, on the
    flag version it was filed on (else exit 1: file it again), and served by every live
    worker when this exits 0."""
    answer = _decide(app, request_id, "approve", reason)
    if not app.json:
        done = answer["request"]
        click.echo(
            f"request {printable(done['id'])} approved: {_change_text(done['change'])} "
            f"{printable(done['key'])} applied (snapshot version {answer.get('snapshot_version')})"
        )
    confirm_applied(app, answer.get("snapshot_version"), no_wait=no_wait, timeout=timeout)


@click.command()
@click.argument("request_id")
@reason_option
@json_option
@pass_app
def reject(app: App, request_id: str, reason: str | None) -> None:
    """Reject change request ID (its author may withdraw it so)."""
    answer = _decide(app, request_id, "reject", reason)
    if not app.json:
        click.echo(f"request {printable(answer['request']['id'])} rejected")

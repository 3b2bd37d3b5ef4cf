"""State changes that must reach every worker: ``enable``, ``disable``, ``kill``.

They print the new state, then wait on the propagation registry until every live worker of
every instance has applied the new snapshot version (exit 5 naming the stragglers after
``--timeout``). When ``flags disable X`` exits 0, the kill switch is live everywhere.
This module is on the hot path of an emergency: stdlib, click and httpx only.
"""

from __future__ import annotations

from typing import Any

import click

from flagport_cli._app import (
    App,
    confirm_applied,
    json_option,
    pass_app,
    reason_option,
    wait_options,
)
from flagport_cli._errors import Refused, UsageProblem
from flagport_cli._output import echo_json, fmt_percentage, warn
from flagport_cli._validate import check_key, parse_percentage
from flagport_cli.commands.flags import flag_path, print_flag_line

__all__ = ["disable", "enable"]


def _finish(app: App, result: dict[str, Any], no_wait: bool, timeout: float) -> None:
    if app.json:
        echo_json(result)
    else:
        for flag in result["flags"] if "flags" in result else [result["flag"]]:
            print_flag_line(flag)
    confirm_applied(app, result["snapshot_version"], no_wait=no_wait, timeout=timeout)
    unreadable = result.get("unreadable") or []
    if unreadable:
        # The rest is off everywhere; these serve PARSE_ERROR (every client's code default)
        # until repaired, but the kill did not reach them: say so with exit 1.
        raise Refused(
            f"not disabled, the store cannot read them: {', '.join(unreadable)} "
            "(they serve PARSE_ERROR; repair with `flags delete KEY` or `flags import`)"
        )


@click.command()
@click.argument("key")
@click.option("--percentage", "-p", help="Share of units served on, 0-100 (at most 3 decimals).")
@reason_option
@wait_options
@json_option
@pass_app
def enable(
    app: App, key: str, percentage: str | None, reason: str | None, no_wait: bool, timeout: float
) -> None:
    """Enable a flag, at --percentage or at its stored percentage."""
    check_key(key)
    body: dict[str, Any] = {}
    if percentage is not None:
        body["percentage"] = parse_percentage(percentage)
    if reason:
        body["reason"] = reason
    result = app.api().call("POST", flag_path(key, "/enable"), json=body)
    stored = result["flag"].get("percentage")
    if percentage is None and stored == 0:
        warn(f"{key} is enabled at {fmt_percentage(stored)}: nobody gets it (use --percentage)")
    _finish(app, result, no_wait, timeout)


def _kill(
    app: App,
    keys: tuple[str, ...],
    tags: tuple[str, ...],
    everything: bool,
    reason: str | None,
    no_wait: bool,
    timeout: float,
    command: str,
) -> None:
    for key in keys:
        check_key(key)
    chosen = sum((bool(keys), bool(tags), everything))
    if chosen != 1:
        raise UsageProblem(f"{command}: give flag keys, --tag or --all (exactly one of them)")
    if len(tags) > 1:
        raise UsageProblem(f"{command}: one --tag at a time")
    api = app.api()
    if len(keys) == 1:
        body: dict[str, Any] = {"reason": reason} if reason else {}
        result = api.call("POST", flag_path(keys[0], "/disable"), json=body)
    else:
        # The server wants a reason for a bulk kill; an emergency must not stall on it.
        what = ", ".join(keys) if keys else (f"tag {tags[0]}" if tags else "all flags")
        kill: dict[str, Any] = {"reason": reason or f"flags {command} {what} (no reason given)"}
        if keys:
            kill["keys"] = list(keys)
        elif tags:
            kill["tag"] = tags[0]
        else:
            kill["all"] = True
        result = api.call("POST", "/admin/v1/kill", json=kill)
    _finish(app, result, no_wait, timeout)


@click.command()
@click.argument("keys", nargs=-1)
@click.option("--tag", "tags", multiple=True, help="Disable every flag with this tag.")
@click.option("--all", "everything", is_flag=True, help="Disable every flag.")
@reason_option
@wait_options
@json_option
@pass_app
def disable(
    app: App,
    keys: tuple[str, ...],
    tags: tuple[str, ...],
    everything: bool,
    reason: str | None,
    no_wait: bool,
    timeout: float,
) -> None:
    """Disable flags (the kill switch): KEY..., --tag T or --all, in one atomic change.

    Exits 0 only once every live worker serves the change. Also installed as `flags kill`."""
    command = click.get_current_context().info_name or "disable"
    _kill(app, keys, tags, everything, reason, no_wait, timeout, command)

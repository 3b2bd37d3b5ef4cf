"""Flag CRUD: ``list``, ``show``, ``create``, ``delete``, ``target``."""

from __future__ import annotations

import sys
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
from flagport_cli._output import echo_json, fmt_percentage, fmt_value, printable, table
from flagport_cli._validate import check_key, parse_percentage

__all__ = ["create", "delete", "list_flags", "show", "target"]


def flag_path(key: str, suffix: str = "") -> str:
    return f"/admin/v1/flags/{quote(key, safe='')}{suffix}"


def state_word(flag: dict[str, Any]) -> str:
    return "on" if flag.get("enabled") else "off"


def print_flag_line(flag: dict[str, Any]) -> None:
    click.echo(
        f"{flag.get('key')}: {state_word(flag)} at {fmt_percentage(flag.get('percentage'))} "
        f"(version {flag.get('version')})"
    )


@click.command("list")
@click.option("--tag", "tags", multiple=True, help="Only flags with this tag (repeatable).")
@json_option
@pass_app
def list_flags(app: App, tags: tuple[str, ...]) -> None:
    """List flags: state, percentage, tags, owner."""
    body = app.api().call("GET", "/admin/v1/flags")
    if tags:
        body["flags"] = [f for f in body["flags"] if set(tags) & set(f.get("tags") or [])]
    if app.json:
        echo_json(body)
        return
    rows = [
        (
            f["key"],
            state_word(f),
            fmt_percentage(f.get("percentage")),
            ",".join(f.get("tags") or []),
            f.get("owner") or "",
            f.get("description") or "",
        )
        for f in body["flags"]
    ]
    rows += [
        (key, "UNREADABLE", "", "", "", f"stored flag cannot be read: {why}")
        for key, why in sorted((body.get("unreadable") or {}).items())
    ]
    table(["KEY", "STATE", "PERCENT", "TAGS", "OWNER", "DESCRIPTION"], rows)


@click.command()
@click.argument("key")
@json_option
@pass_app
def show(app: App, key: str) -> None:
    """Show one flag in full."""
    check_key(key)
    flag = app.api().call("GET", flag_path(key))
    if app.json:
        echo_json(flag)
        return
    lines: list[tuple[str, str]] = [
        ("key", flag["key"]),
        ("state", state_word(flag)),
        ("percentage", fmt_percentage(flag.get("percentage"))),
        ("description", flag.get("description") or ""),
        ("owner", flag.get("owner") or ""),
        ("tags", ", ".join(flag.get("tags") or [])),
        ("bucket_by", flag.get("bucket_by") or "targetingKey"),
        ("salt", flag.get("salt") or f"(the key: {flag['key']})"),
        (
            "variants",
            ", ".join(f"{k}={fmt_value(v)}" for k, v in (flag.get("variants") or {}).items()),
        ),
        ("on/off variant", f"{flag.get('on_variant')} / {flag.get('off_variant')}"),
    ]
    if flag.get("weights"):
        lines.append(("weights", ", ".join(f"{k}={v}" for k, v in flag["weights"].items())))
    for variant, units in (flag.get("targets") or {}).items():
        lines.append((f"targets[{variant}]", ", ".join(units)))
    for index, rule in enumerate(flag.get("rules") or []):
        conditions = " and ".join(
            f"{c.get('attribute')} {c.get('op')} {fmt_value(c.get('values'))}"
            for c in rule.get("conditions") or []
        )
        serves = rule.get("variant") or (
            f"{fmt_percentage(rule['percentage'])}" if rule.get("percentage") is not None else "?"
        )
        name = f" {rule['name']}" if rule.get("name") else ""
        lines.append((f"rule {index}{name}", f"if {conditions or 'always'} -> {serves}"))
    for prerequisite in flag.get("prerequisites") or []:
        variant = prerequisite.get("variant")
        lines.append(
            ("prerequisite", prerequisite["key"] + (f" serving {variant}" if variant else ""))
        )
    lines += [
        ("version", str(flag.get("version"))),
        ("created", flag.get("created_at") or ""),
        ("updated", flag.get("updated_at") or ""),
    ]
    lines = [(printable(name), printable(value)) for name, value in lines]
    width = max(len(name) for name, _ in lines)
    for name, value in lines:
        click.echo(f"{name.ljust(width)}  {value}")


@click.command()
@click.argument("key")
@click.option("--description", default="", help="What the flag is for.")
@click.option("--percentage", help="Share of units served on, 0-100, at most 3 decimals.")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--bucket-by", help="Context attribute to bucket on (default targetingKey).")
@click.option("--salt", help="Bucketing salt (default: the key; a parent's key nests cohorts).")
@click.option("--owner", help="Team or person responsible.")
@click.option("--enabled", is_flag=True, help="Create it enabled (a new flag is off).")
@reason_option
@wait_options
@json_option
@pass_app
def create(
    app: App,
    key: str,
    description: str,
    percentage: str | None,
    tags: tuple[str, ...],
    bucket_by: str | None,
    salt: str | None,
    owner: str | None,
    enabled: bool,
    reason: str | None,
    no_wait: bool,
    timeout: float,
) -> None:
    """Create a flag (off, at 100 % unless --percentage)."""
    check_key(key)
    body: dict[str, Any] = {"key": key, "description": description, "enabled": enabled}
    if percentage is not None:
        body["percentage"] = parse_percentage(percentage)
    if tags:
        body["tags"] = list(tags)
    if bucket_by:
        body["bucket_by"] = bucket_by
    if salt is not None:
        if not salt:
            raise UsageProblem("--salt must not be empty")
        body["salt"] = salt
    if owner:
        body["owner"] = owner
    if reason:
        body["reason"] = reason
    result = app.api().call("POST", "/admin/v1/flags", json=body)
    if app.json:
        echo_json(result)
    else:
        click.echo("created ", nl=False)
        print_flag_line(result["flag"])
    confirm_applied(app, result["snapshot_version"], no_wait=no_wait, timeout=timeout)


@click.command()
@click.argument("key")
@click.option("--recursive", is_flag=True, help="Delete its children too.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@reason_option
@wait_options
@json_option
@pass_app
def delete(
    app: App,
    key: str,
    recursive: bool,
    yes: bool,
    reason: str | None,
    no_wait: bool,
    timeout: float,
) -> None:
    """Delete a flag (a parent only with --recursive)."""
    check_key(key)
    if not yes:
        if not sys.stdin.isatty():
            raise UsageProblem(f"refusing to delete {key} without --yes (no terminal to ask)")
        what = f"{key} and its children" if recursive else key
        if not click.confirm(f"Delete {what}?", default=False):
            raise click.Abort
    params = {"recursive": "true" if recursive else None, "reason": reason}
    result = app.api().call("DELETE", flag_path(key), params=params)
    if app.json:
        echo_json(result)
    else:
        deleted = ", ".join(result["deleted"])
        click.echo(f"deleted {deleted} (snapshot version {result['snapshot_version']})")
    confirm_applied(app, result["snapshot_version"], no_wait=no_wait, timeout=timeout)


def _units(values: tuple[str, ...]) -> list[str]:
    units = [u.strip() for value in values for u in value.split(",") if u.strip()]
    return list(dict.fromkeys(units))


@click.command()
@click.argument("key")
@click.option("--on", "on_units", multiple=True, help="Units always on (repeatable, or a,b,c).")
@click.option("--off", "off_units", multiple=True, help="Units always off (repeatable).")
@click.option("--remove", "removed", multiple=True, help="Units to drop from every target list.")
@click.option("--clear", is_flag=True, help="Drop every existing target first.")
@reason_option
@wait_options
@json_option
@pass_app
def target(
    app: App,
    key: str,
    on_units: tuple[str, ...],
    off_units: tuple[str, ...],
    removed: tuple[str, ...],
    clear: bool,
    reason: str | None,
    no_wait: bool,
    timeout: float,
) -> None:
    """Target individual units: they get the on (or off) variant whatever the percentage.

    Other existing targets are kept unless --clear; a unit lives in one list only."""
    check_key(key)
    on, off, drop = _units(on_units), _units(off_units), _units(removed)
    if set(on) & set(off):
        raise UsageProblem(f"units both --on and --off: {', '.join(sorted(set(on) & set(off)))}")
    if not (on or off or drop or clear):
        raise UsageProblem("nothing to do: give --on, --off, --remove or --clear")
    api = app.api()
    flag = api.call("GET", flag_path(key))
    targets: dict[str, list[str]] = {} if clear else dict(flag.get("targets") or {})
    moving = set(on) | set(off) | set(drop)
    targets = {v: [u for u in units if u not in moving] for v, units in targets.items()}
    for variant, units in ((flag["on_variant"], on), (flag["off_variant"], off)):
        if units:
            targets[variant] = [*targets.get(variant, []), *units]
    targets = {v: units for v, units in targets.items() if units}
    body: dict[str, Any] = {"targets": targets}
    if reason:
        body["reason"] = reason
    result = api.call("PUT", flag_path(key, "/targets"), json=body)
    if app.json:
        echo_json(result)
    else:
        print_flag_line(result["flag"])
        for variant, units in (result["flag"].get("targets") or {}).items():
            click.echo(f"  {variant}: {', '.join(units)}")
    confirm_applied(app, result["snapshot_version"], no_wait=no_wait, timeout=timeout)

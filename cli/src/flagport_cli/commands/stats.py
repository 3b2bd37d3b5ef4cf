"""Adoption: ``stats`` (one flag's evaluations, unique units, series and changes) and
``stale`` (flags nobody evaluates, or that serve everyone alike: candidates for removal)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from flagport_cli._app import App, json_option, pass_app
from flagport_cli._output import echo_json, fmt_percentage, printable, table
from flagport_cli._validate import check_key, check_stats_since
from flagport_cli.commands.flags import flag_path
from flagport_cli.commands.rollout import plan_path, plan_summary

__all__ = ["stale", "stats"]

_BARS = " ▁▂▃▄▅▆▇█"


def _number(value: Any) -> str:
    return f"{int(value):,}" if isinstance(value, int | float) else "-"


def _time(text: str | None) -> str:
    if not text:
        return "never"
    return text.replace("T", " ").replace("Z", " UTC")


def _sparkline(series: list[dict[str, Any]], since: str, until: str) -> tuple[str, str]:
    """Evaluations per bucket over the window, as bars; (bars, bucket size)."""
    start = datetime.fromisoformat(since.replace("Z", "+00:00"))
    end = datetime.fromisoformat(until.replace("Z", "+00:00"))
    span = max((end - start).total_seconds(), 60.0)
    width = 60
    size = max(60, int(span // width // 60 + 1) * 60)
    buckets = [0] * (int(span // size) + 1)
    for point in series:
        at = datetime.fromisoformat(point["at"].replace("Z", "+00:00"))
        index = int((at - start).total_seconds() // size)
        if 0 <= index < len(buckets):
            buckets[index] += sum(point.get("evaluations", {}).values())
    top = max(buckets) or 1
    bars = "".join(_BARS[0 if n == 0 else max(1, round(n / top * 8))] for n in buckets)
    label = f"{size // 60} min" if size < 3600 else f"{size / 3600:g} h"
    return bars, label


def _plan(app: App, key: str) -> dict[str, Any] | None:
    """The view of the flag's rollout plan, or None: it has none (or the server predates
    plans)."""
    response = app.api().send("GET", plan_path(key), ok=(404,))
    return None if response.status_code == 404 else app.api().json_object(response)


@click.command()
@click.argument("key")
@click.option(
    "--since",
    help="Window start: 1h, 24h, 7d or an ISO-8601 date-time (rounded down to the hour; "
    "at most 7 days back). Default: the server's, the last 24 hours.",
)
@json_option
@pass_app
def stats(app: App, key: str, since: str | None) -> None:
    """Adoption of a flag: who saw what (evaluations, unique units, series, changes)."""
    check_key(key)
    params = {} if since is None else {"since": check_stats_since(since)}
    body = app.api().call("GET", flag_path(key, "/stats"), params=params)
    if app.json:
        echo_json(body)
        return
    state = body.get("state") or {}
    served = "on" if state.get("enabled") else "off (kill switch)"
    click.echo(f"{key}: {served} at {fmt_percentage(body.get('percentage'))}")
    click.echo(f"window      {_time(body.get('since'))} -> {_time(body.get('until'))}")
    plan = _plan(app, key)
    if plan is not None:
        click.echo(f"rollout     {plan_summary(plan)}")
    adoption = body.get("adoption")
    shown = f"{adoption * 100:.1f} %" if isinstance(adoption, int | float) else "-"
    click.echo(
        f"enabled     {_number(body.get('enabled'))} units served on, of "
        f"{_number(body.get('units_seen'))} seen (adoption {shown})"
    )
    total = body.get("total_evaluations")
    click.echo(
        f"evaluations {_number(total)} "
        f"(first seen {_time(body.get('first_seen'))}, last seen {_time(body.get('last_seen'))})"
    )
    reported_total = body.get("total_reported_evaluations")
    if isinstance(total, int) and isinstance(reported_total, int):  # not from older servers
        # Anyone with an evaluation token can report exposures: show them apart.
        click.echo(
            f"            {_number(total - reported_total)} counted by the server, "
            f"{_number(reported_total)} reported by in-process clients (POST /v1/exposures)"
        )
    evaluations: dict[str, int] = body.get("evaluations") or {}
    reported: dict[str, int] = body.get("reported_evaluations") or {}
    unique: dict[str, int] = body.get("unique_units") or {}
    rows = [
        (variant, _number(n), _number(reported.get(variant, 0)), _number(unique.get(variant, 0)))
        for variant, n in sorted(evaluations.items(), key=lambda item: -item[1])
    ]
    if rows:
        table(["VARIANT", "EVALUATIONS", "REPORTED", "UNIQUE UNITS"], rows)
    series = body.get("series") or []
    if series:
        bars, size = _sparkline(series, body["since"], body["until"])
        click.echo(f"series      |{bars}| per {size} (last 48 h kept per minute)")
    for change in body.get("changes") or []:
        at = change.get("at", "")
        when = at[11:16] if len(at) >= 16 else at
        reason = f" ({change['reason']})" if change.get("reason") else ""
        click.echo(
            printable(
                f"change      {change.get('summary')} at {when} on {at[:10]} "
                f"by {change.get('actor')}{reason}"
            )
        )
    if not body.get("stats_enabled", True):
        click.echo("note        the server runs with --no-stats: nothing new is counted")


@click.command()
@click.option("--days", type=click.IntRange(1, 3650), default=30, show_default=True)
@json_option
@pass_app
def stale(app: App, days: int) -> None:
    """Flags not evaluated, or serving everyone alike, for DAYS: candidates for removal."""
    body = app.api().call("GET", "/admin/v1/stale", params={"days": days})
    if app.json:
        echo_json(body)
        return
    not_evaluated = body.get("not_evaluated") or []
    static = body.get("static") or []
    if not not_evaluated and not static:
        click.echo(f"no stale flags: every flag was evaluated and changed in the last {days} days")
        return
    if not_evaluated:
        click.echo(f"Not evaluated in {days} days:")
        table(
            ["KEY", "STATE", "LAST SEEN"],
            [
                (
                    f["key"],
                    f"{'on' if f.get('enabled') else 'off'} {fmt_percentage(f.get('percentage'))}",
                    _time(f.get("last_seen")),
                )
                for f in not_evaluated
            ],
        )
    if static:
        if not_evaluated:
            click.echo("")
        click.echo(f"Serving everyone alike for {days} days (remove from code?):")
        table(
            ["KEY", "SERVES", "LAST SEEN"],
            [(f["key"], f["why"], _time(f.get("last_seen"))) for f in static],
        )

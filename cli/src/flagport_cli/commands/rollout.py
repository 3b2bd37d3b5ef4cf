"""``rollout start|status|list|pause|resume|abort``: guarded rollouts (docs/spec.md,
"Guarded rollouts"). ``start`` reads its options with the SDK's own reading
(``flagport.rollout.options``) before any request, so a mistake exits 2 naming it; what
needs the flag (unknown, weights, a plan already, a first step below its percentage) is
the server's to refuse (exit 1)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
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
from flagport_cli._validate import check_key

__all__ = ["plan_path", "plan_summary", "rollout"]

_ROOT = "/admin/v1/rollouts"


def _path(key: str, suffix: str = "") -> str:
    return f"{_ROOT}/{quote(key, safe='')}{suffix}"


@click.group()
def rollout() -> None:
    """Guarded rollouts: plans that raise a flag step by step while their guards pass."""


@rollout.command("start")
@click.argument("key")
@click.option("--steps", help="Percentages, strictly increasing (default 10,25,50,100).")
@click.option("--hold", default="30m", show_default=True, help="How long each step holds.")
@click.option(
    "--start-at", help="ISO-8601 with offset (2026-12-10T02:00+01:00), or HH:MM with --tz."
)
@click.option("--tz", help="Time zone of --start-at HH:MM and --window (Europe/Berlin).")
@click.option("--window", help="Steps advance only inside HH:MM-HH:MM (with --tz).")
@click.option(
    "--guard",
    "guards",
    multiple=True,
    help="A rule (error_rate > 5%% over 5m), or runbook; repeatable.",
)
@click.option(
    "--on-breach",
    type=click.Choice(["rollback", "step-back", "pause"]),
    default="rollback",
    show_default=True,
)
@click.option(
    "--min-sample", type=int, default=200, show_default=True, help="Requests per cohort per window."
)
@click.option(
    "--vs-control", is_flag=True, help="Breach only when the treatment is worse than the control."
)
@click.option(
    "--max-hold", help="How long not enough data may extend a hold, then pause (default 4h)."
)
@click.option("--health-url", help="Polled by the driver (http/https); for health_failures.")
@click.option("--health-interval", help="Between two health polls (default 30s).")
@click.option(
    "--prometheus",
    help="Prometheus HTTP API base URL (http/https) that promql(...) guards query.",
)
@reason_option
@wait_options
@json_option
@pass_app
def start(
    app: App,
    key: str,
    steps: str | None,
    hold: str,
    start_at: str | None,
    tz: str | None,
    window: str | None,
    guards: tuple[str, ...],
    on_breach: str,
    min_sample: int,
    vs_control: bool,
    max_hold: str | None,
    health_url: str | None,
    health_interval: str | None,
    prometheus: str | None,
    reason: str | None,
    no_wait: bool,
    timeout: float,
) -> None:
    """Start a plan on flag KEY: the server's driver enables it at the first step (at
    --start-at, inside --window) and advances while every guard passes."""
    from flagport.rollout import RolloutError
    from flagport.rollout.options import PlanOptions, plan_spec
    from flagport.rollout.plan import check_spec

    check_key(key)
    options = PlanOptions(
        key=key,
        steps=steps,
        hold=hold,
        max_hold=max_hold,
        start_at=start_at,
        tz=tz,
        window=window,
        guards=list(guards),
        on_breach=on_breach,
        min_sample=min_sample,
        vs_control=vs_control,
        health_url=health_url,
        health_interval=health_interval,
        prometheus=prometheus,
    )
    try:
        check_spec(plan_spec(options, time.time()), time.time())
    except RolloutError as error:
        raise UsageProblem(f"rollout start: {error}") from None
    body: dict[str, Any] = {
        name: value
        for name, value in {
            "key": key,
            "steps": steps,
            "hold": hold,
            "max_hold": max_hold,
            "start_at": start_at,
            "tz": tz,
            "window": window,
            "guards": list(guards),
            "on_breach": on_breach,
            "min_sample": min_sample,
            "vs_control": vs_control,
            "health_url": health_url,
            "health_interval": health_interval,
            "prometheus": prometheus,
            "reason": reason,
        }.items()
        if value is not None
    }
    result = app.api().call("POST", _ROOT, json=body)
    if app.json:
        echo_json(result)
    else:
        spec = result["plan"]["spec"]
        steps_text = ", ".join(fmt_percentage(s) for s in spec["steps"])
        when = _moment(spec.get("start_at")) if spec.get("start_at") else "at once"
        click.echo(f"plan on {printable(key)}: steps {steps_text}, starting {when}")
        for rule in spec["guards"]:
            click.echo(f"  guard {printable(rule)}")
    confirm_applied(app, result["snapshot_version"], no_wait=no_wait, timeout=timeout)


@rollout.command("status")
@click.argument("key", required=False)
@json_option
@pass_app
def status(app: App, key: str | None) -> None:
    """A plan's step, percentage, time to the next step and every guard's reading (all
    plans without KEY)."""
    if key is not None:
        check_key(key)
        views = [app.api().call("GET", _path(key))]
    else:
        views = app.api().call("GET", _ROOT)["plans"]
    if app.json:
        echo_json(views[0] if key is not None else views)
        return
    if not views:
        click.echo("no rollout plans")
    for view in views:
        _print_view(view)


@rollout.command("list")
@json_option
@pass_app
def list_plans(app: App) -> None:
    """Every plan, one line each."""
    body = app.api().call("GET", _ROOT)
    if app.json:
        echo_json(body)
        return
    rows = [
        [
            view["key"],
            view["status"],
            f"{view['step']}/{len(view['steps'])}",
            fmt_percentage(view["percentage"]) if view["percentage"] is not None else "-",
            _next(view),
            view.get("reason") or "",
        ]
        for view in body["plans"]
    ]
    table(["FLAG", "STATUS", "STEP", "PERCENT", "NEXT", "REASON"], rows)
    for flag, why in sorted((body.get("unreadable") or {}).items()):
        click.echo(f"unreadable plan of {printable(flag)}: {printable(why)}", err=True)


def _change(
    app: App, key: str, action: str, body: dict[str, Any], no_wait: bool, timeout: float
) -> None:
    check_key(key)
    result = app.api().call("POST", _path(key, f"/{action}"), json=body)
    if app.json:
        echo_json(result)
    else:
        plan = result["plan"]
        shown = fmt_percentage(plan["percentage"]) if plan.get("percentage") is not None else "off"
        click.echo(f"plan on {printable(key)}: {plan['status']} (step {plan['step'] + 1}, {shown})")
    confirm_applied(app, result["snapshot_version"], no_wait=no_wait, timeout=timeout)


@rollout.command("pause")
@click.argument("key")
@reason_option
@wait_options
@json_option
@pass_app
def pause(app: App, key: str, reason: str | None, no_wait: bool, timeout: float) -> None:
    """Pause KEY's plan (exposure unchanged)."""
    _change(app, key, "pause", {"reason": reason} if reason else {}, no_wait, timeout)


@rollout.command("resume")
@click.argument("key")
@reason_option
@wait_options
@json_option
@pass_app
def resume(app: App, key: str, reason: str | None, no_wait: bool, timeout: float) -> None:
    """Resume KEY's plan: its hold restarts; exposure is never lowered."""
    _change(app, key, "resume", {"reason": reason} if reason else {}, no_wait, timeout)


@rollout.command("abort")
@click.argument("key")
@click.option("--rollback", is_flag=True, help="Also disable the flag (the kill switch).")
@reason_option
@wait_options
@json_option
@pass_app
def abort(
    app: App, key: str, rollback: bool, reason: str | None, no_wait: bool, timeout: float
) -> None:
    """Abort KEY's plan (with --rollback the flag is disabled in the same change, off on
    every live worker when this exits 0, as with `flags disable`)."""
    body: dict[str, Any] = {"rollback": rollback}
    if reason:
        body["reason"] = reason
    _change(app, key, "abort", body, no_wait, timeout)


def _moment(at: float | None) -> str:
    if at is None:
        return "-"
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _next(view: dict[str, Any]) -> str:
    at = view.get("next_at")
    if at is None or view["status"] not in ("running", "scheduled"):
        return "-"
    left = max(0, round(at - view["now"]))
    hours, rest = divmod(left, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"in {hours}h{minutes:02d}m{seconds:02d}s" if hours else f"in {minutes}m{seconds:02d}s"


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "-"


def plan_summary(view: dict[str, Any]) -> str:
    """One line for a plan's view (``GET /admin/v1/rollouts/{key}``): status, step,
    percentage, time to the next step and the last decision (``flags rollout status`` and
    ``flags stats``)."""
    percentage = view["percentage"]
    shown = fmt_percentage(percentage) if percentage is not None else "off"
    return printable(
        f"{view['status']}, step {view['step']}/{len(view['steps'])} ({shown}), "
        f"next {_next(view)}; {view['decision']}"
        + (f": {view['reason']}" if view.get("reason") else "")
    )


def plan_path(key: str) -> str:
    """The admin API path of the plan on ``key``."""
    return _path(key)


def _print_view(view: dict[str, Any]) -> None:
    click.echo(f"{printable(view['key'])}: {plan_summary(view)}")
    rows = []
    for guard in view["guards"]:
        evidence = guard["evidence"]
        treatment = evidence.get("treatment") or {}
        control = evidence.get("control") or {}
        span = evidence.get("window")
        window = f"{round((span[1] - span[0]) / 60)}m" if span else "-"
        value = evidence.get("value") if not treatment else treatment.get("value")
        # Why a promql guard has no value (no data, Prometheus's error, a timeout).
        note = evidence.get("note")
        verdict = guard["verdict"] + (f" ({printable(note)})" if note else "")
        rows.append(
            [
                guard["index"],
                evidence["rule"],
                _number(value),
                window,
                f"{treatment.get('requests', '-')}/{control.get('requests', '-')}",
                _number(evidence["threshold"]),
                verdict,
            ]
        )
    if rows:
        table(["#", "GUARD", "VALUE", "WINDOW", "SAMPLE T/C", "THRESHOLD", "VERDICT"], rows)

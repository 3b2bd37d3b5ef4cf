"""Read-only insight: ``audit``, ``explain``, ``status``."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from flagport_cli._app import App, json_option, pass_app
from flagport_cli._errors import NotAuthorized, UsageProblem
from flagport_cli._output import echo_json, fmt_percentage, fmt_value, printable, table
from flagport_cli._validate import check_key, since_text
from flagport_cli.commands.flags import flag_path

__all__ = ["audit", "explain", "status"]


def _change_summary(entry: dict[str, Any]) -> str:
    if entry.get("kind") == "request":
        return f"request {entry.get('request_id') or ''}".strip()
    marks = [
        *(["break-glass"] if entry.get("break_glass") else []),
        *([f"request {entry['request_id']}"] if entry.get("request_id") else []),
    ]
    summary = _state_change(entry)
    return ", ".join([summary, *marks] if summary else marks)


def _state_change(entry: dict[str, Any]) -> str:
    before, after = entry.get("before") or {}, entry.get("after") or {}
    if not before and not after:
        return ""
    parts = []
    for name in ("enabled", "percentage", "targets", "rules", "weights", "prerequisites"):
        old, new = before.get(name), after.get(name)
        if name == "enabled":
            old, new = bool(old), bool(new)
        if old != new and (before and after):
            if name == "percentage":
                parts.append(f"{fmt_percentage(old)} -> {fmt_percentage(new)}")
            elif name == "enabled":
                parts.append("on" if new else "off")
            else:
                parts.append(f"{name} changed")
    return ", ".join(parts)


@click.command()
@click.argument("key", required=False)
@click.option("--since", help="How far back: 30m, 1h, 7d, or an ISO-8601 date-time.")
@click.option("--actor", help="Only changes by this token name.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@json_option
@pass_app
def audit(app: App, key: str | None, since: str | None, actor: str | None, limit: int) -> None:
    """Who changed what, when and why (newest first)."""
    if key is not None:
        check_key(key)
    params = {
        "flag": key,
        "actor": actor,
        "since": since_text(since) if since is not None else None,
        "limit": limit,
    }
    body = app.api().call("GET", "/admin/v1/audit", params=params)
    if app.json:
        echo_json(body)
        return
    rows = [
        (
            e.get("id"),
            e.get("at"),
            e.get("actor"),
            e.get("token_id") or "-",
            e.get("action"),
            e.get("key"),
            _change_summary(e),
            e.get("reason") or "",
        )
        for e in body.get("entries", [])
    ]
    table(["ID", "AT", "ACTOR", "TOKEN", "ACTION", "KEY", "CHANGE", "REASON"], rows)


def _parse_attr(text: str) -> tuple[str, Any]:
    if ":=" in text and text.index(":=") < text.index("=") + 1:
        name, raw = text.split(":=", 1)
        try:
            return name, json.loads(raw)
        except ValueError:
            raise UsageProblem(f"--attr {text!r}: the value after := must be JSON") from None
    if "=" not in text:
        raise UsageProblem(f"--attr {text!r}: use name=value (a string) or name:=JSON")
    name, value = text.split("=", 1)
    if not name:
        raise UsageProblem(f"--attr {text!r}: the attribute name is empty")
    return name, value


def _echo(depth: int, text: str) -> None:
    click.echo("  " * depth + printable(text))


def _result_text(result: dict[str, Any]) -> str:
    text = (
        f"{result.get('variant')} ({fmt_value(result.get('value'))}), reason {result.get('reason')}"
    )
    if result.get("error_code"):
        text += f", error {result['error_code']}: {result.get('error_message')}"
    gated = (result.get("metadata") or {}).get("gatedBy")
    if gated:
        text += f", gated by {gated}"
    return text


def _split_lines(split: dict[str, Any], depth: int) -> None:
    _echo(
        depth, f"threshold   {split.get('threshold')} ({fmt_percentage(split.get('percentage'))})"
    )
    if split.get("weights"):
        weights = ", ".join(f"{k}={v}" for k, v in split["weights"].items())
        _echo(depth, f"weights     {weights}")
    if split.get("needs_unit") is False:
        _echo(depth, "no unit needed (0 % or 100 %)")
        return
    _echo(depth, f"unit        {split.get('bucket_by')} = {fmt_value(split.get('unit'))}")
    if "hash_input" in split:
        _echo(depth, f"hash input  {split['hash_input']!r}")
        _echo(depth, f"hash        {split['hash']} (MurmurHash3_x86_32, seed 0)")
        _echo(depth, f"bucket      {split['bucket']} of 100000")
    included = split.get("included")
    verdict = "yes" if included else ("no" if included is False else "no unit: error")
    _echo(depth, f"included    {verdict}")
    if "weight_point" in split:
        _echo(depth, f"weight      {split['weight_point']} of {split['weight_total']} (seed 1)")


RuleLookup = dict[str, list[dict[str, Any]]]


def _condition_text(condition: dict[str, Any]) -> str:
    values = condition.get("values") or []
    shown = fmt_value(values[0]) if len(values) == 1 else fmt_value(values)
    attribute = condition.get("attribute")
    return (
        f"{attribute} {condition.get('op')} {shown}"
        if attribute
        else f"{condition.get('op')} {shown}"
    )


def _rules_of(api: Any, node: dict[str, Any], into: RuleLookup) -> None:
    """The rule definitions of every flag in the trace that reached a rule (the trace holds
    only each condition's outcome)."""
    if (
        any(step.get("step") == "rule" for step in node.get("steps") or [])
        and node["key"] not in into
    ):
        into[node["key"]] = api.call("GET", flag_path(node["key"])).get("rules") or []
    for gate in node.get("gates") or []:
        _rules_of(api, gate, into)


def _trace(node: dict[str, Any], depth: int, rules: RuleLookup) -> None:
    if node.get("broken"):
        _echo(depth, f"BROKEN: {node['broken']}")
    for gate in node.get("gates") or []:
        verdict = "passes" if gate.get("passes") else "FAILS"
        needs = f", must serve {gate['required_variant']}" if gate.get("required_variant") else ""
        _echo(
            depth,
            f"{gate.get('kind')} {gate.get('key')} (salt {gate.get('salt')}{needs}): {verdict}",
        )
        _trace(gate, depth + 1, rules)
    for step in node.get("steps") or []:
        kind = step.get("step")
        if kind == "enabled":
            _echo(depth, f"enabled     {'yes' if step.get('value') else 'no (kill switch)'}")
        elif kind == "targets":
            matched = step.get("matched")
            _echo(
                depth,
                f"targets     targetingKey {fmt_value(step.get('targetingKey'))}: "
                + (f"matched -> {matched}" if matched else "no match"),
            )
        elif kind == "rule":
            name = f" {step['name']}" if step.get("name") else ""
            conditions = ", ".join("true" if c else "false" for c in step.get("conditions") or [])
            serves = f" -> {step['variant']}" if step.get("variant") and step.get("matched") else ""
            _echo(
                depth,
                f"rule {step.get('index')}{name}  conditions [{conditions}]: "
                f"{'matched' if step.get('matched') else 'no match'}{serves}",
            )
            definitions = rules.get(node.get("key", ""), [])
            index = step.get("index", -1)
            if 0 <= index < len(definitions):
                outcomes = step.get("conditions") or []
                for condition, outcome in zip(
                    definitions[index].get("conditions") or [], outcomes, strict=False
                ):
                    _echo(
                        depth + 1, f"{_condition_text(condition)}: {'true' if outcome else 'false'}"
                    )
            if step.get("split"):
                _split_lines(step["split"], depth + 1)
        elif kind == "split":
            _echo(depth, "split")
            _split_lines(step, depth + 1)
    if node.get("result"):
        _echo(depth, f"result      {_result_text(node['result'])}")


@click.command()
@click.argument("key")
@click.option("--user", "-u", "user", help="The targetingKey to evaluate for.")
@click.option(
    "--attr", "attrs", multiple=True, help="Context attribute name=value (or name:=JSON)."
)
@json_option
@pass_app
def explain(app: App, key: str, user: str | None, attrs: tuple[str, ...]) -> None:
    """Explain how a flag evaluates for a user, step by step (the server's own engine)."""
    check_key(key)
    context: dict[str, Any] = dict(_parse_attr(a) for a in attrs)
    if user is not None:
        context["targetingKey"] = user
    body = app.api().call("POST", flag_path(key, "/explain"), json={"context": context})
    if app.json:
        echo_json(body)
        return
    shown = ", ".join(f"{k}={fmt_value(v)}" for k, v in context.items()) or "empty context"
    click.echo(f"{key} for {shown} (snapshot version {body.get('snapshot_version')})")
    click.echo(f"salt {body.get('salt')}")
    rules: RuleLookup = {}
    if "steps" in body:
        _rules_of(app.api(), body, rules)
    _trace(body, 1, rules)


@click.command()
@json_option
@pass_app
def status(app: App) -> None:
    """Server reachable?, store, snapshot version and age, workers and their versions."""
    api = app.api()
    response = api.send("GET", "/readyz", auth=False, ok=(503,))
    ready = api.json_object(response)
    propagation: dict[str, Any] | None = None
    problem = None
    version = (ready.get("snapshot") or {}).get("version")
    if version is not None:
        try:
            propagation = api.call("GET", "/admin/v1/propagation", params={"version": version})
        except NotAuthorized as error:
            problem = error.message
    if app.json:
        echo_json({"readyz": ready, "propagation": propagation})
        return
    snapshot = ready.get("snapshot") or {}
    store = ready.get("store") or {}
    click.echo(f"server      {api.url}: {ready.get('status')}")
    click.echo(
        f"instance    {ready.get('instance')} (answered by worker pid {ready.get('worker')})"
    )
    store_text = f"{store.get('kind')} ({'ok' if store.get('ok') else 'DOWN'})"
    if store.get("problem"):
        store_text += f": {store['problem']}"
    click.echo(f"store       {printable(store_text)}")
    if snapshot:
        click.echo(
            f"snapshot    version {snapshot.get('version')}, age {snapshot.get('age_s')} s, "
            f"{snapshot.get('flags')} flags"
        )
    for warning in ready.get("warnings") or []:
        click.echo(f"warning     {printable(warning)}")
    if propagation is not None:
        now = time.time()
        rows = [
            (
                w.get("instance"),
                w.get("pid"),
                w.get("applied_version"),
                f"{now - float(w.get('heartbeat_at', now)):.1f} s ago",
                "ok" if w.get("applied_version", -1) >= (version or 0) else "BEHIND",
            )
            for w in propagation.get("workers") or []
        ]
        instances = {w.get("instance") for w in propagation.get("workers") or []}
        click.echo(f"workers     {len(rows)} live on {len(instances)} instance(s)")
        table(["INSTANCE", "PID", "APPLIED", "HEARTBEAT", "STATE"], rows)
    elif problem:
        click.echo(f"workers     unknown: {problem}")
    if response.status_code == 503:
        raise SystemExit(3)

"""Config as code: ``export``, ``import``, ``diff``."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
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
from flagport_cli._diffs import diff_is_empty, field_changes, print_diff
from flagport_cli._errors import UnexpectedAnswer, UsageProblem
from flagport_cli._output import echo_json
from flagport_cli._validate import read_document

__all__ = ["diff", "export", "import_"]

_MEDIA = {"json": "application/json", "yaml": "application/yaml"}


def _write_atomically(path: Path, data: bytes) -> None:
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.")
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except OSError as error:
        raise UsageProblem(f"cannot write {path}: {error.strerror or error}") from None


@click.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write here, not stdout.")
@click.option(
    "--format",
    "format_",
    type=click.Choice(["yaml", "json"]),
    help="Default: from the -o extension, else YAML (JSON with --json).",
)
@click.option("--volatile", is_flag=True, help="Keep versions and timestamps.")
@json_option
@pass_app
def export(app: App, output: str | None, format_: str | None, volatile: bool) -> None:
    """Export every flag and segment as a document (config as code)."""
    if format_ is None:
        if output and Path(output).suffix.lower() == ".json":
            format_ = "json"
        elif output and Path(output).suffix.lower() in (".yaml", ".yml"):
            format_ = "yaml"
        else:
            format_ = "json" if app.json else "yaml"
    params = {"format": format_, "volatile": "true" if volatile else None}
    response = app.api().send("GET", "/admin/v1/snapshot", params=params)
    media = response.headers.get("content-type") or "no content type"
    if not media.startswith(_MEDIA[format_]):
        # A proxy's login page must not land in the configuration file.
        raise UnexpectedAnswer(
            f"GET /admin/v1/snapshot: the server sent {media}, not {_MEDIA[format_]}"
        )
    data = response.content
    if output:
        _write_atomically(Path(output), data)
        click.echo(f"exported to {output}", err=True)
    else:
        click.echo(data.decode().rstrip("\n"))


def _field_details(app: App, data: bytes, format_: str) -> dict[str, list[str]]:
    """For changed objects, which fields differ (server value -> file value)."""
    from flagport.document import dump_document, load_document

    local = json.loads(dump_document(load_document(data, format_, strict=False), "json"))  # type: ignore[arg-type]
    remote = json.loads(app.api().send("GET", "/admin/v1/snapshot").content)
    return field_changes(local, remote)


def _post(
    app: App, data: bytes, format_: str, *, dry_run: bool, prune: bool, reason: str | None
) -> Any:
    params = {
        "dry_run": "true" if dry_run else "false",
        "prune": "true" if prune else "false",
        "reason": reason,
    }
    return app.api().call(
        "POST",
        "/admin/v1/snapshot",
        params=params,
        content=data,
        headers={"Content-Type": _MEDIA[format_]},
    )


@click.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@click.option("--merge", is_flag=True, help="Keep flags and segments the file does not mention.")
@reason_option
@wait_options
@json_option
@pass_app
def import_(
    app: App,
    file: str,
    dry_run: bool,
    merge: bool,
    reason: str | None,
    no_wait: bool,
    timeout: float,
) -> None:
    """Import a document (atomically): the file becomes the configuration."""
    data, format_ = read_document(file)
    result = _post(app, data, format_, dry_run=dry_run, prune=not merge, reason=reason)
    applied = result.get("applied") is True
    if app.json:
        echo_json(result)
    elif diff_is_empty(result["diff"]):  # a stand-in's {} must not read as "no changes"
        click.echo("no changes")
    else:
        print_diff(result["diff"], _field_details(app, data, format_))
        if dry_run:
            click.echo("dry run: nothing applied")
        else:
            click.echo(f"applied (snapshot version {result.get('snapshot_version')})")
    if applied:
        confirm_applied(app, result.get("snapshot_version"), no_wait=no_wait, timeout=timeout)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--merge", is_flag=True, help="Ignore flags and segments the file does not mention.")
@json_option
@pass_app
def diff(app: App, file: str, merge: bool) -> None:
    """Compare a document with the server: exit 0 when equal, 1 on drift."""
    data, format_ = read_document(file)
    result = _post(app, data, format_, dry_run=True, prune=not merge, reason=None)
    changes = result["diff"]  # a stand-in's {} must not read as "no drift"
    if app.json:
        echo_json(result)
    elif diff_is_empty(changes):
        click.echo(f"no drift: the server matches {file}")
    else:
        click.echo(
            f"drift between the server and {file} "
            "(+ only in the file, - only on the server, ~ server value -> file value):"
        )
        print_diff(changes, _field_details(app, data, format_))
    if not diff_is_empty(changes):
        raise SystemExit(1)

"""``backup FILE`` and ``restore FILE``: the whole store to a file and back, on the store
directly (``--store``, as ``flags serve`` takes it), not through a server (docs/spec.md,
"Backup and restore")."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from flagport_cli._app import App, json_option, pass_app, reason_option
from flagport_cli._errors import CliError, Refused, Unreachable, UsageProblem
from flagport_cli._output import echo_json

__all__ = ["backup", "restore"]


def _store_option(function: Any) -> Any:
    return click.option(
        "--store",
        "store_url",
        default="sqlite:///./flagport.db",
        show_default=True,
        envvar="FLAGPORT_STORE",
        help="The store, as `flags serve --store` takes it (env FLAGPORT_STORE).",
    )(function)


def _store_problem(error: Exception) -> CliError:
    """The CLI's error for a store-side one (the server package's errors, imported late:
    only these two commands and ``serve`` load it)."""
    from flagport_server.errors import InvalidInput, StoreError, StoreNotEmpty, StoreUnavailable

    if isinstance(error, InvalidInput):
        return UsageProblem(str(error))
    if isinstance(error, StoreNotEmpty):
        return Refused(str(error))
    if isinstance(error, StoreUnavailable):
        return Unreachable(str(error))
    if isinstance(error, StoreError):
        return Refused(str(error))
    raise error


def _described(summary: Any) -> str:
    parts = [
        f"{summary.flags} flags",
        f"{summary.segments} segments",
        f"{summary.plans} plans",
        f"{summary.audit} audit entries",
        f"{summary.tokens} tokens",
        f"{summary.approval_policies} approval policies",
        f"{summary.change_requests} change requests",
        f"{summary.webhooks} webhooks",
    ]
    if summary.server_secret:
        parts.append("the server secret")
    return ", ".join(parts[:-1]) + " and " + parts[-1]


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_store_option
@json_option
@pass_app
def backup(app: App, file: Path, store_url: str) -> None:
    """Back up everything the store holds into FILE (mode 0600: it holds the server secret
    and token digests): flags, segments, plans, the audit log, tokens, the server secret."""
    from flagport_server.backups import take_backup
    from flagport_server.errors import ServerError

    try:
        summary, size = asyncio.run(take_backup(store_url, file))
    except (ServerError, OSError) as error:
        if isinstance(error, OSError):
            raise UsageProblem(f"cannot write {file}: {error.strerror or error}") from None
        raise _store_problem(error) from None
    if app.json:
        import msgspec

        echo_json({"file": str(file), "bytes": size, **msgspec.structs.asdict(summary)})
        return
    click.echo(
        f"backed up {_described(summary)} of {summary.kind} store {summary.store_id} "
        f"(version {summary.snapshot_version}) to {file} ({size:,} bytes)"
    )


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@_store_option
@click.option(
    "--replace",
    is_flag=True,
    help="Overwrite what the store holds (without it, only an empty store is restored into).",
)
@reason_option
@json_option
@pass_app
def restore(app: App, file: Path, store_url: str, replace: bool, reason: str | None) -> None:
    """Restore a backup into a store: empty, or any with --replace. Running servers adopt it
    as a newer version."""
    from flagport_server.backups import restore_store
    from flagport_server.errors import ServerError

    try:
        summary, version = asyncio.run(
            restore_store(store_url, file, replace=replace, reason=reason)
        )
    except ServerError as error:
        raise _store_problem(error) from None
    if app.json:
        import msgspec

        echo_json(
            {"file": str(file), "snapshot_version": version, **msgspec.structs.asdict(summary)}
        )
        return
    click.echo(
        f"restored {_described(summary)} from {file} (a backup of {summary.kind} store "
        f"{summary.store_id}); the store is at version {version}"
    )

"""The ``flags`` command: drive Flagport from a terminal or a deploy script.

Exit codes (docs/spec.md section 8): 0 ok; 1 the server refused; 2 usage or a local file;
3 server unreachable; 4 not authorized; 5 committed but not confirmed by every live worker.
Commands import what they need when they run: ``flags disable`` loads click and httpx only,
and only ``flags serve`` imports the server.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from flagport_cli._app import App
from flagport_cli._errors import CliError, UnexpectedAnswer
from flagport_cli._profiles import load_profile
from flagport_cli._serve import serve
from flagport_cli.commands.approvals import approvals, approve, reject, request, requests
from flagport_cli.commands.backup import backup, restore
from flagport_cli.commands.config import diff, export, import_
from flagport_cli.commands.flags import create, delete, list_flags, show, target
from flagport_cli.commands.insight import audit, explain, status
from flagport_cli.commands.promote import promote
from flagport_cli.commands.rollout import rollout
from flagport_cli.commands.state import disable, enable
from flagport_cli.commands.stats import stale, stats
from flagport_cli.commands.tokens import token
from flagport_cli.commands.webhooks import webhook

__all__ = ["cli", "main"]

DEFAULT_URL = "http://127.0.0.1:8787"


class _Commands(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (LookupError, TypeError, AttributeError, ValueError) as error:
            # Once the server has answered, a missing field or one of another type means the
            # answer is not Flagport's (another service on that port, a different version):
            # say so in one line rather than with a traceback.
            app = ctx.obj
            answered = app.answered() if isinstance(app, App) else None
            if answered is None:
                raise
            raise UnexpectedAnswer(
                f"{answered}: unexpected answer from {app.url} ({type(error).__name__}: "
                f"{error}); is it a Flagport server of this version?"
            ) from None


@click.group(
    cls=_Commands,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="flagport-cli", prog_name="flags")
@click.option(
    "--url",
    envvar="FLAGPORT_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="Server URL (env FLAGPORT_URL); unix:///path.sock for a Unix socket.",
)
@click.option(
    "--token",
    help="Admin token (else FLAGPORT_TOKEN, FLAGPORT_ADMIN_TOKEN, ./.flagport/admin-token).",
)
@click.option(
    "--profile",
    help="A named environment (its URL and token) from the profiles file "
    "(env FLAGPORT_PROFILES, else ~/.config/flagport/profiles.toml).",
)
@click.option("--json", "json_output", is_flag=True, help="Print API response bodies as JSON.")
@click.pass_context
def cli(
    ctx: click.Context, url: str, token: str | None, profile: str | None, json_output: bool
) -> None:
    """Flagport feature flags: roll out, kill, inspect.

    \b
    Exit codes: 0 ok, 1 refused by the server, 2 bad usage or file,
    3 server unreachable, 4 not authorized, 5 not confirmed by every worker in time,
    6 needs an approved change request (flags request ...).
    """
    if profile is not None:
        chosen = load_profile(profile)
        # --url on the command line wins; FLAGPORT_URL (a shell's default) does not.
        if ctx.get_parameter_source("url") is not click.core.ParameterSource.COMMANDLINE:
            url = chosen.url
        token = token or chosen.token
    app = App(url=url, token_option=token, json=json_output)
    ctx.obj = app
    ctx.call_on_close(app.close)


for command in (
    list_flags,
    show,
    create,
    enable,
    disable,
    target,
    delete,
    audit,
    explain,
    import_,
    export,
    diff,
    token,
    status,
    stats,
    stale,
    rollout,
    promote,
    backup,
    restore,
    approvals,
    request,
    requests,
    approve,
    reject,
    webhook,
    serve,
):
    cli.add_command(command)
cli.add_command(disable, name="kill")  # the runbook's emergency word for the same thing


def main() -> None:
    try:
        cli.main(prog_name="flags", standalone_mode=True)
    except CliError as error:
        click.echo(f"flags: {error.message}", err=True)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)

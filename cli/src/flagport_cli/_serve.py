"""``flags serve``: the server in this process. Only this command imports ``flagport_server``
(the ``flagport-cli[server]`` extra); without it, it exits 2 saying what to install."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import click

__all__ = ["TOKEN_FILE", "serve"]

TOKEN_FILE = Path(".flagport") / "admin-token"


def _bootstrap_admin_token(loopback: bool) -> tuple[str, bool]:
    """(token, newly generated). Generated only for loopback/Unix-socket binds."""
    token = os.environ.get("FLAGPORT_ADMIN_TOKEN")
    if token:
        return token, False
    if not loopback:
        raise click.UsageError(
            "refusing to listen on a non-loopback address without an admin token: "
            "set FLAGPORT_ADMIN_TOKEN"
        )
    if TOKEN_FILE.exists():
        existing = TOKEN_FILE.read_text().strip()
        if existing:
            return existing, False
    token = "fpa_" + secrets.token_urlsafe(32)
    TOKEN_FILE.parent.mkdir(mode=0o700, exist_ok=True)
    descriptor = os.open(TOKEN_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    return token, True


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8787, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--uds", type=click.Path(dir_okay=False), help="Serve on this Unix socket (mode 0660)."
)
@click.option(
    "--store",
    "store_url",
    default="sqlite:///./flagport.db",
    show_default=True,
    envvar="FLAGPORT_STORE",
    help="sqlite:///path.db, redis://host:port/db, ...",
)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--snapshot-cache",
    type=click.Path(dir_okay=False),
    help="Keep the last snapshot here; serve it if the store is down at start.",
)
@click.option(
    "--require-eval-token", is_flag=True, help="Evaluation needs a token even on loopback."
)
@click.option(
    "--open-evaluation",
    is_flag=True,
    help="Allow evaluation without a token on a non-loopback bind (warned).",
)
@click.option(
    "--seed",
    "seed_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Load this flags document when the store is empty.",
)
@click.option("--instance-id", help="Name in the propagation registry (default: host:port).")
@click.option(
    "--no-stats",
    is_flag=True,
    help="Keep no adoption stats (flags stats, flags stale); Prometheus counters stay.",
)
@click.option(
    "--backlog",
    default=1024,
    show_default=True,
    type=click.IntRange(128, 65535),
    help="Connections the kernel queues before the server accepts them.",
)
@click.option(
    "--max-streams",
    default=1000,
    show_default=True,
    type=click.IntRange(0),
    help="Change streams per worker; past them clients poll (the stream answers 503).",
)
@click.option(
    "--body-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Seconds a client has to send a request body (then 408).",
)
@click.option(
    "--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"])
)
def serve(
    host: str,
    port: int,
    uds: str | None,
    store_url: str,
    workers: int,
    snapshot_cache: str | None,
    require_eval_token: bool,
    open_evaluation: bool,
    seed_file: str | None,
    instance_id: str | None,
    no_stats: bool,
    backlog: int,
    max_streams: int,
    body_timeout: float,
    log_level: str,
) -> None:
    """Run the evaluation and admin server."""
    try:
        from flagport_server.serve import serve as run_server
        from flagport_server.settings import Settings, bind_address, is_loopback
    except ImportError:
        click.echo("flags serve needs the server: pip install 'flagport-cli[server]'", err=True)
        sys.exit(2)
    try:
        address = bind_address(host) if uds is None else host
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--host") from None
    loopback = uds is not None or is_loopback(address)
    token, generated = _bootstrap_admin_token(loopback)
    require = require_eval_token or not (loopback or open_evaluation)
    import socket

    settings = Settings(
        store_url=store_url,
        host=address,
        port=port,
        uds=uds,
        workers=workers,
        snapshot_cache=snapshot_cache,
        require_eval_token=require,
        admin_token=token,
        seed_file=seed_file,
        instance_id=instance_id or f"{socket.gethostname()}:{uds or port}",
        open_evaluation_warning=open_evaluation and not loopback,
        stats=not no_stats,
        backlog=backlog,
        max_streams=max_streams,
        body_timeout=body_timeout,
    )
    shown_host = f"[{host}]" if ":" in host else host  # an IPv6 address
    where = f"unix://{os.path.abspath(uds)}" if uds else f"http://{shown_host}:{port}"
    click.echo(f"Flagport listening on {where} (store: {store_url}, workers: {workers})", err=True)
    if generated:
        click.echo(f"Admin token (shown once, saved to {TOKEN_FILE}): {token}", err=True)
    elif not os.environ.get("FLAGPORT_ADMIN_TOKEN"):
        click.echo(f"Admin token: in {TOKEN_FILE} (the flags CLI reads it from there)", err=True)
    click.echo(
        "Evaluation: " + ("open (no token needed)" if not require else "needs an evaluation token"),
        err=True,
    )
    run_server(settings, log_level=log_level)

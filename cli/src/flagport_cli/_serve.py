"""``flags serve``: the server in this process. Only this command imports ``flagport_server``
(the ``flagport-cli[server]`` extra); without it, it exits 2 saying what to install."""

from __future__ import annotations

import os
import secrets
import stat
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
    if TOKEN_FILE.parent.exists():
        _check_private(TOKEN_FILE.parent, 0o022, "other users could swap the token file in it")
    if TOKEN_FILE.exists():
        _check_private(TOKEN_FILE, 0o077, "other users can read or change the admin token")
        existing = TOKEN_FILE.read_text().strip()
        if existing:
            return existing, False
    token = "fpa_" + secrets.token_urlsafe(32)
    TOKEN_FILE.parent.mkdir(mode=0o700, exist_ok=True)
    descriptor = os.open(TOKEN_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    return token, True


def _check_private(path: Path, forbidden: int, why: str) -> None:
    """Refuse ``path`` unless it is ours and has none of the ``forbidden`` mode bits: a
    token file someone else could read leaks the admin token; one someone else wrote (in a
    shared directory) would make their token ours."""
    info = path.stat()
    if info.st_uid != os.getuid():
        raise click.UsageError(
            f"refusing to use {path}: it belongs to uid {info.st_uid}, not to you (uid "
            f"{os.getuid()}), so someone else chose what is in it; delete it (a new admin "
            "token is then made) or set FLAGPORT_ADMIN_TOKEN"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & forbidden:
        fixed = mode & ~forbidden
        raise click.UsageError(
            f"refusing to use {path}: its mode is {mode:04o}, so {why}; run "
            f"'chmod {fixed:o} {path}' (and make a new token if it may have leaked: delete "
            "the file) or set FLAGPORT_ADMIN_TOKEN"
        )


def _check_tls(cert: str | None, key: str | None, uds: str | None) -> None:
    """Both or neither, and a pair that loads, before any worker starts."""
    if (cert is None) != (key is None):
        raise click.UsageError("--tls-cert and --tls-key go together: give both or neither")
    if cert is None or key is None:
        return
    if uds is not None:
        raise click.UsageError("--tls-cert/--tls-key serve HTTPS on TCP; not with --uds")
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # A password callback that fails: an encrypted key is refused, never prompted for.
        context.load_cert_chain(cert, key, password=_no_key_password)
    except (ssl.SSLError, OSError, ValueError) as error:
        raise click.UsageError(
            f"--tls-cert {cert} with --tls-key {key} cannot be used: {error} (both PEM; "
            "the key unencrypted and matching the certificate)"
        ) from None


def _no_key_password() -> str:
    raise ValueError("the private key is encrypted")


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
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False),
    help="Serve HTTPS with this PEM certificate (chain); needs --tls-key.",
)
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False),
    help="The certificate's PEM private key (unencrypted; keep it mode 0600).",
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
    "--compile-chunk",
    default=100,
    show_default=True,
    type=click.IntRange(0),
    help="Flags compiled between two pauses for requests when the configuration changes "
    "(0: all at once, holding requests meanwhile).",
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
    tls_cert: str | None,
    tls_key: str | None,
    backlog: int,
    max_streams: int,
    body_timeout: float,
    compile_chunk: int,
    log_level: str,
) -> None:
    """Run the evaluation and admin server."""
    try:
        from flagport_server.errors import InvalidInput
        from flagport_server.serve import serve as run_server
        from flagport_server.settings import (
            Settings,
            admin_token_problem,
            bind_address,
            is_loopback,
        )
        from flagport_server.stores import open_store, redact_store_url
    except ImportError:
        click.echo("flags serve needs the server: pip install 'flagport-cli[server]'", err=True)
        sys.exit(2)
    try:
        open_store(store_url)  # the URL only, no I/O: a bad one stops here, not in a worker
    except InvalidInput as error:
        raise click.BadParameter(error.detail, param_hint="'--store'") from None
    _check_tls(tls_cert, tls_key, uds)
    if seed_file is not None:
        from flagport_cli._validate import read_document

        # Every worker loads the seed as it starts: a bad one is refused here, once, with
        # the reason, rather than as a worker that fails to start.
        read_document(seed_file, strict=True)
    try:
        address = bind_address(host) if uds is None else host
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--host") from None
    loopback = uds is not None or is_loopback(address)
    token, generated = _bootstrap_admin_token(loopback)
    if problem := admin_token_problem(token, loopback):
        raise click.UsageError(problem)
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
        tls_cert=tls_cert,
        tls_key=tls_key,
        backlog=backlog,
        max_streams=max_streams,
        body_timeout=body_timeout,
        compile_chunk=compile_chunk,
    )
    scheme = "https" if tls_cert else "http"
    shown_host = f"[{host}]" if ":" in host else host  # an IPv6 address
    where = f"unix://{os.path.abspath(uds)}" if uds else f"{scheme}://{shown_host}:{port}"
    click.echo(
        f"Flagport listening on {where} (store: {redact_store_url(store_url)}, workers: {workers})",
        err=True,
    )
    if generated:
        click.echo(f"Admin token (shown once, saved to {TOKEN_FILE}): {token}", err=True)
    elif not os.environ.get("FLAGPORT_ADMIN_TOKEN"):
        click.echo(f"Admin token: in {TOKEN_FILE} (the flags CLI reads it from there)", err=True)
    click.echo(
        "Evaluation: " + ("open (no token needed)" if not require else "needs an evaluation token"),
        err=True,
    )
    run_server(settings, log_level=log_level)

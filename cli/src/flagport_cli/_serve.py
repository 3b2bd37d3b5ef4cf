"""``flags serve``: the server in this process. Only this command imports ``flagport_server``
(the ``flagport-cli[server]`` extra); without it, it exits 2 saying what to install."""

from __future__ import annotations

import os
import secrets
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal

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


def _checked_each(
    values: tuple[str, ...], check: Callable[[str], str], option: str
) -> tuple[str, ...]:
    """Each value of a repeatable option as ``check`` reads it (duplicates dropped); exit 2
    with the message of the first value ``check`` refuses (a :class:`ValueError`)."""
    checked = []
    for value in values:
        try:
            checked.append(check(value))
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint=f"'{option}'") from None
    return tuple(dict.fromkeys(checked))


def _check_cors_origins(origins: tuple[str, ...]) -> tuple[str, ...]:
    """Each ``--cors-origin`` an origin or ``*``, normalised; exit 2 naming a bad one."""
    from flagport_server.cors import normalise_origin

    return _checked_each(origins, normalise_origin, "--cors-origin")


def _check_allowed_hosts(names: tuple[str, ...]) -> tuple[str, ...]:
    """Each ``--allowed-host`` a host name or an IP address; exit 2 naming a bad one."""
    from flagport_server.host_check import valid_allowed_host

    def check(name: str) -> str:
        checked = valid_allowed_host(name)
        if checked is None:
            raise ValueError(
                f"{name!r} is not a host name or an IP address (no scheme, port or path)"
            )
        return checked

    return _checked_each(names, check, "--allowed-host")


def _check_public_url(url: str | None) -> None:
    """``--public-url``: an absolute http(s) URL without a query or fragment; exit 2 else."""
    if url is None:
        return
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
        or len(url) > 2000
    ):
        raise click.BadParameter(
            f"{url[:100]!r} is not an absolute http(s) URL (for example "
            "https://flags.portal.example or https://portal.example/flagport)",
            param_hint="'--public-url'",
        )


def _check_trusted_proxies(
    proxies: tuple[str, ...], rate_limit: float | None, ui: bool
) -> tuple[str, ...]:
    """Each ``--trusted-proxy`` an address or network; exit 2 naming a bad one."""
    from flagport_server.rate_limit import parse_network

    if proxies and rate_limit is None and not ui:
        raise click.UsageError(
            "--trusted-proxy is read by --rate-limit and the admin UI: with --no-ui, give "
            "--rate-limit too"
        )
    return _checked_each(proxies, lambda proxy: str(parse_network(proxy)), "--trusted-proxy")


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
    "--require-eval-token",
    is_flag=True,
    help="Every request needs a token, even on loopback (which otherwise opens the sdk scope).",
)
@click.option(
    "--open-evaluation",
    is_flag=True,
    help="Open the evaluate scope (OFREP, the change stream; not /v1/snapshot) to requests "
    "without a token on a non-loopback bind (warned).",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    metavar="ORIGIN",
    help="A web page origin (https://portal.example, or *) that may call OFREP, "
    "/v1/evaluate and the change stream from a browser; repeatable. Nothing else answers "
    "cross-origin.",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="On a loopback bind, another name requests without a token may use as Host "
    "(besides localhost, 127.0.0.1, [::1]; others are refused against DNS rebinding).",
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
    "--driver/--no-driver",
    default=None,
    help="Drive rollout plans (the worker holding the store's lease does); "
    "default on, off with --uds (a sidecar may reach none of the URLs a driver polls).",
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
    "--public-url",
    metavar="URL",
    help="The URL clients reach this server at (behind a proxy or a path prefix), for the "
    "change stream OFREP bulk answers advertise: an absolute http(s) URL.",
)
@click.option(
    "--rate-limit",
    type=click.FloatRange(min=0.01),
    help="Requests a second each client (token, else address) may make on the evaluation "
    "routes, per worker; over it: 429 with Retry-After. Default: no limit.",
)
@click.option(
    "--rate-burst",
    type=click.IntRange(min=1),
    help="Requests a client may make at once before --rate-limit applies (default: 2x the rate).",
)
@click.option(
    "--trusted-proxy",
    "trusted_proxies",
    multiple=True,
    metavar="ADDRESS",
    help="A proxy (address or CIDR) whose X-Forwarded-For names the client, for --rate-limit, "
    "and whose X-Forwarded-Proto says the admin UI is served over HTTPS.",
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
    "--no-ui",
    is_flag=True,
    help="Do not serve the admin UI under /ui/ (sign-in with an admin or viewer token).",
)
@click.option(
    "--audit-retention",
    "audit_retention_days",
    type=click.IntRange(1, 36_500),
    metavar="DAYS",
    help="Delete audit entries older than DAYS (default: keep them all).",
)
@click.option(
    "--webhook-retry-for",
    default=86400.0,
    show_default=True,
    type=click.FloatRange(1),
    metavar="SECONDS",
    help="How long after a change its webhook deliveries are retried before they become "
    "dead letters.",
)
@click.option(
    "--webhook-backoff",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.01),
    metavar="SECONDS",
    help="Delay before a failed webhook delivery's first retry (doubled at each failure up to "
    "an hour, with jitter).",
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
    allowed_hosts: tuple[str, ...],
    cors_origins: tuple[str, ...],
    seed_file: str | None,
    instance_id: str | None,
    no_stats: bool,
    driver: bool | None,
    tls_cert: str | None,
    tls_key: str | None,
    backlog: int,
    max_streams: int,
    body_timeout: float,
    public_url: str | None,
    rate_limit: float | None,
    rate_burst: int | None,
    trusted_proxies: tuple[str, ...],
    compile_chunk: int,
    no_ui: bool,
    audit_retention_days: int | None,
    webhook_retry_for: float,
    webhook_backoff: float,
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
    hosts = _check_allowed_hosts(allowed_hosts)
    if seed_file is not None:
        from flagport_cli._validate import read_document

        # Every worker loads the seed as it starts: a bad one is refused here, once, with
        # the reason, rather than as a worker that fails to start.
        read_document(seed_file, strict=True)
    origins = _check_cors_origins(cors_origins)
    _check_public_url(public_url)
    proxies = _check_trusted_proxies(trusted_proxies, rate_limit, not no_ui)
    if rate_burst is not None and rate_limit is None:
        raise click.UsageError("--rate-burst needs --rate-limit")
    try:
        address = bind_address(host) if uds is None else host
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--host") from None
    loopback = uds is not None or is_loopback(address)
    token, generated = _bootstrap_admin_token(loopback)
    if problem := admin_token_problem(token, loopback):
        raise click.UsageError(problem)
    # Without a token: loopback and Unix-socket clients are the host's own servers (sdk);
    # --open-evaluation opens only what a browser may see (evaluate; docs/spec.md section 5).
    open_scope: Literal["evaluate", "sdk"] | None = None
    if loopback and not require_eval_token:
        open_scope = "sdk"
    elif open_evaluation and not require_eval_token:
        open_scope = "evaluate"
    import socket

    settings = Settings(
        store_url=store_url,
        host=address,
        port=port,
        uds=uds,
        workers=workers,
        snapshot_cache=snapshot_cache,
        audit_retention_days=audit_retention_days,
        open_scope=open_scope,
        allowed_hosts=tuple(hosts),
        admin_token=token,
        seed_file=seed_file,
        instance_id=instance_id or f"{socket.gethostname()}:{uds or port}",
        open_evaluation_warning=open_evaluation and not loopback,
        stats=not no_stats,
        driver=driver if driver is not None else uds is None,
        tls_cert=tls_cert,
        tls_key=tls_key,
        backlog=backlog,
        max_streams=max_streams,
        body_timeout=body_timeout,
        cors_origins=origins,
        public_url=public_url,
        rate_limit=rate_limit,
        rate_burst=rate_burst,
        trusted_proxies=proxies,
        compile_chunk=compile_chunk,
        ui=not no_ui,
        webhook_retry_for=webhook_retry_for,
        webhook_backoff=webhook_backoff,
        webhook_backoff_max=max(webhook_backoff, min(3600.0, webhook_retry_for / 4)),
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
        "Without a token: "
        + (f"the {open_scope} scope" if open_scope else "nothing (every request needs a token)"),
        err=True,
    )
    run_server(settings, log_level=log_level)

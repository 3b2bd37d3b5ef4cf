"""State shared by the commands (global options) and the decorators they have in common."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import click

from flagport_cli._errors import NotConfirmed, Unreachable

__all__ = [
    "APPLIED",
    "App",
    "confirm_applied",
    "json_option",
    "pass_app",
    "reason_option",
    "wait_for_version",
    "wait_options",
]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class App:
    url: str
    token_option: str | None
    json: bool = False
    _api: Any = field(default=None, repr=False)

    def api(self) -> Any:
        """The :class:`~flagport_cli._http.Api`, made on first use (httpx loads only then)."""
        if self._api is None:
            from flagport_cli._http import Api, find_token

            self._api = Api(self.url, find_token(self.token_option))
        return self._api

    def answered(self) -> str | None:
        """The last request the server answered (``GET /admin/v1/flags``), if any."""
        return self._api.answered if self._api is not None else None

    def close(self) -> None:
        if self._api is not None:
            self._api.close()


pass_app = click.make_pass_decorator(App)


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.find_object(App).json = True  # type: ignore[union-attr]
    return value


def json_option(function: F) -> F:
    """``--json`` on the command too (``flags list --json`` as well as ``flags --json list``)."""
    return click.option(
        "--json",
        "json_output",
        is_flag=True,
        expose_value=False,
        callback=_set_json,
        help="Print the API's response body as JSON.",
    )(function)


def reason_option(function: F) -> F:
    return click.option("--reason", help="Why (kept in the audit log).")(function)


def wait_options(function: F) -> F:
    function = click.option(
        "--no-wait", is_flag=True, help="Do not wait for the workers to apply the change."
    )(function)
    return click.option(
        "--timeout",
        type=click.FloatRange(0, 3600),
        default=5.0,
        show_default=True,
        help="Seconds to wait until every live worker has applied the change (else exit 5).",
    )(function)


#: What :func:`confirm_applied` says by default once every live worker applied a change.
APPLIED = "snapshot version {version} applied by {workers} worker(s) on {instances} instance(s)"
#: The least time a propagation poll gets: ``--timeout 0`` still asks once.
_LAST_POLL_S: Final = 0.1


def wait_for_version(api: Any, version: int, timeout: float) -> dict[str, Any]:
    """Poll ``api``'s propagation registry until every live worker of every instance has
    applied ``version``. Raises :class:`NotConfirmed` naming the stragglers after ``timeout``
    (each poll may take only the time left, so a server that stops answering cannot hold
    the command past it)."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        left = max(deadline - time.monotonic(), _LAST_POLL_S)
        try:
            body: dict[str, Any] = api.call(
                "GET", "/admin/v1/propagation", params={"version": version}, timeout=left
            )
        except Unreachable as silent:
            if time.monotonic() < deadline:
                raise
            raise NotConfirmed(
                f"snapshot version {version} is committed but not confirmed within "
                f"{timeout:g} s: {silent.message}"
            ) from None
        if body.get("complete"):
            return body
        if time.monotonic() >= deadline:
            stragglers = ", ".join(
                f"{w.get('instance')} pid {w.get('pid')} (at {w.get('applied_version')})"
                for w in body.get("stragglers", [])
            )
            raise NotConfirmed(
                f"snapshot version {version} is committed but not confirmed within {timeout:g} s "
                f"by: {stragglers or 'unknown workers'}"
            )
        time.sleep(min(delay, max(deadline - time.monotonic(), 0)))
        delay = min(delay * 1.5, 0.01)


def confirm_applied(
    app: App,
    version: Any,
    *,
    no_wait: bool,
    timeout: float,
    said: str = APPLIED,
    err: bool = False,
    api: Any = None,
) -> None:
    """The end of every command that changes what workers serve or accept (``--no-wait``,
    ``--timeout``): wait until every live worker has applied the answer's ``version``, then
    print ``said`` (its ``{version}``, ``{workers}`` and ``{instances}`` filled; nothing with
    --json). Exit 5 (:class:`NotConfirmed`) when not confirmed in time. A ``version`` of None
    (nothing was committed, or a server too old to say) is not waited for. ``api``: the
    server to ask when it is not the one of the global options (``promote --to``)."""
    if no_wait or version is None:
        return
    confirmation = wait_for_version(api or app.api(), int(version), timeout)
    if not app.json:
        workers = confirmation.get("workers") or []
        instances = {worker.get("instance") for worker in workers}
        click.echo(
            said.format(version=version, workers=len(workers), instances=len(instances)), err=err
        )

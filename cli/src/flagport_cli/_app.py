"""State shared by the commands (global options) and the decorators they have in common."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click

from flagport_cli._errors import NotConfirmed

__all__ = ["App", "json_option", "pass_app", "reason_option", "wait_for_version", "wait_options"]

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


def wait_for_version(app: App, version: int, timeout: float) -> dict[str, Any]:
    """Poll the propagation registry until every live worker of every instance has applied
    ``version``. Raises :class:`NotConfirmed` naming the stragglers after ``timeout``."""
    api = app.api()
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        body: dict[str, Any] = api.call("GET", "/admin/v1/propagation", params={"version": version})
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

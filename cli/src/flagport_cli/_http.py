"""The admin API client of the ``flags`` command: URL and token lookup, error mapping.

Token lookup (docs/spec.md section 5): ``--token``, ``FLAGPORT_TOKEN``, ``FLAGPORT_ADMIN_TOKEN``,
then ``./.flagport/admin-token`` (written by ``flags serve``). Responses are decoded with the
standard ``json`` module: the hot commands (``flags disable``) import neither msgspec nor the
SDK.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flagport_cli._errors import (
    ApprovalNeeded,
    CliError,
    NotAuthorized,
    Refused,
    UnexpectedAnswer,
    Unreachable,
    UsageProblem,
)
from flagport_cli._output import printable, warn

if TYPE_CHECKING:
    import httpx
    from httpx import Client as HttpxClient

__all__ = ["DEFAULT_URL", "TOKEN_FILE", "Api", "find_token"]

DEFAULT_URL = "http://127.0.0.1:8787"
TOKEN_FILE = Path(".flagport") / "admin-token"
_UDS_BASE = "http://flagport"
#: The problem title of a change refused for want of an approved change request.
_APPROVAL_REQUIRED = "Approval required"
#: The server names the expiry of a token that expires within 7 days in this header.
_TOKEN_EXPIRES_HEADER = "X-Flagport-Token-Expires"


def find_token(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    for name in ("FLAGPORT_TOKEN", "FLAGPORT_ADMIN_TOKEN"):
        if value := os.environ.get(name, "").strip():
            return value
    try:
        return TOKEN_FILE.read_text().strip() or None
    except OSError:
        return None


def _import_httpx() -> Any:
    # httpx's package __init__ imports its own command-line client (rich, pygments, click
    # extras: ~100 ms) when those happen to be installed. A None entry in sys.modules makes
    # that optional import fail fast, and httpx falls back to a stub ``main``.
    if "httpx" not in sys.modules:
        sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    import httpx

    return httpx


def _problem_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("title") or ""
        field = body.get("field")
        text = str(detail)
        if field and str(field) not in text:
            text += f" (field {field})"
        if text:
            return text
    text = response.text.strip().splitlines()[0] if response.text.strip() else ""
    return text or response.reason_phrase or f"HTTP {response.status_code}"


def _problem_title(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return str(body.get("title")) if isinstance(body, dict) else None


class Api:
    """A thin synchronous client for ``/admin/v1``; every failure becomes a :class:`CliError`."""

    def __init__(self, url: str, token: str | None, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        httpx = _import_httpx()
        if self.url.startswith("unix://"):
            path = self.url.removeprefix("unix://")
            transport = httpx.HTTPTransport(uds=path)
            base = _UDS_BASE
        elif self.url.startswith(("http://", "https://")):
            transport, base = None, self.url
        else:
            raise UsageProblem(
                f"invalid --url {url!r}: use http://host:port, https://... or unix:///path.sock"
            )
        try:
            self._client: HttpxClient = httpx.Client(
                base_url=base,
                transport=transport,
                # Loading the CA bundle costs ~50-130 ms per process: only https needs it.
                verify=self.url.startswith("https://"),
                timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
                headers={"User-Agent": "flagport-cli"},
            )
        except httpx.InvalidURL as error:
            raise UsageProblem(f"invalid --url {url!r}: {error}") from None
        #: The last request the server answered (``GET /admin/v1/flags``): named when an
        #: answer turns out not to have the shape Flagport gives it.
        self.answered: str | None = None
        self._expiry_warned = False

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def require_token(self) -> str:
        if not self.token:
            raise NotAuthorized(
                "no admin token: pass --token or set FLAGPORT_TOKEN (or FLAGPORT_ADMIN_TOKEN), "
                f"or run from the directory holding {TOKEN_FILE}"
            )
        if not self.token.isascii() or not self.token.isprintable() or " " in self.token:
            # It could not travel in a header; httpx would fail with an encoding traceback.
            raise UsageProblem(
                "the admin token holds spaces, control or non-ASCII characters: "
                "a Flagport token never does"
            )
        return self.token

    def send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
        ok: tuple[int, ...] = (),
        timeout: float | None = None,
    ) -> httpx.Response:
        """Send one request; raise the :class:`CliError` matching a failure. Statuses in
        ``ok`` are returned to the caller even when they are errors. ``timeout``: seconds for
        this request, when shorter than the client's (a wait's time left)."""
        httpx = _import_httpx()
        all_headers = dict(headers or {})
        if auth:
            all_headers["Authorization"] = f"Bearer {self.require_token()}"
        if params:
            params = {k: v for k, v in params.items() if v is not None}
        limit: Any = httpx.USE_CLIENT_DEFAULT if timeout is None else timeout
        try:
            response = self._client.request(
                method,
                path,
                json=json,
                params=params,
                content=content,
                headers=all_headers,
                timeout=limit,
            )
        except httpx.TimeoutException:
            raise Unreachable(f"Flagport at {self.url} did not answer in time") from None
        except httpx.TransportError as error:
            reason = str(error) or type(error).__name__
            raise Unreachable(f"cannot reach Flagport at {self.url}: {reason}") from None
        except httpx.RequestError as error:  # e.g. a body that does not decode (bad gzip)
            reason = str(error) or type(error).__name__
            raise UnexpectedAnswer(
                f"{method} {path}: the answer of {self.url} cannot be read: {reason}"
            ) from None
        except httpx.InvalidURL as error:
            raise UsageProblem(f"invalid --url {self.url!r}: {error}") from None
        status: int = response.status_code
        self.answered = f"{method} {path}"
        self._warn_expiry(response)
        if 300 <= status < 400 and status not in ok:
            # The admin API never redirects: a proxy or a plain-HTTP-to-HTTPS hop does.
            location = response.headers.get("location") or "nowhere"
            raise UnexpectedAnswer(
                f"{method} {path}: {self.url} redirects ({status}) to {location}; "
                "give Flagport's own address with --url"
            )
        if status < 400 or status in ok:
            return response
        message = _problem_text(response)
        if status in (401, 403):
            raise NotAuthorized(f"not authorized ({status}): {message}")
        if status in (502, 503, 504):
            raise Unreachable(f"Flagport at {self.url} is unavailable ({status}): {message}")
        if status >= 500:
            raise CliError(f"server error ({status}) at {self.url}: {message}")
        if status == 409 and _problem_title(response) == _APPROVAL_REQUIRED:
            raise ApprovalNeeded(f"approval required: {message}")
        raise Refused(message)

    def _warn_expiry(self, response: httpx.Response) -> None:
        """Once per command: the server says the token expires within 7 days (docs/spec.md
        section 5, "Personal tokens"); a warning on stderr, so --json output stays clean."""
        expires = response.headers.get(_TOKEN_EXPIRES_HEADER)
        if expires and not self._expiry_warned:
            self._expiry_warned = True
            warn(
                f"this token expires at {printable(expires)}: rotate it soon "
                "(flags token rotate ID; flags token list shows the id)"
            )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Like :meth:`send`, returning the decoded JSON body (see :meth:`json_object`)."""
        return self.json_object(self.send(method, path, **kwargs))

    def json_object(self, response: httpx.Response) -> dict[str, Any]:
        """The body of ``response``: a JSON object, as every answer of Flagport's API is."""
        request = f"{response.request.method} {response.request.url.path}"
        try:
            body = response.json()
        except ValueError:
            raise UnexpectedAnswer(
                f"{request}: the server sent a body that is not JSON "
                f"({response.headers.get('content-type') or 'no content type'})"
            ) from None
        if not isinstance(body, dict):
            raise UnexpectedAnswer(f"{request}: the server sent JSON that is not an object")
        return body

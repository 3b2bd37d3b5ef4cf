"""PromQL guards (``promql(QUERY) > X``): the substitution of ``$flag`` and ``$variant``
into a query and the reading of one Prometheus HTTP API answer (docs/spec.md, "Guarded
rollouts", Prometheus; docs/adr/0025-prometheus-guards.md). Pure: the server does the I/O
(``flagport_server.prometheus``).

Substitution is textual and safe by construction: a value is substituted only if it is
made of ``[A-Za-z0-9_.:-]`` (1 to 100 characters). A flag key always is (the key grammar);
a variant name that is not is refused when the plan is made. So a substituted value can
never close a PromQL string, start a new matcher or expression, or escape anything; inside
a regex matcher (``=~``) a ``.`` still matches any character, as it would if typed.
"""

from __future__ import annotations

import math
import re
from typing import Final
from urllib.parse import urlsplit

import msgspec

from flagport.rollout.errors import PrometheusError, RolloutError

__all__ = [
    "MAX_PROMETHEUS_URL",
    "PromqlReading",
    "check_prometheus_url",
    "query_url",
    "read_answer",
    "substitute",
]

MAX_PROMETHEUS_URL: Final = 2048
_SAFE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
# ``$flag`` / ``$variant`` as whole words: ``$flags`` or ``$variant_x`` are left alone.
_PLACEHOLDER: Final = re.compile(r"\$(flag|variant)(?![A-Za-z0-9_])")
#: At most this much of Prometheus's own error text is kept (in a 400 or a reading).
_MAX_ERROR: Final = 300


class PromqlReading(msgspec.Struct, frozen=True):
    """One query's value (None: not enough data) and, without a value, why (``no data``,
    Prometheus's error, a timeout...)."""

    value: float | None
    note: str | None = None


def check_prometheus_url(url: str) -> str:
    """``url`` (``--prometheus``) without a trailing ``/``, or a :class:`RolloutError`: an
    http(s) URL with a host, at most :data:`MAX_PROMETHEUS_URL` characters, no query or
    fragment (the API path ``/api/v1/query`` is appended to it), no credentials."""
    if len(url) > MAX_PROMETHEUS_URL:
        raise RolloutError(f"the Prometheus URL is at most {MAX_PROMETHEUS_URL} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise RolloutError(f"invalid Prometheus URL {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RolloutError(f"the Prometheus URL must be http(s)://host[:port][/path], got {url!r}")
    if parts.query or parts.fragment:
        raise RolloutError(f"the Prometheus URL takes no query or fragment, got {url!r}")
    if parts.username is not None or parts.password is not None:
        # The URL is stored in the plan, shown by ``rollout status`` and in the audit log.
        raise RolloutError(
            "the Prometheus URL may not carry credentials (user:password@): it is shown in "
            "the plan and the audit log"
        )
    return url.rstrip("/")


def substitute(query: str, *, flag: str, variant: str) -> str:
    """``query`` with ``$flag`` replaced by ``flag`` and ``$variant`` by ``variant`` (the
    plan's treatment variant), or a :class:`RolloutError` if a value used is not made of
    ``[A-Za-z0-9_.:-]`` (see the module's docstring)."""
    values = {"flag": flag, "variant": variant}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        value = values[name]
        if not _SAFE.fullmatch(value):
            raise RolloutError(
                f"${name} cannot be substituted into a promql query: {value!r} is not made "
                "of A-Z a-z 0-9 _ . : - (1 to 100 characters)"
            )
        return value

    return _PLACEHOLDER.sub(replace, query)


def query_url(base: str) -> str:
    """The instant-query endpoint under a checked ``--prometheus`` URL."""
    return f"{base}/api/v1/query"


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 3] + "..."


def read_answer(status: int, body: bytes) -> PromqlReading:
    """One answer of ``GET /api/v1/query``: a scalar, or a vector of exactly one sample,
    gives the value; an empty vector is ``no data``; more than one series, a NaN, a matrix
    or a string is no value either, with the reason. Prometheus's refusal (``status``
    ``error``: a bad query, a timeout of its own) raises :class:`PrometheusError` with its
    ``errorType`` and ``error``, as does an answer that is not its API's."""
    try:
        answer = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise PrometheusError(
            f"Prometheus answered HTTP {status} with a body that is not its API's JSON"
        ) from None
    if not isinstance(answer, dict):
        raise PrometheusError(f"Prometheus answered HTTP {status} with unexpected JSON")
    if answer.get("status") != "success":
        kind = answer.get("errorType", "error")
        message = answer.get("error", "")
        raise PrometheusError(_clip(f"Prometheus refused the query ({kind}): {message}"))
    data = answer.get("data")
    kind = data.get("resultType") if isinstance(data, dict) else None
    result = data.get("result") if isinstance(data, dict) else None
    sample: object = None
    if kind == "scalar":
        sample = result
    elif kind == "vector" and isinstance(result, list):
        if not result:
            return PromqlReading(None, "no data")
        if len(result) > 1:
            return PromqlReading(
                None, f"{len(result)} series: the query must give one (aggregate it, e.g. sum)"
            )
        first = result[0]
        sample = first.get("value") if isinstance(first, dict) else None
    else:
        return PromqlReading(None, f"a {kind} result: the query must give a scalar or one sample")
    try:
        value = float(sample[1])  # type: ignore[index]
    except (TypeError, ValueError, IndexError, KeyError):
        raise PrometheusError("Prometheus answered a sample that is not [time, value]") from None
    if math.isnan(value):
        return PromqlReading(None, "NaN (e.g. 0/0: no traffic)")
    return PromqlReading(value)

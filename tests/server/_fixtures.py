"""Helpers for the live-server tests: module-scoped servers, flag creation, fresh connections.

A test module declares its server once::

    server = live_server(seed=PORTAL_FLAGS, flags=EXTRA_FLAGS)

and pytest finds the fixture under that name (module scope: one subprocess per module).
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import RunningServer, running_server

__all__ = [
    "create_flags",
    "fresh_request",
    "live_server",
    "raw_post",
    "snapshot_version",
]


def create_flags(server: RunningServer, flags: Mapping[str, Mapping[str, Any]]) -> int:
    """Create ``flags`` (key -> fields) through the admin API; the last snapshot version."""
    version = 0
    with server.admin(timeout=10.0) as admin:
        for key, fields in flags.items():
            answer = admin.post("/admin/v1/flags", json={"key": key, **fields})
            assert answer.status_code == 201, answer.text
            version = answer.json()["snapshot_version"]
    return version


def live_server(
    *,
    workers: int = 1,
    seed: Path | None = None,
    flags: Mapping[str, Mapping[str, Any]] | None = None,
    extra: tuple[str, ...] = (),
) -> Callable[..., Iterator[RunningServer]]:
    """A module-scoped fixture: ``flags serve`` in a subprocess, optionally seeded."""

    @pytest.fixture(scope="module")
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
        workdir = tmp_path_factory.mktemp("server")
        with running_server(workdir, workers=workers, seed=seed, extra=extra) as server:
            if flags:
                create_flags(server, flags)
            yield server

    return fixture


def snapshot_version(server: RunningServer) -> int:
    """The store's snapshot version, read through the admin API (not a worker's copy)."""
    with server.admin(timeout=10.0) as admin:
        answer = admin.get("/admin/v1/flags")
        assert answer.status_code == 200, answer.text
        return int(answer.json()["snapshot_version"])


def fresh_request(
    server: RunningServer, method: str, path: str, body: Any = None
) -> tuple[int, dict[str, str], bytes]:
    """One request on a new TCP connection (granian hands new connections to any worker)."""
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5.0)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def raw_post(
    client: httpx.Client, path: str, content: bytes, headers: Mapping[str, str] | None = None
) -> httpx.Response:
    """POST bytes as they are (malformed JSON, ``NaN``, huge or deeply nested bodies)."""
    return client.post(
        path, content=content, headers={"Content-Type": "application/json", **(headers or {})}
    )

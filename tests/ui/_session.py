"""Signing in to the admin UI over HTTP, for the UI's HTTP-level tests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from tests.support.server import RunningServer

__all__ = ["csrf_of", "new_token", "signed_in"]


def csrf_of(html: str) -> str:
    """The first form's CSRF token on a page."""
    found = re.search(r'name="csrf" value="([^"]*)"', html)
    assert found is not None, html
    return found.group(1)


def new_token(server: RunningServer, name: str, scope: str) -> tuple[str, str]:
    """A new token's (secret, id)."""
    with server.admin() as admin:
        answer = admin.post("/admin/v1/tokens", json={"name": name, "scope": scope})
        assert answer.status_code == 201, answer.text
        body = answer.json()
        return body["secret"], body["token"]["id"]


@contextmanager
def signed_in(server: RunningServer, token: str) -> Iterator[httpx.Client]:
    """A client holding a session of ``token``."""
    with server.client() as client:
        page = client.get("/ui/sign-in")
        answer = client.post(
            "/ui/sign-in", data={"token": token, "csrf": csrf_of(page.text), "next": "/ui/flags"}
        )
        assert answer.status_code == 303, answer.text
        yield client

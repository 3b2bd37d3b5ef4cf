"""Helpers for the admin-breadth live-server tests (issue 4): OFREP answers in one call,
problem-details assertions, and "the store did not change" snapshots."""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["assert_problem", "evaluate", "store_state"]

SINGLE = "/ofrep/v1/evaluate/flags/"


def evaluate(client: httpx.Client, key: str, context: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(variant, reason, value) of an OFREP single evaluation that must succeed."""
    answer = client.post(SINGLE + key, json={"context": context})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return body["variant"], body["reason"], body["value"]


def assert_problem(answer: httpx.Response, status: int, *mentions: str) -> dict[str, Any]:
    """An RFC 9457 problem with ``status`` whose detail or field mentions each of
    ``mentions`` (the bad field, the unknown name, the flags in the way)."""
    assert answer.status_code == status, (answer.status_code, answer.text)
    assert answer.headers["content-type"].startswith("application/problem+json"), answer.headers
    body: dict[str, Any] = answer.json()
    assert body["status"] == status
    assert body["title"], body
    assert body["detail"], body
    text = f"{body['detail']} {body.get('field') or ''}"
    for mention in mentions:
        assert mention in text, (mention, body)
    return body


def store_state(admin: httpx.Client) -> tuple[int, bytes]:
    """(snapshot version, full export with volatile fields): equal before and after means the
    store did not change at all."""
    version = admin.get("/admin/v1/flags").json()["snapshot_version"]
    export = admin.get("/admin/v1/snapshot", params={"volatile": "true"})
    assert export.status_code == 200, export.text
    return int(version), export.content

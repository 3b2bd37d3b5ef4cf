"""Stream tickets (docs/spec.md section 12; docs/adr/0019-stream-tickets-and-the-server-
secret.md): on a server that needs tokens, the bulk answer to a request made with a token
advertises the change stream with a ticket a browser's ``EventSource`` can open without
headers; tickets expire, cannot be forged, name their token, stop working when it is
revoked or the server secret rotates, and work on every worker."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flagport_server.runtime import hash_secret
from flagport_server.stores import open_store
from flagport_server.tickets import (
    MAX_TICKET_LENGTH,
    TicketError,
    check_ticket,
    day_of,
    mint_ticket,
    read_ticket,
)
from tests.cli.conftest import run_flags
from tests.support.server import (
    PORTAL_FLAGS,
    RunningServer,
    free_port,
    running_server,
    wait_until,
)

KEY = bytes(range(32))
CREDENTIAL = hash_secret("fpe_the-token's-secret")


def ticket_token_id(key: bytes, ticket: str, today: int, credential: str = CREDENTIAL) -> str:
    """The token ``ticket`` names, checked as the stream's guard checks it."""
    parts = read_ticket(ticket)
    check_ticket(key, parts, credential, today)
    return parts.token_id


BODY = b'{"context":{"targetingKey":"user-1"}}'
JSON = {"Content-Type": "application/json"}


# -- the tickets themselves ------------------------------------------------------------------


@given(st.text("0123456789abcdef", min_size=1, max_size=32), st.integers(20_000, 30_000))
def test_a_ticket_names_its_token_on_its_day_and_the_next(token_id: str, day: int) -> None:
    ticket = mint_ticket(KEY, token_id, day, CREDENTIAL)
    assert len(ticket) <= MAX_TICKET_LENGTH
    assert ticket_token_id(KEY, ticket, day) == token_id
    assert ticket_token_id(KEY, ticket, day + 1) == token_id  # valid >= 24 h whenever made
    with pytest.raises(TicketError, match="expired"):
        ticket_token_id(KEY, ticket, day + 2)
    with pytest.raises(TicketError, match="expired"):
        ticket_token_id(KEY, ticket, day - 1)  # not before it was made


def test_forged_tickets_are_refused() -> None:
    ticket = mint_ticket(KEY, "abc123", 20_000, CREDENTIAL)
    token, day, mac = ticket.split(".")
    other_key = bytes(32)
    for forged in (
        f"{token}.{day}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}",  # a changed mac
        f"abc124.{day}.{mac}",  # another token's id with this mac
        f"{token}.{int(day) + 1}.{mac}",  # a later day with this mac
        mint_ticket(other_key, token, int(day), CREDENTIAL),  # made with another secret
    ):
        with pytest.raises(TicketError, match="not made by this server"):
            ticket_token_id(KEY, forged, int(day))
    # Made for the token's secret before it was rotated.
    with pytest.raises(TicketError, match="token's secret was rotated"):
        ticket_token_id(KEY, ticket, int(day), hash_secret("fpe_the-rotated-secret"))
    for garbage in (
        "",
        "x",
        "a.b.c",
        "a" * 200,
        f"{token}.{day}.{mac}.x",
        "é.1.xxxxxxxxxxxxxxxxxxxxxxxx",
    ):
        with pytest.raises(TicketError, match="not one this server makes"):
            ticket_token_id(KEY, garbage, int(day))


def test_the_day_is_the_utc_day() -> None:
    assert day_of(0) == 0
    assert day_of(86_399.9) == 0
    assert day_of(86_400) == 1


# -- on a real server ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One token server of two workers for the tests below (each makes tokens of its own
    names; the rotation test runs last)."""
    extra = ["--require-eval-token", "--workers", "2"]
    workdir = tmp_path_factory.mktemp("tickets")
    with running_server(workdir, seed=PORTAL_FLAGS, extra=extra) as running:
        yield running


def make_token(
    server: RunningServer, name: str, scope: str = "evaluate", workers: int = 2
) -> tuple[str, str]:
    """A new token, known to every one of the server's ``workers`` when this returns (a
    worker that has not sent its first heartbeat yet is not in the registry: count them)."""
    with server.admin(timeout=10) as admin:
        made = admin.post("/admin/v1/tokens", json={"name": name, "scope": scope})
        assert made.status_code == 201, made.text
        version = admin.get("/admin/v1/audit", params={"limit": 1}).json()["entries"][0][
            "snapshot_version"
        ]

        def everywhere() -> bool:
            answer = admin.get("/admin/v1/propagation", params={"version": version}).json()
            return bool(answer["complete"]) and len(answer["workers"]) >= workers

        assert wait_until(everywhere, 10)
    return made.json()["token"]["id"], made.json()["secret"]


def stream_path(server: RunningServer, secret: str) -> tuple[str, str]:
    """The stream path the bulk answer advertises to a request made with ``secret``, and the
    answer's ETag."""
    answer = httpx.post(
        server.url + "/ofrep/v1/evaluate/flags",
        content=BODY,
        headers={**JSON, "Authorization": f"Bearer {secret}"},
        timeout=5,
    )
    assert answer.status_code == 200, answer.text
    (stream,) = answer.json()["eventStreams"]
    return stream["endpoint"]["requestUri"], answer.headers["etag"]


def secret_of(server: RunningServer) -> bytes:
    async def read() -> bytes:
        store = open_store(f"sqlite:///{server.workdir / 'flagport.db'}")
        await store.open()
        try:
            return await store.server_secret()
        finally:
            await store.close()

    return asyncio.run(read())


class Stream:
    """An open change stream read in a thread: its status and the events it got."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.status: int | None = None
        self.body = b""
        self.events: list[str] = []
        self.closed = threading.Event()
        self.opened = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, headers or {}), daemon=True)
        self._thread.start()
        assert self.opened.wait(10)

    def _run(self, url: str, headers: dict[str, str]) -> None:
        try:
            with httpx.stream("GET", url, headers=headers, timeout=30) as answer:
                self.status = answer.status_code
                self.opened.set()
                if answer.status_code != 200:
                    self.body = answer.read()
                    return
                for line in answer.iter_lines():
                    if line.startswith("data:"):
                        self.events.append(line)
        except httpx.HTTPError:
            pass
        finally:
            self.opened.set()
            self.closed.set()


def test_a_browser_opens_the_stream_with_the_ticket_its_bulk_answer_gave(
    server: RunningServer,
) -> None:
    token_id, secret = make_token(server, "first-page")
    path, etag = stream_path(server, secret)
    assert path.startswith(f"/v1/stream?ticket={token_id}.")
    # The ETag names the day, so a 304 never keeps an expired ticket.
    assert etag.startswith(f'"{etag.strip(chr(34)).split("-")[0]}-{day_of(time.time())}-')
    # Without the header, as EventSource sends it: every worker takes the ticket.
    for _ in range(6):
        stream = Stream(server.url + path)
        assert stream.status == 200, stream.body
    stream = Stream(server.url + path)
    with server.admin(timeout=10) as admin:
        assert admin.post("/admin/v1/flags/ui-improvements/disable", json={}).status_code == 200
    deadline = time.monotonic() + 5
    while not stream.events and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stream.events
    assert "refetchEvaluation" in stream.events[0]
    # Without a token: no ticket, and the stream needs one.
    refused = httpx.get(server.url + "/v1/stream", timeout=5)
    assert refused.status_code == 401


def test_bad_tickets_get_401_naming_why_and_change_nothing(server: RunningServer) -> None:
    token_id, secret = make_token(server, "revoked-page")
    other_id, other_secret = make_token(server, "other-page")
    path, _ = stream_path(server, secret)
    ticket = path.split("ticket=", 1)[1]
    key = secret_of(server)
    today = day_of(time.time())
    cases = {
        "has expired": mint_ticket(key, token_id, today - 2, hash_secret(secret)),
        "not made by this server": ticket[:-2] + ("AA" if not ticket.endswith("AA") else "BB"),
        "not one this server makes": "x" * 500,
    }
    for why, bad in cases.items():
        answer = httpx.get(server.url + "/v1/stream", params={"ticket": bad}, timeout=5)
        assert answer.status_code == 401, (why, answer.text)
        assert why in answer.text
    # Another token's ticket beside a token header.
    answer = httpx.get(
        server.url + "/v1/stream",
        params={"ticket": ticket},
        headers={"Authorization": f"Bearer {other_secret}"},
        timeout=5,
    )
    assert answer.status_code == 401
    assert "made for another token" in answer.text
    # A revoked token's ticket: refused, and its open streams end.
    stream = Stream(server.url + path)
    assert stream.status == 200
    revoked = run_flags("token", "revoke", token_id, url=server.url, token=server.admin_token)
    assert revoked.code == 0, str(revoked)
    assert stream.closed.wait(10)
    answer = httpx.get(server.url + path, timeout=5)
    assert answer.status_code == 401
    assert "revoked" in answer.text
    # A token of a scope that may not stream (viewer) cannot either.
    viewer_id, viewer_secret = make_token(server, "dash", "viewer")
    viewer_ticket = mint_ticket(key, viewer_id, today, hash_secret(viewer_secret))
    answer = httpx.get(server.url + "/v1/stream", params={"ticket": viewer_ticket}, timeout=5)
    assert answer.status_code == 403
    assert other_id  # the other token still streams with its own header
    ok = Stream(server.url + "/v1/stream", {"Authorization": f"Bearer {other_secret}"})
    assert ok.status == 200


def test_rotating_a_token_ends_its_streams_and_retires_its_tickets(server: RunningServer) -> None:
    """The documented answer to a leaked secret: the old secret's ticket no longer opens a
    stream, its open streams (by ticket or header) end, the new secret gets a working one."""
    token_id, secret = make_token(server, "leaked-page")
    old_path, _ = stream_path(server, secret)
    by_ticket = Stream(server.url + old_path)
    by_header = Stream(server.url + "/v1/stream", {"Authorization": f"Bearer {secret}"})
    assert by_ticket.status == by_header.status == 200
    rotated = run_flags(
        "token", "rotate", token_id, "--json", url=server.url, token=server.admin_token
    )
    assert rotated.code == 0, str(rotated)
    assert by_ticket.closed.wait(10)
    assert by_header.closed.wait(10)
    for _ in range(4):  # every worker
        answer = httpx.get(server.url + old_path, timeout=5)
        assert answer.status_code == 401
        assert "token's secret was rotated" in answer.text
    new_secret = json.loads(rotated.out)["secret"]
    new_path, _ = stream_path(server, new_secret)
    assert new_path != old_path
    assert Stream(server.url + new_path).status == 200


def test_rotating_the_server_secret_retires_every_ticket(server: RunningServer) -> None:
    _, secret = make_token(server, "rotated-page")
    old_path, _ = stream_path(server, secret)
    before = secret_of(server)
    rotated = run_flags("token", "rotate-secret", url=server.url, token=server.admin_token)
    assert rotated.code == 0, str(rotated)
    assert "server secret rotated" in rotated.out
    assert before.hex() not in rotated.out + rotated.err
    assert secret_of(server) != before
    for _ in range(4):  # every worker
        answer = httpx.get(server.url + old_path, timeout=5)
        assert answer.status_code == 401
        assert "not made by this server" in answer.text
    new_path, _ = stream_path(server, secret)
    assert new_path != old_path
    assert Stream(server.url + new_path).status == 200
    with server.admin(timeout=10) as admin:
        entries = admin.get("/admin/v1/audit", params={"limit": 5}).json()["entries"]
    assert entries[0]["action"] == "secret.rotate"
    assert before.hex() not in str(entries)


def test_an_open_server_advertises_the_plain_stream(tmp_path: Path) -> None:
    with running_server(tmp_path, seed=PORTAL_FLAGS) as server:
        _, secret = make_token(server, "portal-page", workers=1)
        path, _ = stream_path(server, secret)
        assert path == "/v1/stream"


def test_public_url_makes_the_advertised_stream_absolute(tmp_path: Path) -> None:
    extra = ["--require-eval-token", "--public-url", "https://flags.portal.example/flagport"]
    with running_server(tmp_path, seed=PORTAL_FLAGS, extra=extra) as server:
        token_id, secret = make_token(server, "portal-page", workers=1)
        answer = httpx.post(
            server.url + "/ofrep/v1/evaluate/flags",
            content=BODY,
            headers={**JSON, "Authorization": f"Bearer {secret}"},
            timeout=5,
        )
        (stream,) = answer.json()["eventStreams"]
        prefix = f"https://flags.portal.example/flagport/v1/stream?ticket={token_id}."
        assert stream["url"].startswith(prefix)


@pytest.mark.parametrize(
    "bad", ["flags.portal.example", "ftp://flags.example", "https://x.example/?a=b", "http://"]
)
def test_public_url_must_be_an_absolute_http_url(bad: str, tmp_path: Path) -> None:
    result: Any = run_flags(
        "serve",
        "--port",
        str(free_port()),
        "--public-url",
        bad,
        url=None,
        token=None,
        cwd=tmp_path,
        timeout=20,
    )
    assert result.code == 2, str(result)
    assert "--public-url" in result.err
    assert "is not an absolute http(s) URL" in result.err

"""SDK feeds against a live 2-worker server (issue 4, item 6): ``GET /v1/snapshot`` with
ETag/304 and ``GET /v1/stream`` (SSE) read by a real HTTP client over a real socket.

httpx streams the response as bytes arrive (unlike ``httpx.ASGITransport``, which buffers the
whole body), so the latency measured here is what an SDK sees: from the admin write to the
``refetchEvaluation`` event, on every open stream (streams land on both workers).
"""

from __future__ import annotations

import json
import queue
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server._fixtures import fresh_request, live_server, snapshot_version
from tests.support.server import PORTAL_FLAGS, RunningServer, running_server

server = live_server(workers=2, seed=PORTAL_FLAGS)

#: The issue's budget is 100 ms; the assertion is generous for a busy 2-core machine and the
#: measured figures are printed (run with ``-s``).
LATENCY_BOUND_S = 1.0


@dataclass
class Event:
    at: float
    id: str | None
    data: dict[str, Any]


@dataclass
class StreamReader:
    """Reads ``/v1/stream`` in a thread; every dispatched event goes to ``events``."""

    url: str
    headers: dict[str, str | bytes] = field(default_factory=dict)
    events: queue.Queue[Event] = field(default_factory=queue.Queue)
    comments: list[str] = field(default_factory=list)
    retry: list[str] = field(default_factory=list)
    connected: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    ended_at: float | None = None
    status: int | None = None
    response_headers: httpx.Headers | None = None
    error: BaseException | None = None

    def start(self) -> StreamReader:
        threading.Thread(target=self._run, daemon=True).start()
        assert self.connected.wait(10), self.error
        return self

    def _run(self) -> None:
        try:
            timeout = httpx.Timeout(10.0, read=None)
            with (
                httpx.Client(timeout=timeout) as client,
                client.stream("GET", self.url + "/v1/stream", headers=self.headers) as response,
            ):
                self.status = response.status_code
                self.response_headers = response.headers
                event_id: str | None = None
                data: list[str] = []
                for line in response.iter_lines():
                    if line.startswith(":"):
                        self.comments.append(line[1:].strip())
                    elif line.startswith("retry:"):
                        self.retry.append(line[6:].strip())
                    elif line.startswith("id:"):
                        event_id = line[3:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif line == "" and data:
                        payload = json.loads("\n".join(data))
                        self.events.put(Event(time.monotonic(), event_id, payload))
                        event_id, data = None, []
                    if self.comments:
                        self.connected.set()  # the initial comment: subscribed
        except BaseException as error:  # reported by the test
            self.error = error
        finally:
            self.ended_at = time.monotonic()
            self.connected.set()
            self.ended.set()

    def next_event(self, timeout: float = 5.0) -> Event:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event within {timeout}s (error: {self.error})") from None

    def wait_for_etag(self, etag: str, timeout: float = 5.0) -> Event:
        deadline = time.monotonic() + timeout
        while True:
            event = self.next_event(max(0.01, deadline - time.monotonic()))
            if event.data["etag"] == etag:
                return event
            assert int(event.data["etag"]) < int(etag), (event, etag)


@pytest.fixture(scope="module")
def admin(server: RunningServer) -> Iterator[httpx.Client]:
    with server.admin(timeout=10.0) as client:
        yield client


@pytest.fixture(scope="module")
def streams(server: RunningServer) -> list[StreamReader]:
    """At least four streams on separate connections, on both workers (``X-Flagport-Worker``
    says which one serves a stream)."""
    readers: list[StreamReader] = []
    while len(readers) < 4 or len({worker(r) for r in readers}) < 2:
        assert len(readers) < 16, "granian never handed a stream to the second worker"
        readers.append(StreamReader(server.url).start())
    return readers


def worker(reader: StreamReader) -> str:
    assert reader.response_headers is not None, reader.error
    return reader.response_headers["x-flagport-worker"]


def test_stream_headers_and_first_lines(streams: list[StreamReader]) -> None:
    for stream in streams:
        assert stream.status == 200, stream.error
        assert stream.response_headers is not None
        assert stream.response_headers["content-type"].startswith("text/event-stream")
        assert stream.response_headers["cache-control"] == "no-cache"
        assert worker(stream).isdigit()
        # The opening comment (keep-alives are comments too) and the reconnection delay.
        assert stream.comments[0].startswith("flagport snapshot ")
        assert stream.retry == ["1000"]


def test_event_for_every_change_within_bound(
    server: RunningServer, admin: httpx.Client, streams: list[StreamReader]
) -> None:
    latencies: list[float] = []
    by_worker: dict[str, list[float]] = {}
    for round_ in range(12):
        path = "/admin/v1/flags/auth-improvements/" + ("enable" if round_ % 2 == 0 else "disable")
        started = time.monotonic()
        answer = admin.post(path, json={"reason": f"sse round {round_}"})
        assert answer.status_code == 200, answer.text
        etag = str(answer.json()["snapshot_version"])
        for stream in streams:
            event = stream.wait_for_etag(etag)
            assert event.data["type"] == "refetchEvaluation"
            assert event.id == etag
            latencies.append(event.at - started)
            by_worker.setdefault(worker(stream), []).append(event.at - started)
    worst = max(latencies)
    print(
        f"\nSSE latency, admin write sent -> event read, {len(latencies)} deliveries: "
        f"median {statistics.median(latencies) * 1000:.1f} ms, "
        f"p90 {statistics.quantiles(latencies, n=10)[-1] * 1000:.1f} ms, "
        f"max {worst * 1000:.1f} ms; per worker median "
        + ", ".join(f"{pid}: {statistics.median(v) * 1000:.1f} ms" for pid, v in by_worker.items())
    )
    assert worst < LATENCY_BOUND_S, latencies


def test_burst_of_changes_ends_on_the_last_version(
    admin: httpx.Client, streams: list[StreamReader]
) -> None:
    """Events may coalesce a burst, but the last one always names the final version."""
    for n in range(5):
        answer = admin.post(
            "/admin/v1/flags/enhanced-mobile-nav/enable", json={"percentage": 10 + n}
        )
        assert answer.status_code == 200, answer.text
    final = str(answer.json()["snapshot_version"])
    for stream in streams:
        stream.wait_for_etag(final)


def test_last_event_id_replays_at_once(server: RunningServer, admin: httpx.Client) -> None:
    current = snapshot_version(server)
    old = StreamReader(server.url, headers={"Last-Event-ID": "1"}).start()
    event = old.next_event(timeout=2.0)
    assert event.data == {
        "type": "refetchEvaluation",
        "etag": str(current),
        "lastModified": event.data["lastModified"],
    }
    assert isinstance(event.data["lastModified"], int)
    # Up to date, or an id that is not a version: no replay, just the live events.
    for header in (str(current), "garbage", ""):
        fresh = StreamReader(server.url, headers={"Last-Event-ID": header}).start()
        with pytest.raises(queue.Empty):
            fresh.events.get(timeout=0.3)
    answer = admin.post("/admin/v1/flags/auth-improvements/disable", json={})
    etag = str(answer.json()["snapshot_version"])
    old.wait_for_etag(etag)
    fresh.wait_for_etag(etag)


@pytest.mark.parametrize("header", [b"\xb2", "٣".encode(), b"9" * 5000, b"-1", b"1e3"])
def test_a_last_event_id_that_is_no_version_is_treated_as_absent(
    server: RunningServer, header: bytes
) -> None:
    """Not a 500, not a replay: "²" and "٣" pass ``str.isdigit`` (``int`` refuses the first and
    reads the second as 3), and ``int`` reads at most 4,300 digits."""
    reader = StreamReader(server.url, headers={"Last-Event-ID": header}).start()
    assert reader.status == 200, reader.error
    assert reader.comments[0].startswith("flagport snapshot"), reader.comments
    with pytest.raises(queue.Empty):
        reader.events.get(timeout=0.2)


def test_bulk_lists_the_stream(server: RunningServer) -> None:
    with server.client(timeout=10.0) as client:
        answer = client.post("/ofrep/v1/evaluate/flags", json={"context": {"targetingKey": "u"}})
    assert answer.status_code == 200, answer.text
    streams = answer.json()["eventStreams"]
    assert streams, answer.json()
    assert streams[0]["type"] == "sse"
    uri = streams[0].get("url") or streams[0]["endpoint"]["requestUri"]
    assert uri.endswith("/v1/stream")


def test_snapshot_feed_etag_and_304(server: RunningServer, admin: httpx.Client) -> None:
    version = snapshot_version(server)
    with server.client(timeout=10.0) as client:
        answer = client.get("/v1/snapshot")
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("application/json")
        etag = answer.headers["etag"]
        assert int(etag.strip('"')) >= version
        document = answer.json()
        assert document["bucketing"] == 1
        assert document["version"] == int(etag.strip('"'))
        assert "ui-improvements.mobile-navigation-fix" in document["flags"]
        assert answer.headers["x-flagport-snapshot"] == etag.strip('"')
        cached = client.get("/v1/snapshot", headers={"If-None-Match": etag})
        assert cached.status_code == 304
        assert cached.content == b""
        assert cached.headers["etag"] == etag
        changed = admin.post("/admin/v1/flags/auth-improvements/enable", json={"percentage": 5})
        new_version = changed.json()["snapshot_version"]

    # Every worker serves the new document (and 200 for the old ETag) within a second.
    def fresh_etag_is_new() -> bool:
        status, headers, _ = _get_fresh(server, etag)
        return status == 200 and headers["etag"] == f'"{new_version}"'

    deadline = time.monotonic() + 2.0
    hits = 0
    while hits < 6:
        assert time.monotonic() < deadline, "a worker kept serving the old snapshot"
        hits = hits + 1 if fresh_etag_is_new() else 0
    _, _, body = _get_fresh(server, etag)
    flag = json.loads(body)["flags"]["auth-improvements"]
    assert flag["enabled"] is True
    assert flag["percentage"] == 5


def _get_fresh(server: RunningServer, etag: str) -> tuple[int, dict[str, str], bytes]:
    import http.client

    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5.0)
    try:
        connection.request("GET", "/v1/snapshot", headers={"If-None-Match": etag})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def test_feeds_need_no_admin_token_but_refuse_bad_methods(server: RunningServer) -> None:
    status, _, _ = fresh_request(server, "POST", "/v1/snapshot", {})
    assert status == 405
    status, _, _ = fresh_request(server, "POST", "/v1/stream", {})
    assert status == 405


def test_stopping_the_server_ends_open_streams(tmp_path: Path) -> None:
    """Clean shutdown: an open stream must not hold the server (granian drains connections
    before the app's shutdown runs), and the client's read ends promptly."""
    with running_server(tmp_path, workers=2, seed=PORTAL_FLAGS) as live:
        readers = [StreamReader(live.url).start() for _ in range(3)]
        started = time.monotonic()
        live.stop(timeout=15.0)
        stopped = time.monotonic() - started
        for reader in readers:
            assert reader.ended.wait(5.0), "the stream read hangs after the server stopped"
            assert reader.ended_at is not None
            assert reader.ended_at - started < 5.0
        assert live.process.returncode == 0, (live.process.returncode, live.log()[-2000:])
        assert stopped < 5.0, f"server took {stopped:.1f}s to stop"

"""The Python SDK's outcome signals (docs/spec.md section 13): the ASGI and WSGI middleware,
``report()``, OpenFeature ``track``, and the background reporter posting ``POST /v1/outcomes``.

The server's ``/v1/outcomes`` and its cohort metadata are not built yet, so the clients talk
to a small real HTTP server in a thread (:class:`Sink`): its OFREP route answers with the
cohort metadata of the contract, and its outcomes route decodes every body with the real wire
types (``flagport.rollout.outcomes.OutcomeBatch``, strict) and counts it with the real
``OutcomeAggregate`` (``accept_batch``), refusing what the server would refuse.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
import wsgiref.simple_server
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openfeature import api
from openfeature.evaluation_context import EvaluationContext as OFContext
from openfeature.track import TrackingEventDetails

from flagport import AsyncClient, Client, ClientError
from flagport.middleware import OutcomeMiddleware, WSGIOutcomeMiddleware
from flagport.openfeature import FlagportProvider
from flagport.reporting import (
    OutcomeRecorder,
    OutcomeReporter,
    Read,
    Taken,
    close_reads,
    current_reads,
    encode_batches,
    note_read,
    open_reads,
)
from flagport.rollout.limits import (
    LATENCY_BOUNDS_MS,
    MAX_OUTCOME_BODY,
    MAX_OUTCOME_EVENTS,
    MAX_OUTCOME_ITEMS,
)
from flagport.rollout.outcomes import (
    BUCKETS,
    Cohort,
    OutcomeAggregate,
    OutcomeBatch,
    OutcomeEvent,
    OutcomeItem,
    batch_problem,
    bucket_of,
)
from tests.support.server import wait_until

pytestmark = pytest.mark.timeout(60)

PLAN = "ui-improvements"
CHILD = "ui-improvements.dropdown-fixes"
PLAIN = "dark-mode"
VARIANTS = {PLAN: {"on", "off"}, CHILD: {"on", "off"}, PLAIN: {"on", "off"}}
_decode_batch = msgspec.json.Decoder(OutcomeBatch)


def cohort_of(unit: str) -> Cohort | None:
    """The test's plan: units "t..." in treatment, "c..." in control, others in neither."""
    return {"t": Cohort.TREATMENT, "c": Cohort.CONTROL}.get(unit[:1])


def answer(key: str, unit: str) -> dict[str, Any]:
    """An OFREP answer as the contract says the server gives it: the plan flag and its
    gated child carry the plan's cohort metadata for units in a cohort."""
    cohort = cohort_of(unit)
    on = cohort is Cohort.TREATMENT
    body: dict[str, Any] = {"key": key, "value": on, "variant": "on" if on else "off"}
    body["reason"] = "SPLIT" if cohort is not None else "DEFAULT"
    if key in (PLAN, CHILD) and cohort is not None:
        body["metadata"] = {
            "rolloutFlag": PLAN,
            "rolloutCohort": cohort.value,
            "rolloutVariant": "on" if on else "off",
        }
    return body


class Sink:
    """A real HTTP server: OFREP single answers, and ``POST /v1/outcomes`` validated and
    counted as the server would. ``fail`` answers that many outcome posts with 503;
    ``refuse`` answers every outcome post with 400."""

    def __init__(self) -> None:
        self.batches: list[OutcomeBatch] = []
        self.bodies: list[bytes] = []
        self.aggregate = OutcomeAggregate()
        self.fail = 0
        self.refuse = False
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 1 << 16  # one write per answer (no Nagle delay between two)

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, answer_body = sink.handle(self.path, body)
                payload = json.dumps(answer_body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def handle(self, path: str, body: bytes) -> tuple[int, Any]:
        if path.startswith("/ofrep/v1/evaluate/flags/"):
            key = path.rsplit("/", 1)[-1]
            unit = json.loads(body)["context"].get("targetingKey", "")
            return 200, answer(key, unit)
        if path != "/v1/outcomes":
            return 404, {"detail": "not found"}
        with self.lock:
            if self.refuse:
                return 400, {"detail": "refused"}
            if self.fail:
                self.fail -= 1
                return 503, {"detail": "busy"}
            assert len(body) <= MAX_OUTCOME_BODY
            batch = _decode_batch.decode(body)  # strict: unknown fields, types, patterns
            assert batch_problem(batch) is None
            rejected = self.aggregate.add_batch(batch, time.time(), VARIANTS.get)
            assert rejected == [], rejected
            self.batches.append(batch)
            self.bodies.append(body)
        return 200, {"counted": len(batch.items) + len(batch.events), "rejected": []}

    def totals(self, key: str, cohort: Cohort) -> Any:
        now = time.time()
        with self.lock:
            return self.aggregate.read(key, now - 300, now).cohort(cohort)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sink() -> Iterator[Sink]:
    running = Sink()
    yield running
    running.close()


def ctx(unit: str) -> dict[str, str]:
    return {"targetingKey": unit}


# -- ASGI -------------------------------------------------------------------------------------


def asgi_app(flags: AsyncClient) -> Callable[..., Any]:
    """A plain ASGI app (no framework): ``/plan`` reads the plan flag, ``/child`` only its
    gated child, ``/plain`` a flag under no plan; ``?fail`` answers 503, ``?raise`` raises
    after reading, ``?event`` reports a critical user report."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        path, query = scope["path"], scope["query_string"].decode()
        unit = dict(scope["headers"]).get(b"x-unit", b"").decode()
        key = {"/plan": PLAN, "/child": CHILD, "/plain": PLAIN}[path]
        await flags.details(key, False, ctx(unit))
        if "event" in query:
            flags.report("user_report", severity="critical")
        if "raise" in query:
            raise RuntimeError("the new UI broke")
        status = 503 if "fail" in query else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


async def call_asgi(app: Any, path: str, unit: str, query: str = "") -> int:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": query.encode(),
        "headers": [(b"x-unit", unit.encode())],
    }
    await app(scope, receive, send)
    return int(sent[0]["status"])


def test_asgi_middleware_attributes_status_and_duration_per_cohort(sink: Sink) -> None:
    async def main() -> None:
        async with AsyncClient(sink.url) as flags:
            app = OutcomeMiddleware(asgi_app(flags), flags)
            for n in range(10):
                assert await call_asgi(app, "/plan", f"t{n}") == 200
                assert await call_asgi(app, "/child", f"c{n}") == 200  # the child only
            assert await call_asgi(app, "/plan", "t-a", "fail") == 503
            with pytest.raises(RuntimeError, match="broke"):
                await call_asgi(app, "/child", "t-b", "raise")
            await call_asgi(app, "/plan", "n1")  # in neither cohort: nothing
            await call_asgi(app, "/plain", "t1")  # no plan: nothing
            await call_asgi(app, "/plan", "c-e", "event")
            # Lifespan and websocket scopes pass through untouched.
            seen: list[str] = []

            async def other(scope: Any, receive: Any, send: Any) -> None:
                seen.append(scope["type"])

            await OutcomeMiddleware(other, flags)({"type": "lifespan"}, None, None)
            assert seen == ["lifespan"]
            flags.outcomes.flush()
            assert flags.outcomes.delivered == 23
        # Outside a request, reads are not noted and report counts nothing.
        assert current_reads() == frozenset()

    asyncio.run(main())
    treatment, control = sink.totals(PLAN, Cohort.TREATMENT), sink.totals(PLAN, Cohort.CONTROL)
    assert (treatment.requests, treatment.failures) == (12, 2)
    assert (control.requests, control.failures) == (11, 0)
    assert control.count("user_report", [("severity", "critical")]) == 1
    assert treatment.count("user_report") == 0
    assert sum(treatment.latency_buckets) == 12
    assert treatment.latency_us_sum > 0
    # Only the plan flag is reported: the child's reads count for its plan.
    assert {item.key for batch in sink.batches for item in batch.items} == {PLAN}
    assert {(i.variant, i.cohort) for b in sink.batches for i in b.items} == {
        ("on", Cohort.TREATMENT),
        ("off", Cohort.CONTROL),
    }


def test_a_request_reading_no_plan_flag_is_not_counted(sink: Sink) -> None:
    async def main() -> OutcomeReporter:
        async with AsyncClient(sink.url) as flags:
            app = OutcomeMiddleware(asgi_app(flags), flags)
            await call_asgi(app, "/plain", "t1")
            await call_asgi(app, "/plan", "n1", "fail")
            return flags.outcomes

    reporter = asyncio.run(main())
    assert reporter.delivered == 0
    assert reporter._thread is None  # nothing counted: no thread either
    assert sink.batches == []


# -- WSGI (wsgiref, a real server) -------------------------------------------------------------


def wsgi_app(flags: Client) -> Callable[..., Any]:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        unit = environ.get("HTTP_X_UNIT", "")
        query = environ.get("QUERY_STRING", "")
        key = {"/plan": PLAN, "/child": CHILD, "/plain": PLAIN}[environ["PATH_INFO"]]
        flags.is_enabled(key, ctx(unit))
        if "event" in query:
            assert flags.report("user_report", severity="critical") == 1
        if "raise" in query:
            raise RuntimeError("the new UI broke")
        if "stream" in query:
            start_response("200 OK", [("Content-Type", "text/plain")])

            def broken() -> Iterator[bytes]:
                yield b"half"
                raise RuntimeError("broke while streaming")

            return broken()
        start_response("500 Internal Server Error" if "fail" in query else "200 OK", [])
        return [b"ok"]

    return app


class _Quiet(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def wsgi(sink: Sink) -> Iterator[tuple[str, Client]]:
    flags = Client(sink.url)
    app = WSGIOutcomeMiddleware(wsgi_app(flags), flags)
    server = wsgiref.simple_server.make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", flags
    finally:
        server.shutdown()
        server.server_close()
        flags.close()


def test_wsgi_middleware_under_a_real_server(
    sink: Sink, wsgi: tuple[str, Client], caplog: pytest.LogCaptureFixture
) -> None:
    url, flags = wsgi
    with httpx.Client(base_url=url) as http:
        for n in range(5):
            assert http.get("/plan", headers={"x-unit": f"t{n}"}).status_code == 200
            assert http.get("/child", headers={"x-unit": f"c{n}"}).status_code == 200
        assert http.get("/plan?fail", headers={"x-unit": "t-f"}).status_code == 500
        assert http.get("/child?raise", headers={"x-unit": "c-r"}).status_code == 500
        try:  # the body breaks half-way: what the client sees is wsgiref's business
            http.get("/plan?stream", headers={"x-unit": "t-s"})
        except httpx.HTTPError:
            pass
        http.get("/plain", headers={"x-unit": "t1"})
        http.get("/plan?event", headers={"x-unit": "t-e"})
    # wsgiref closes the body (the request's end) just after the client has its answer.
    assert wait_until(lambda: flags.outcomes.flush() >= 0 and flags.outcomes.delivered == 14)
    treatment, control = sink.totals(PLAN, Cohort.TREATMENT), sink.totals(PLAN, Cohort.CONTROL)
    assert (treatment.requests, treatment.failures) == (8, 2)
    assert (control.requests, control.failures) == (6, 1)
    assert treatment.count("user_report", [("severity", "critical")]) == 1


# -- report(), OpenFeature track ---------------------------------------------------------------


def test_report_counts_for_the_reads_of_the_current_request_only(sink: Sink) -> None:
    with Client(sink.url) as flags:
        flags.is_enabled(PLAN, ctx("t1"))
        assert flags.report("user_report", severity="critical") == 0  # outside a request
        reads, token = open_reads()
        try:
            flags.is_enabled(CHILD, ctx("t1"))
            flags.is_enabled(PLAN, ctx("t1"))  # the same cohort once
            assert reads == {Read(PLAN, "on", "treatment")}
            assert flags.report("checkout", step="2") == 1
        finally:
            close_reads(token)
        for bad, why in [
            ("", "invalid event name"),
            ("9lives", "invalid event name"),
            ("x" * 65, "invalid event name"),
        ]:
            with pytest.raises(ClientError, match=why):
                flags.report(bad)
        with pytest.raises(ClientError, match="invalid label name"):
            flags.report("ok", **{"bad-label": "v"})
        with pytest.raises(ClientError, match="at most 256"):
            flags.report("ok", severity="x" * 257)
        with pytest.raises(ClientError, match="at most 8"):
            flags.report("ok", **{f"l{n}": "v" for n in range(9)})
        with pytest.raises(ClientError, match="a string"):
            flags.report("ok", count=3)  # type: ignore[arg-type]
        assert flags.outcomes.recorder.take() is not None
    assert sink.batches == []  # taken by the test: nothing left to post at close


def test_openfeature_track_maps_to_report(sink: Sink, caplog: pytest.LogCaptureFixture) -> None:
    provider = FlagportProvider.remote(sink.url)
    api.set_provider_and_wait(provider)
    try:
        client = api.get_client()
        _, token = open_reads()
        try:
            assert client.get_boolean_value(CHILD, False, OFContext("c1")) is False
            details = TrackingEventDetails(value=3.5, attributes={"severity": "critical"})
            details.add("retry", True).add("attempt", 2).add("nested", {"a": 1})
            client.track("user_report", OFContext("c1"), details)
            with caplog.at_level(logging.WARNING, logger="flagport"):
                client.track("not a name")  # logged, never raised
        finally:
            close_reads(token)
        assert "tracking event not counted" in caplog.text
        provider.client.outcomes.flush()
    finally:
        api.shutdown()
    (batch,) = sink.batches
    (event,) = batch.events
    assert (event.key, event.cohort, event.name, event.count) == (
        PLAN,
        Cohort.CONTROL,
        "user_report",
        1,
    )
    assert event.labels == {"severity": "critical", "retry": "true", "attempt": "2"}


# -- delivery: background, retries, staleness, refusals, close ----------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


READ = Read(PLAN, "on", "treatment")


def test_the_thread_posts_every_interval_and_close_flushes(sink: Sink) -> None:
    with httpx.Client(base_url=sink.url) as http:
        reporter = OutcomeReporter(http, interval=0.05)
        reporter.record_request([READ], False, 0.012)
        assert wait_until(lambda: len(sink.batches) == 1, timeout=5)
        reporter.record_request([READ], True, 0.003)
        reporter.close()
        assert len(sink.batches) == 2
        assert reporter.delivered == 2
        assert not reporter._thread or not reporter._thread.is_alive()
    first, second = sink.batches
    assert first.items[0].latency_buckets[bucket_of(12)] == 1
    assert (second.items[0].failures, second.items[0].latency_ms_sum) == (1, 3.0)


def test_a_failed_post_is_retried_while_fresh_then_dropped(
    sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    with httpx.Client(base_url=sink.url) as http:
        reporter = OutcomeReporter(http, clock=clock, log_interval=0)
        reporter.record_request([READ], False, 0.01)
        sink.fail = 1
        assert reporter.flush() == 0  # 503: kept
        reporter.record_request([READ], False, 0.01)
        assert reporter.flush() == 2  # both periods, in order
        assert len(sink.batches) == 2
        assert sink.batches[0].period[1] <= sink.batches[1].period[0]

        reporter.record_request([READ], False, 0.01)
        sink.fail = 10
        assert reporter.flush() == 0
        clock.now += 115  # stale by the time it would arrive: dropped, not sent
        with caplog.at_level(logging.WARNING, logger="flagport"):
            assert reporter.flush() == 0
        assert "dropped: its period is stale" in caplog.text
        assert (reporter.lost, len(reporter._pending)) == (1, 0)

        # Refused as a whole (an older server without the route, a bad token): not retried.
        sink.fail, sink.refuse = 0, True
        reporter.record_request([READ], False, 0.01)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="flagport"):
            assert reporter.flush() == 0
        assert "refused it (HTTP 400)" in caplog.text
        assert (reporter.lost, len(reporter._pending)) == (2, 0)


def test_an_unreachable_server_is_never_an_exception_and_pauses_posting() -> None:
    with httpx.Client(base_url="http://127.0.0.1:9") as http:  # nothing listens on port 9
        reporter = OutcomeReporter(http, interval=60)
        reporter.record_request([READ], False, 0.01)
        assert reporter.flush() == 0
        assert len(reporter._pending) == 1
        assert reporter._send(now=False) == 0  # paused after the failure: no attempt
        reporter.close()


def test_batches_are_split_within_the_bounds(sink: Sink) -> None:
    """2,500 items and 1,500 events with long labels: every body within 1,000 items, 1,000
    events and 1 MiB, accepted whole, and the totals preserved; counts above the per-item
    bound are split too."""
    items = [
        OutcomeItem(f"flag-{n}", "on", Cohort.TREATMENT, 1, 0, 1.5, [1] + [0] * (BUCKETS - 1))
        for n in range(2500)
    ]
    big = [2_000_000, 500_001] + [0] * (BUCKETS - 2)
    items.append(OutcomeItem("big", "on", Cohort.CONTROL, 2_500_001, 7, 1e6, big))
    events = [
        OutcomeEvent(
            f"flag-{n % 10}",
            "on",
            Cohort.CONTROL,
            "e",
            {f"l{k}": f"{n:04}" * 64 for k in range(8)},
            1,
        )
        for n in range(1500)
    ]
    events.append(OutcomeEvent("big", "on", Cohort.CONTROL, "e", {}, 2_000_001))
    now = time.time()
    taken = Taken((now - 1, now), items, events)
    bodies = encode_batches(taken)
    aggregate = OutcomeAggregate()
    for body in bodies:
        assert len(body) <= MAX_OUTCOME_BODY
        batch = _decode_batch.decode(body)
        assert len(batch.items) <= MAX_OUTCOME_ITEMS
        assert len(batch.events) <= MAX_OUTCOME_EVENTS
        assert aggregate.add_batch(batch, now) == []
    big_totals = aggregate.read("big", now - 60, now).control
    assert (big_totals.requests, big_totals.failures) == (2_500_001, 7)
    assert big_totals.latency_buckets[:2] == (2_000_000, 500_001)
    assert big_totals.latency_us_sum == 1_000_000_000
    assert big_totals.count("e") == 2_000_001
    assert len(bodies) >= 4  # 2,501 items: 3 batches at least; the events' bytes: more
    flags = [aggregate.read(f"flag-{n}", now - 60, now) for n in range(2500)]
    assert sum(reading.treatment.requests for reading in flags) == 2500
    assert sum(
        aggregate.read(f"flag-{n}", now - 60, now).control.count("e") for n in range(10)
    ) == (1500)


def test_cohort_metadata_that_is_not_the_contracts_is_ignored() -> None:
    reads, token = open_reads()
    try:
        for metadata in [
            {"rolloutFlag": PLAN, "rolloutCohort": "treatment"},  # no variant
            {"rolloutFlag": PLAN, "rolloutCohort": "both", "rolloutVariant": "on"},
            {"rolloutFlag": PLAN, "rolloutCohort": ["control"], "rolloutVariant": "on"},
            {"rolloutFlag": PLAN, "rolloutCohort": "control", "rolloutVariant": {"a": 1}},
            {"rolloutFlag": "Not A Key", "rolloutCohort": "control", "rolloutVariant": "on"},
            {"rolloutFlag": 7, "rolloutCohort": "control", "rolloutVariant": "on"},
            {"rolloutFlag": PLAN, "rolloutCohort": "control", "rolloutVariant": ""},
            {"gatedBy": PLAN, "on": True},
        ]:
            note_read(metadata)
        assert reads == set()
        note_read({"rolloutFlag": PLAN, "rolloutCohort": "control", "rolloutVariant": "off"})
        assert reads == {Read(PLAN, "off", "control")}
    finally:
        close_reads(token)


# -- the property: what is sent is exactly the sum of the requests ------------------------------

_reads = st.sampled_from(
    [
        Read(PLAN, "on", "treatment"),
        Read(PLAN, "off", "control"),
        Read("checkout", "v2", "treatment"),
    ]
)
_requests = st.lists(
    st.tuples(
        st.frozensets(_reads, min_size=1),
        st.booleans(),
        st.floats(0, 20.0),  # seconds: every bucket, the +inf one included
        st.booleans(),  # take after this request
    ),
    max_size=60,
)


@settings(max_examples=40, deadline=None)
@given(_requests)
def test_merged_totals_equal_the_per_request_sums(requests: list[Any]) -> None:
    recorder = OutcomeRecorder()
    aggregate = OutcomeAggregate()
    expected: dict[Read, list[int]] = {}
    now = time.time()

    def take() -> None:
        taken = recorder.take()
        if taken is not None:
            for body in encode_batches(taken):
                assert aggregate.add_batch(_decode_batch.decode(body), now + 1) == []

    for reads, failed, seconds, take_now in requests:
        recorder.add_request(reads, failed, seconds)
        micros = round(seconds * 1_000_000)
        for read in reads:
            sums = expected.setdefault(read, [0, 0, 0] + [0] * BUCKETS)
            sums[0] += 1
            sums[1] += failed
            sums[2] += micros
            sums[3 + bucket_of(micros / 1000)] += 1
        if take_now:
            take()
    take()
    assert recorder.take() is None
    for read, sums in expected.items():
        got = aggregate.read(read.flag, now - 60, now + 1).cohort(Cohort(read.cohort))
        assert [got.requests, got.failures, got.latency_us_sum, *got.latency_buckets] == sums
    assert len(LATENCY_BOUNDS_MS) == BUCKETS


def test_no_count_is_lost_between_threads_and_takes() -> None:
    """Eight threads record while another takes again and again: every request is in
    exactly one take."""
    recorder = OutcomeRecorder()
    per_thread = 3000
    reads = [Read(PLAN, "on", "treatment"), Read(PLAN, "off", "control")]
    done = threading.Event()
    taken: list[Taken] = []

    def taker() -> None:
        while not done.is_set():
            got = recorder.take()
            if got is not None:
                taken.append(got)

    def worker(n: int) -> None:
        for i in range(per_thread):
            recorder.add_request([reads[(n + i) % 2]], i % 7 == 0, 0.001)

    take_thread = threading.Thread(target=taker)
    take_thread.start()
    workers = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    done.set()
    take_thread.join()
    last = recorder.take()
    if last is not None:
        taken.append(last)
    requests = sum(item.requests for got in taken for item in got.items)
    failures = sum(item.failures for got in taken for item in got.items)
    assert requests == 8 * per_thread
    assert failures == 8 * sum(1 for i in range(per_thread) if i % 7 == 0)
    assert all(got.period[0] <= got.period[1] for got in taken)


def test_a_forked_worker_starts_afresh(sink: Sink) -> None:
    """A pre-forking server forks workers from a process that may have reported: in the
    child the thread is started again on the first count, and the parent's counts stay the
    parent's."""
    with httpx.Client(base_url=sink.url) as http:
        reporter = OutcomeReporter(http, interval=3600)
        reporter.record_request([READ], False, 0.01)  # the parent's: its thread runs
        assert reporter._thread is not None
        pid = os.fork()
        if pid == 0:  # the child: report exactly its own request, then leave at once
            code = 1
            try:
                fresh = reporter._thread is None and reporter.recorder.take() is None
                reporter.record_request([READ], True, 0.02)
                started = reporter._thread is not None and reporter._thread.is_alive()
                code = 0 if fresh and started and reporter.flush() == 1 else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert reporter.flush() == 1
        reporter.close()
    child, parent = sink.batches
    assert (child.items[0].failures, parent.items[0].failures) == (1, 0)

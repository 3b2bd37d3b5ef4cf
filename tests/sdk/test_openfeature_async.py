"""FlagportProvider through OpenFeature's async API against a real server: remote evaluations
await an AsyncClient (one per event loop, sharing the sync Client's core) and never block the
event loop; every flag type, error and default agrees with the sync API, in both modes; a
server that is down gives the default with an error code, never an exception."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext as OFContext
from openfeature.exception import ErrorCode as OFErrorCode
from openfeature.flag_evaluation import FlagEvaluationDetails
from openfeature.provider import ProviderStatus

import flagport
from flagport import AsyncClient
from flagport.openfeature import FlagportProvider
from tests.server._fixtures import live_server
from tests.support.server import PORTAL_FLAGS, RunningServer, free_port, running_server

pytestmark = pytest.mark.timeout(120)

T = TypeVar("T")
DOMAIN = "flagport-async-tests"
HALF = "half"
UNITS = [f"user-{n}" for n in range(40)]

server = live_server(
    seed=PORTAL_FLAGS,
    flags={
        HALF: {"enabled": True, "percentage": 50},
        "greeting": {
            "enabled": True,
            "variants": {"formal": "Good day", "casual": "Hi"},
            "on_variant": "formal",
            "off_variant": "casual",
        },
        "max-rows": {"enabled": True, "variants": {"on": 50, "off": 10}},
        "ratio": {"enabled": True, "variants": {"on": 1.0, "off": 0.25}},
        "limits": {"enabled": True, "variants": {"on": {"rows": 50}, "off": {"rows": 10}}},
    },
)


def in_half(unit: str) -> bool:
    return flagport.bucket(HALF, unit) < 50_000


@contextlib.contextmanager
def registered(provider: FlagportProvider) -> Iterator[OpenFeatureClient]:
    """``provider`` set (and initialized) for DOMAIN; shut down afterwards."""
    api.set_provider_and_wait(provider, domain=DOMAIN)
    try:
        yield api.get_client(domain=DOMAIN)
    finally:
        api.clear_providers()


class SlowLink:
    """A TCP proxy in front of a server that holds every chunk of every answer for ``delay``
    seconds: a slow network, in its own threads (a blocked event loop cannot hide it)."""

    def __init__(self, upstream: str, delay: float) -> None:
        self.upstream = httpx.URL(upstream)
        self.delay = delay
        self.connections = 0
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection((self.upstream.host, self.upstream.port or 80))
            self.connections += 1
            self._sockets += [downstream, upstream]
            threading.Thread(
                target=self._pipe, args=(downstream, upstream, 0.0), daemon=True
            ).start()
            threading.Thread(
                target=self._pipe, args=(upstream, downstream, self.delay), daemon=True
            ).start()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket, delay: float) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if delay:
                    time.sleep(delay)
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


@contextlib.contextmanager
def slow_link(server: RunningServer, delay: float) -> Iterator[SlowLink]:
    link = SlowLink(server.url, delay)
    try:
        yield link
    finally:
        link.close()


async def while_ticking(work: Callable[[], Awaitable[T]]) -> tuple[T, float, float]:
    """(result of ``work()``, its duration, the longest the event loop went without running
    another coroutine meanwhile): a ticker asks for the loop every 5 ms. ``work`` is started
    only once the clock runs (``gather`` would start its tasks at the next loop turn)."""
    ticks: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            ticks.append(time.monotonic())
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    start = time.monotonic()
    result = await work()
    end = time.monotonic()
    done.set()
    await task
    during = [start, *(t for t in ticks if start <= t <= end), end]
    return result, end - start, max(b - a for a, b in itertools.pairwise(during))


# -- the event loop keeps running -----------------------------------------------------------


def warm_up(provider: FlagportProvider) -> None:
    """One async evaluation on a throwaway loop: the imports of a process's first async
    request (anyio, httpcore's async side: some 200 ms, once) are not what is measured."""
    asyncio.run(provider.resolve_boolean_details_async(HALF, False, OFContext("warm-up")))


def test_remote_async_resolution_does_not_block_the_event_loop(server: RunningServer) -> None:
    """Ten evaluations over a link that holds each answer 0.5 s: awaited together they take
    about one delay, on ten connections at once, and the loop keeps ticking. (The sync
    Client behind the async methods took ten delays on one connection, the loop frozen.)"""
    delay = 0.5
    units = UNITS[:10]
    with slow_link(server, delay) as link:
        provider = FlagportProvider.remote(link.url, timeout=5.0)
        with registered(provider) as client:
            warm_up(provider)

            async def main() -> tuple[list[FlagEvaluationDetails[bool]], float, float, Any]:
                def work() -> Awaitable[list[FlagEvaluationDetails[bool]]]:
                    return asyncio.gather(
                        *(
                            client.get_boolean_details_async(HALF, False, OFContext(u))
                            for u in units
                        )
                    )

                results, elapsed, gap = await while_ticking(work)
                return results, elapsed, gap, provider._twins[asyncio.get_running_loop()][0]

            results, elapsed, gap, twin = asyncio.run(main())
            assert api.provider_registry.get_provider_status(provider) is ProviderStatus.READY
        assert [(d.value, d.error_code) for d in results] == [(in_half(u), None) for u in units]
        assert [d.reason for d in results] == ["SPLIT"] * len(units)
        # The async path awaited an AsyncClient on the sync Client's core.
        assert isinstance(twin, AsyncClient)
        assert twin._core is provider.client._core  # type: ignore[attr-defined]
        assert gap < delay / 2, gap
        assert elapsed < len(units) * delay / 3, elapsed
        assert link.connections >= len(units) // 2, link.connections


def test_remote_with_its_own_transport_runs_off_the_loop(server: RunningServer) -> None:
    """A Client built with its own (sync) transport has no AsyncClient twin: its evaluations
    run in worker threads, so the loop is not blocked either."""
    delay = 0.5
    units = UNITS[:6]
    with slow_link(server, delay) as link:
        provider = FlagportProvider.remote(link.url, timeout=5.0, transport=httpx.HTTPTransport())
        with registered(provider) as client:
            warm_up(provider)

            async def main() -> tuple[list[bool], float, float]:
                def work() -> Awaitable[list[bool]]:
                    return asyncio.gather(
                        *(client.get_boolean_value_async(HALF, False, OFContext(u)) for u in units)
                    )

                return await while_ticking(work)

            values, elapsed, gap = asyncio.run(main())
    assert values == [in_half(u) for u in units]
    assert gap < delay / 2, gap
    assert elapsed < len(units) * delay / 2, elapsed
    assert not provider._twins


# -- same answers as the sync API, every type, both modes -----------------------------------


@pytest.fixture(params=["remote", "local"])
def provider(request: pytest.FixtureRequest, server: RunningServer) -> FlagportProvider:
    if request.param == "remote":
        return FlagportProvider.remote(server.url, timeout=5.0)
    return FlagportProvider.local(server.url)


def _seen(details: FlagEvaluationDetails[Any]) -> tuple[Any, ...]:
    return (details.value, details.variant, details.reason, details.error_code)


def test_async_api_agrees_with_the_sync_api(provider: FlagportProvider) -> None:
    with registered(provider) as client:
        calls: list[tuple[Callable[..., Any], Callable[..., Awaitable[Any]], str, Any, Any]] = [
            (client.get_boolean_details, client.get_boolean_details_async, HALF, False, None),
            (client.get_string_details, client.get_string_details_async, "greeting", "d", None),
            (client.get_integer_details, client.get_integer_details_async, "max-rows", 0, None),
            (client.get_float_details, client.get_float_details_async, "ratio", 0.0, None),
            (client.get_object_details, client.get_object_details_async, "limits", {}, None),
            # Errors: the default, with OpenFeature's error code.
            (client.get_boolean_details, client.get_boolean_details_async, "nope", True, "F"),
            (client.get_string_details, client.get_string_details_async, HALF, "d", "T"),
            (client.get_boolean_details, client.get_boolean_details_async, HALF, True, "K"),
        ]
        want_codes = {
            None: None,
            "F": OFErrorCode.FLAG_NOT_FOUND,
            "T": OFErrorCode.TYPE_MISMATCH,
            "K": OFErrorCode.TARGETING_KEY_MISSING,
        }

        def context(code: str | None, unit: str) -> OFContext:
            return OFContext(attributes={"plan": "pro"}) if code == "K" else OFContext(unit)

        sync = [
            [_seen(get(key, default, context(code, unit))) for unit in UNITS[:5]]
            for get, _, key, default, code in calls
        ]

        async def main() -> list[list[tuple[Any, ...]]]:
            return [
                [_seen(await get(key, default, context(code, unit))) for unit in UNITS[:5]]
                for _, get, key, default, code in calls
            ]

        assert asyncio.run(main()) == sync
        assert api.provider_registry.get_provider_status(provider) is ProviderStatus.READY
    for seen, (_, _, key, default, code) in zip(sync, calls, strict=True):
        for value, _, reason, error_code in seen:
            assert error_code == want_codes[code], (key, code)
            if code is not None:
                assert (value, reason) == (default, "ERROR")
    assert [v for v, *_ in sync[0]] == [in_half(u) for u in UNITS[:5]]
    assert sync[1][0][0] == "Good day"
    assert sync[2][0][0] == 50
    assert sync[3][0][0] == 1.0
    assert sync[4][0][0] == {"rows": 50}


# -- one AsyncClient per event loop, closed with it ------------------------------------------


def test_each_event_loop_gets_its_own_async_client(server: RunningServer) -> None:
    """An httpx async pool is bound to its loop: a second ``asyncio.run`` must not reuse the
    first one's (that fails with 'Event loop is closed', counted against the breaker)."""
    provider = FlagportProvider.remote(server.url, timeout=5.0)
    twins: list[AsyncClient] = []
    with registered(provider) as client:

        async def main() -> list[bool]:
            values = [
                await client.get_boolean_value_async(HALF, False, OFContext(u)) for u in UNITS
            ]
            twins.append(provider._twins[asyncio.get_running_loop()][0])
            return values

        for _ in range(3):
            assert asyncio.run(main()) == [in_half(u) for u in UNITS]
            # asyncio.run's shutdown_asyncgens closed that loop's AsyncClient.
            assert not provider._twins
            assert twins[-1]._closed
            assert twins[-1]._http.is_closed
        assert len({id(twin) for twin in twins}) == 3
        assert api.provider_registry.get_provider_status(provider) is ProviderStatus.READY
        # The sync methods use the sync Client: no AsyncClient.
        assert client.get_boolean_value(HALF, False, OFContext(UNITS[0])) is in_half(UNITS[0])
        assert not provider._twins


def test_shutdown_closes_the_async_client_on_its_running_loop(server: RunningServer) -> None:
    provider = FlagportProvider.remote(server.url, timeout=5.0)
    api.set_provider_and_wait(provider, domain=DOMAIN)
    client = api.get_client(domain=DOMAIN)

    async def main() -> None:
        assert await client.get_boolean_value_async(HALF, False, OFContext("u")) is in_half("u")
        twin = provider._twins[asyncio.get_running_loop()][0]
        api.clear_providers()  # shutdown, synchronously, from the loop's own thread
        assert twin._closed  # at once: no more I/O
        for _ in range(100):
            if twin._http.is_closed:
                break
            await asyncio.sleep(0.01)
        assert twin._http.is_closed  # then the pool, on its loop
        assert not provider._twins
        # The provider owned its client, now closed: no I/O, no new AsyncClient; the last
        # known value (stale), else the default with an error code.
        known = await provider.resolve_boolean_details_async(HALF, True, OFContext("u"))
        assert (known.value, known.reason, known.error_code) == (in_half("u"), "STALE", None)
        unknown = await provider.resolve_boolean_details_async(HALF, True, OFContext("v"))
        assert (unknown.value, unknown.error_code) == (True, OFErrorCode.GENERAL)
        assert "closed" in (unknown.error_message or "")
        assert not provider._twins

    asyncio.run(main())


def test_shutdown_from_another_thread_closes_on_the_loop(server: RunningServer) -> None:
    provider = FlagportProvider.remote(server.url, timeout=5.0)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        resolve = provider.resolve_boolean_details_async(HALF, False, OFContext("u"))
        details = asyncio.run_coroutine_threadsafe(resolve, loop).result(10)
        assert details.value is in_half("u")
        twin = provider._twins[loop][0]
        provider.shutdown()
        assert twin._closed
        deadline = time.monotonic() + 5
        while not twin._http.is_closed and time.monotonic() < deadline:
            time.sleep(0.01)
        assert twin._http.is_closed
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


# -- server down: defaults with an error code, stale values, events ------------------------


def test_server_down_async_gives_the_default_with_an_error_code() -> None:
    provider = FlagportProvider.remote(
        f"http://127.0.0.1:{free_port()}", failure_threshold=1, cooldown=60
    )
    with registered(provider) as client:

        async def main() -> list[FlagEvaluationDetails[Any]]:
            return [
                await client.get_boolean_details_async(HALF, True, OFContext("1")),
                await client.get_string_details_async("greeting", "d", OFContext("1")),
                await client.get_integer_details_async("max-rows", 7, OFContext("1")),
                await client.get_float_details_async("ratio", 0.5, OFContext("1")),
                await client.get_object_details_async("limits", {"rows": 1}, OFContext("1")),
            ]

        results = asyncio.run(main())
        # The first failure opened the (shared) circuit: the provider is in ERROR.
        assert api.provider_registry.get_provider_status(provider) is ProviderStatus.ERROR
    assert [d.value for d in results] == [True, "d", 7, 0.5, {"rows": 1}]
    for details in results:
        assert details.error_code == OFErrorCode.GENERAL
        assert details.reason == "ERROR"
        assert details.error_message
    assert "cannot reach" in (results[0].error_message or "")
    assert "circuit open" in (results[1].error_message or "")


def test_last_known_values_are_shared_between_sync_and_async(tmp_path: Path) -> None:
    """Learned through either API, served stale through the other once the server is gone."""
    with running_server(tmp_path, seed=PORTAL_FLAGS) as live:
        with live.admin() as admin:
            made = admin.post(
                "/admin/v1/flags", json={"key": HALF, "enabled": True, "percentage": 50}
            )
            assert made.status_code == 201, made.text
        provider = FlagportProvider.remote(live.url, failure_threshold=1, cooldown=60)
        with registered(provider) as client:
            assert client.get_boolean_value(HALF, False, OFContext("a")) is in_half("a")

            async def learn() -> bool:
                return await client.get_boolean_value_async(HALF, False, OFContext("b"))

            assert asyncio.run(learn()) is in_half("b")
            live.kill()

            async def stale() -> FlagEvaluationDetails[bool]:
                return await client.get_boolean_details_async(
                    HALF, not in_half("a"), OFContext("a")
                )

            from_async = asyncio.run(stale())
            from_sync = client.get_boolean_details(HALF, not in_half("b"), OFContext("b"))
            assert api.provider_registry.get_provider_status(provider) is ProviderStatus.ERROR
    assert (from_async.value, from_async.reason) == (in_half("a"), "STALE")
    assert (from_sync.value, from_sync.reason) == (in_half("b"), "STALE")

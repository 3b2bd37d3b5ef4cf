"""Rate limits on the evaluation surface (docs/spec.md section 12): the buckets, who a client
is, the bound on memory, and a real server answering 429 with integer Retry-After."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flagport_server.rate_limit import ClientBuckets, TrustedProxies, parse_network
from tests.cli.conftest import run_flags
from tests.support.server import PORTAL_FLAGS, free_port, running_server


def test_a_client_gets_its_burst_then_its_rate() -> None:
    buckets = ClientBuckets(rate=2.0, burst=4)
    assert [buckets.take("a", 100.0) for _ in range(4)] == [None] * 4
    assert buckets.take("a", 100.0) == 1  # empty: one token back in 0.5 s, said as 1 s
    assert buckets.take("b", 100.0) is None  # another client has its own bucket
    assert buckets.take("a", 100.5) is None
    assert buckets.take("a", 100.5) == 1
    assert buckets.take("a", 110.0) is None  # refilled, never above the burst
    assert [buckets.take("a", 110.0) for _ in range(4)] == [None, None, None, 1]


def test_retry_after_is_whole_seconds_at_slow_rates() -> None:
    buckets = ClientBuckets(rate=0.1, burst=1)
    assert buckets.take("a", 0.0) is None
    assert buckets.take("a", 0.0) == 10
    assert buckets.take("a", 7.5) == 3


@given(st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 0.5)), max_size=200))
def test_never_more_than_burst_plus_rate_times_time(steps: list[tuple[str, float]]) -> None:
    rate, burst = 5.0, 3
    buckets = ClientBuckets(rate, burst)
    now = 0.0
    allowed: dict[str, int] = {}
    for client, pause in steps:
        now += pause
        if buckets.take(client, now) is None:
            allowed[client] = allowed.get(client, 0) + 1
    for count in allowed.values():
        assert count <= burst + rate * now + 1e-9


def test_a_flood_of_clients_costs_bounded_memory() -> None:
    buckets = ClientBuckets(rate=1.0, burst=2, max_clients=1_000)
    for n in range(50_000):
        buckets.take(f"10.0.{n // 256}.{n % 256}", 1.0)
        assert len(buckets) <= 1_000
    # The flood did not reset a client that is still within its window at the end.
    buckets.take("client", 1.0)
    buckets.take("client", 1.0)
    assert buckets.take("client", 1.0) == 1


def test_forwarded_for_is_read_only_from_a_trusted_proxy() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    # Not a proxy: the header is the client's own words.
    assert proxies.client_address("203.0.113.9", b"1.2.3.4") == "203.0.113.9"
    # The proxy: the right-most address it did not add itself.
    assert proxies.client_address("10.0.0.2", b"1.2.3.4, 203.0.113.9") == "203.0.113.9"
    assert proxies.client_address("10.0.0.2", b"198.51.100.7, 10.0.0.5") == "198.51.100.7"
    # Garbled, or only proxies: the peer.
    assert proxies.client_address("10.0.0.2", b"not-an-address") == "10.0.0.2"
    assert proxies.client_address("10.0.0.2", b"10.0.0.3") == "10.0.0.2"
    assert proxies.client_address("10.0.0.2", None) == "10.0.0.2"
    assert TrustedProxies([]).client_address("10.0.0.2", b"1.2.3.4") == "10.0.0.2"


@pytest.mark.parametrize("bad", ["10.0.0.300", "proxy.example", "10.0.0.0/33", ""])
def test_a_bad_trusted_proxy_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="is not an IP address or network"):
        parse_network(bad)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--rate-limit", "0"], "--rate-limit"),
        (["--rate-limit", "5", "--rate-burst", "0"], "--rate-burst"),
        (["--rate-burst", "5"], "--rate-burst needs --rate-limit"),
        (["--no-ui", "--trusted-proxy", "10.0.0.1"], "--trusted-proxy is read by --rate-limit"),
        (["--rate-limit", "5", "--trusted-proxy", "proxy.example"], "is not an IP address"),
    ],
)
def test_serve_refuses_bad_rate_limit_options(args: list[str], named: str, tmp_path: Path) -> None:
    result = run_flags(
        "serve", "--port", str(free_port()), *args, url=None, token=None, cwd=tmp_path, timeout=20
    )
    assert result.code == 2, str(result)
    assert named in result.err


def test_a_server_answers_429_past_the_rate_and_only_on_the_evaluation_surface(
    tmp_path: Path,
) -> None:
    extra = ["--rate-limit", "1", "--rate-burst", "3", "--cors-origin", "*"]
    with running_server(tmp_path, seed=PORTAL_FLAGS, extra=extra) as server:
        body = b'{"context":{"targetingKey":"user-1"}}'
        headers = {"Content-Type": "application/json", "Origin": "http://page.test"}
        with httpx.Client(base_url=server.url, timeout=5) as client:
            answers = [
                client.post("/ofrep/v1/evaluate/flags", content=body, headers=headers)
                for _ in range(5)
            ]
            assert [a.status_code for a in answers[:3]] == [200, 200, 200]
            refused = answers[3]
            assert refused.status_code == 429
            assert refused.headers["retry-after"] == "1"  # integer seconds
            assert refused.json()["errorDetails"].startswith("too many requests")
            # A page can read why: the 429 carries the CORS headers.
            assert refused.headers["access-control-allow-origin"] == "*"
            assert "Retry-After" in refused.headers["access-control-expose-headers"]
            # The GET form shares the client's bucket; other routes are not limited.
            assert client.get("/v1/evaluate/ui-improvements").status_code == 429
            for _ in range(5):
                assert client.get("/healthz").status_code == 200
            # Another client (a token of its own) has its own bucket.
            with server.admin(timeout=5) as admin:
                assert (
                    admin.post(
                        "/ofrep/v1/evaluate/flags", content=body, headers=headers
                    ).status_code
                    == 200
                )
            # A made-up token names nobody: the request counts against its address, which
            # is out of requests (a fresh token per request was a fresh bucket each time).
            for n in range(5):
                junk = {**headers, "X-API-Key": f"fpe_made-up-{n}"}
                answer = client.post("/ofrep/v1/evaluate/flags", content=body, headers=junk)
                assert answer.status_code == 429, answer.text

"""A steady OFREP evaluation load that times every request, for
``benchmarks/test_change_propagation.py``.

    python -m benchmarks.evaluation_load --port 8787 --flags a,b,c --connections 8 \\
        --out /tmp/latencies.json

Each of ``--connections`` keep-alive connections sends one OFREP single-flag evaluation at a
time (a closed loop), for a flag drawn from ``--flags`` and a ``targetingKey`` drawn from a
million users, so no two requests in a row look alike. Every answer is timed from the write
of the request to the last byte of the response. It prints ``loading`` once every connection
has answered once, and on SIGTERM (or after ``--seconds``) writes ``--out``: one
``[sent_at, latency_ms, status, flag, variant]`` per request (``sent_at`` from ``time.time()``, so
the caller can pick the requests of a window by its own clock).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import random
import signal
import time

__all__ = ["main"]

_HEAD = (
    "POST /ofrep/v1/evaluate/flags/{flag} HTTP/1.1\r\nHost: localhost\r\n"
    "Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
)


async def _connection(
    port: int,
    flags: list[str],
    records: list[tuple[float, float, int, str, str | None]],
    stop: asyncio.Event,
    ready: asyncio.Event,
    answered: list[int],
    total: int,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    first = True
    chooser = random.Random()
    while not stop.is_set():
        flag = chooser.choice(flags)
        body = json.dumps({"context": {"targetingKey": f"user-{chooser.randrange(1_000_000)}"}})
        request = _HEAD.format(flag=flag, length=len(body)) + body
        sent_at = time.time()
        started = time.perf_counter()
        writer.write(request.encode())
        status_line = await reader.readline()
        length = 0
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        payload = await reader.readexactly(length)
        latency_ms = (time.perf_counter() - started) * 1000
        status = int(status_line.split()[1])
        variant = json.loads(payload).get("variant") if status == 200 else None
        records.append((sent_at, latency_ms, status, flag, variant))
        if first:
            first = False
            answered[0] += 1
            if answered[0] == total:
                ready.set()
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


async def _run(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    ready = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    records: list[tuple[float, float, int, str, str | None]] = []
    flags = args.flags.split(",")
    answered = [0]
    tasks = [
        asyncio.create_task(
            _connection(args.port, flags, records, stop, ready, answered, args.connections)
        )
        for _ in range(args.connections)
    ]
    await ready.wait()
    print("loading", flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), args.seconds)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    with open(args.out, "w") as out:
        json.dump(records, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--flags", required=True, help="comma-separated flag keys")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    # The records hold no cycles, and a full collection over hundreds of thousands of them
    # would pause this client for tens of milliseconds: time the client would charge to the
    # server's answers.
    gc.disable()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is installed with the server
        asyncio.run(_run(args))
    else:
        uvloop.run(_run(args))


if __name__ == "__main__":
    main()

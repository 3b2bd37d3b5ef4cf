"""A flood of hostile connections against a Flagport server, for
``benchmarks/test_connection_soak.py``.

    python -m benchmarks.connection_flood --port 8787 --idle 3000 --slow 1500 --streams 1500 \\
        --seconds 30

Runs in its own process, which raises its own open-file limit (thousands of sockets). For
``--seconds`` it holds: ``--idle`` sockets that never send a byte; ``--slow`` evaluation
requests whose body trickles in one byte a second and never completes; ``--streams`` change
streams. Whatever the server closes is opened again at once, as an attacker would; a refused
stream is retried after ``--stream-retry`` seconds (the server's ``Retry-After``), as an SDK
would. It prints ``flooding`` once every
connection is open, then one JSON report line when it ends. Only loopback addresses are
used: the hostile sockets come from 127.0.0.2-5 so that the churn of thousands of
connections never runs out of source ports.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import resource
import time
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["main"]

_SOURCES = [f"127.0.0.{n}" for n in range(2, 6)]
_SLOW_HEAD = (
    "POST /ofrep/v1/evaluate/flags/{flag} HTTP/1.1\r\nHost: localhost\r\n"
    "Content-Type: application/json\r\nContent-Length: 4096\r\n\r\n"
)
_STREAM_HEAD = "GET /v1/stream HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n"


@dataclass
class Tally:
    opened: int = 0
    closed_by_server: int = 0
    answers: Counter[int] = field(default_factory=Counter)
    open_now: int = 0
    connect_errors: Counter[str] = field(default_factory=Counter)

    def report(self) -> dict[str, object]:
        return {
            "opened": self.opened,
            "closed_by_server": self.closed_by_server,
            "answers": {str(k): v for k, v in sorted(self.answers.items())},
            "open_at_end": self.open_now,
            "connect_errors": dict(self.connect_errors),
        }


class Flood:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.deadline = 0.0
        self.tallies = {"idle": Tally(), "slow": Tally(), "streams": Tally()}
        self.ramped = 0
        self.all_open = asyncio.Event()
        self.total = args.idle + args.slow + args.streams
        self.connecting = asyncio.Semaphore(256)  # the kernel's accept queue stays short

    def _remaining(self) -> float:
        return self.deadline - time.monotonic()

    def _ramp_done(self, first: bool) -> bool:
        if first:
            self.ramped += 1
            if self.ramped == self.total:
                self.all_open.set()
        return False

    async def _connect(
        self, tally: Tally, index: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        async with self.connecting:
            try:
                connection = await asyncio.wait_for(
                    asyncio.open_connection(
                        "127.0.0.1",
                        self.args.port,
                        local_addr=(_SOURCES[index % len(_SOURCES)], 0),
                    ),
                    max(0.1, min(5.0, self._remaining())),
                )
            except (OSError, TimeoutError) as error:
                tally.connect_errors[type(error).__name__] += 1
                await asyncio.sleep(0.1)
                return None
        tally.opened += 1
        return connection

    async def idle(self, index: int) -> None:
        tally = self.tallies["idle"]
        first = True
        while self._remaining() > 0:
            connection = await self._connect(tally, index)
            if connection is None:
                continue
            reader, writer = connection
            tally.open_now += 1
            first = self._ramp_done(first)
            try:
                if await asyncio.wait_for(reader.read(1), self._remaining()) == b"":
                    tally.closed_by_server += 1
            except (TimeoutError, OSError):
                pass
            finally:
                tally.open_now -= 1
                writer.close()

    async def slow(self, index: int) -> None:
        tally = self.tallies["slow"]
        first = True
        head = _SLOW_HEAD.format(flag=self.args.flag).encode()
        while self._remaining() > 0:
            connection = await self._connect(tally, index)
            if connection is None:
                continue
            reader, writer = connection
            tally.open_now += 1
            trickle = asyncio.create_task(self._trickle(writer, head))
            first = self._ramp_done(first)
            try:
                status = await asyncio.wait_for(reader.readline(), self._remaining())
                if status:
                    tally.answers[int(status.split()[1])] += 1
                else:
                    tally.closed_by_server += 1
            except (TimeoutError, OSError, IndexError, ValueError):
                pass
            finally:
                tally.open_now -= 1
                trickle.cancel()
                writer.close()

    @staticmethod
    async def _trickle(writer: asyncio.StreamWriter, head: bytes) -> None:
        with contextlib.suppress(OSError):
            writer.write(head + b'{"context": {')
            while True:
                await asyncio.sleep(1.0)
                writer.write(b" ")
                await writer.drain()

    async def stream(self, index: int) -> None:
        tally = self.tallies["streams"]
        first = True
        while self._remaining() > 0:
            connection = await self._connect(tally, index)
            if connection is None:
                continue
            reader, writer = connection
            try:
                status = await self._follow_stream(tally, reader, writer, first)
            except (TimeoutError, OSError, IndexError, ValueError):
                status = None
            finally:
                writer.close()
            first = first and status is None
            if status is not None and status != 200:
                # Refused: back off like an SDK (a busy server's ``Retry-After``, jittered).
                pause = self.args.stream_retry * random.uniform(0.8, 1.2)
                await asyncio.sleep(min(pause, max(0.0, self._remaining())))

    async def _follow_stream(
        self, tally: Tally, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, first: bool
    ) -> int | None:
        """The stream's status; for a 200, once the stream ended."""
        writer.write(_STREAM_HEAD.encode())
        status_line = await asyncio.wait_for(reader.readline(), self._remaining())
        if not status_line:
            tally.closed_by_server += 1
            return None
        status = int(status_line.split()[1])
        tally.answers[status] += 1
        self._ramp_done(first)
        if status == 200:
            tally.open_now += 1
            try:
                while await asyncio.wait_for(reader.read(65536), self._remaining()):
                    pass
                tally.closed_by_server += 1
            finally:
                tally.open_now -= 1
        return status

    async def run(self) -> dict[str, object]:
        self.deadline = time.monotonic() + self.args.seconds
        tasks = [asyncio.create_task(self.idle(i)) for i in range(self.args.idle)]
        tasks += [asyncio.create_task(self.slow(i)) for i in range(self.args.slow)]
        tasks += [asyncio.create_task(self.stream(i)) for i in range(self.args.streams)]
        ramp_started = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_open.wait(), self._remaining())
        ramp_seconds = time.monotonic() - ramp_started
        print("flooding", flush=True)
        at_peak = {name: tally.open_now for name, tally in self.tallies.items()}
        await asyncio.gather(*tasks)
        return {
            "ramp_seconds": round(ramp_seconds, 2),
            "open_after_ramp": at_peak,
            **{name: tally.report() for name, tally in self.tallies.items()},
        }


def _raise_open_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(f"the flood needs {needed} open files; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--idle", type=int, default=3000)
    parser.add_argument("--slow", type=int, default=1500)
    parser.add_argument("--streams", type=int, default=1500)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--stream-retry", type=float, default=5.0)
    parser.add_argument("--flag", default="ui-improvements")
    args = parser.parse_args()
    _raise_open_file_limit(args.idle + args.slow + args.streams + 256)
    report = asyncio.run(Flood(args).run())
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()

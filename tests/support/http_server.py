"""A test's own small HTTP server (a stand-in receiver, a health URL, a relay in front of
the real server): a handler class served on a loopback port from a thread of its own."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["serving"]


@contextlib.contextmanager
def serving(
    handler: type[BaseHTTPRequestHandler],
    *,
    server_class: type[ThreadingHTTPServer] = ThreadingHTTPServer,
    port: int = 0,
) -> Iterator[str]:
    """``handler`` on 127.0.0.1 (``port``, or a free one) while the block runs; yields its
    base URL. Request threads are daemons: a handler still busy at the end (a client that
    hung up on a slow answer) never holds the test."""
    server = server_class(("127.0.0.1", port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)

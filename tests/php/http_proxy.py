"""A tiny HTTP -> FastCGI gateway (what nginx does in production) for browser tests and
benchmarks: every GET becomes a FastCGI request to one PHP script in a PHP-FPM pool.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

from tests.php.fcgi import FastCGIClient
from tests.support.http_server import serving

__all__ = ["fastcgi_gateway"]


@contextlib.contextmanager
def fastcgi_gateway(fpm_socket: str, script: str, params: dict[str, str]) -> Iterator[str]:
    """Serve ``script`` over HTTP on a free loopback port; yields the base URL."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            extra = {**params}
            for name, value in self.headers.items():
                extra["HTTP_" + name.upper().replace("-", "_")] = value
            with FastCGIClient(fpm_socket) as fpm:
                answer = fpm.request("GET", script, query, params=extra, uri=url.path)
            self.send_response(answer.status)
            for name, value in answer.raw_headers:
                if name.lower() not in ("status", "content-length", "connection"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with serving(Handler) as url:
        yield url

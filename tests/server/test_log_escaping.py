"""Log forging (issue 13, item 5): every record of the server goes through one formatter that
escapes CR, LF, control characters and terminal escapes in the message and its arguments, so
an untrusted string (a request path with ``%0a``, a token name, a flag key) can never write a
line of its own. The live-server half is in ``test_auth_hardening.py`` (a failed login's
path and address in the real server log)."""

from __future__ import annotations

import io
import logging
import logging.config
import sys

import pytest

from flagport_server.logs import EscapingFormatter, escape, logging_config

FORGED = "/admin/v1/flags\r\n2026-01-01 00:00:00,000 WARNING flagport.server: forged\x1b[2J\x9b1m"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("a\nb\rc\td", "a\\nb\\rc\\td"),
        ("\x00\x1b[31m\x7f\x85\x9b", "\\x00\\x1b[31m\\x7f\\x85\\x9b"),
        ("x\u2028y\u2029z\u202ew\u2066", "x\\u2028y\\u2029z\\u202ew\\u2066"),
        ("café ü 日本 👍 a\\nb", "café ü 日本 👍 a\\nb"),  # printable text stays as it is
    ],
)
def test_escape(text: str, shown: str) -> None:
    assert escape(text) == shown


def _record(message: str, *args: object, exc_info: object = None) -> logging.LogRecord:
    return logging.LogRecord(
        "flagport.server",
        logging.WARNING,
        __file__,
        1,
        message,
        args,
        exc_info,  # type: ignore[arg-type]
    )


def test_formatter_escapes_message_arguments_and_tracebacks() -> None:
    formatter = EscapingFormatter("%(levelname)s %(name)s: %(message)s")
    line = formatter.format(_record("auth failed on GET %s from %s", FORGED, "10.0.0.1\n"))
    assert "\n" not in line
    assert "\r" not in line
    assert "\x1b" not in line
    assert "\x9b" not in line
    assert line.startswith("WARNING flagport.server: auth failed on GET /admin/v1/flags\\r\\n")
    assert line.endswith("\\x1b[2J\\x9b1m from 10.0.0.1\\n")

    try:
        raise ValueError("bad\n2026-01-01 00:00:00,000 INFO flagport.server: forged")
    except ValueError:
        record = _record("unexpected error on %s", FORGED, exc_info=sys.exc_info())
        with_traceback = formatter.format(record)
    first, *rest = with_traceback.split("\n")
    assert first.startswith("WARNING flagport.server: unexpected error on /admin")
    # Only the record's own first line starts at column 0; the traceback is indented.
    assert rest
    assert all(line.startswith("    ") for line in rest), rest
    assert "    ValueError: bad" in rest


def test_logging_config_installs_the_formatter_for_flagport_and_granian() -> None:
    config = logging_config("info")
    for name in ("flagport", "granian", "access"):
        assert config["formatters"][name]["()"] == "flagport_server.logs.EscapingFormatter"
    assert config["root"]["handlers"] == ["flagport"]
    assert {"_granian", "granian.access"} <= set(config["loggers"])
    # Applied as Granian applies it in each worker, a record through any of them is escaped.
    stream = io.StringIO()
    for handler in config["handlers"].values():
        handler["stream"] = stream
    saved = logging.root.handlers[:], logging.root.level
    try:
        logging.config.dictConfig(config)
        logging.getLogger("flagport.server").warning("path %s", FORGED)
        logging.getLogger("granian.access").info("%(path)s", {"path": FORGED})
    finally:
        logging.root.handlers[:], _ = saved
        logging.root.setLevel(saved[1])
        for name in ("_granian", "granian.access"):
            logging.getLogger(name).handlers.clear()
            logging.getLogger(name).propagate = True
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert all("forged" in line and "\\r\\n" in line for line in lines), lines

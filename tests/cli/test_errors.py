"""Exit codes 1-5 and bad input, against a live server: nothing invalid reaches the store."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest

from tests.cli.conftest import Flags, run_flags
from tests.support.documents import alias_bomb
from tests.support.http_server import serving
from tests.support.server import ADMIN_TOKEN, RunningServer, free_port


def snapshot_version(flags: Flags) -> int:
    return int(json.loads(flags.ok("list", "--json").out)["snapshot_version"])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("101", "between 0 and 100"),
        ("-5", "between 0 and 100"),
        ("abc", "must be a number"),
        ("12.3456", "more than 3 decimals"),
        ("nan", "between 0 and 100"),
        ("", "must be a number"),
    ],
)
def test_bad_percentage_exits_2_before_any_request(flags: Flags, value: str, message: str) -> None:
    before = snapshot_version(flags)
    result = run_flags("enable", "ui-improvements", "--percentage", value, url="http://127.0.0.1:1")
    assert result.code == 2, str(result)
    assert message in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert flags("create", "x-pct", "--percentage", value).code == 2
    assert snapshot_version(flags) == before


@pytest.mark.parametrize("value", ["0", "100", "12.345", "33.3%", "0.001"])
def test_good_percentages(flags: Flags, value: str) -> None:
    result = flags.ok("enable", "enhanced-mobile-nav", "--percentage", value, "--json")
    assert json.loads(result.out)["flag"]["percentage"] == float(value.rstrip("%"))


@pytest.mark.parametrize(
    "args",
    [
        ("enable", "Bad_Key"),
        ("disable", "ui-improvements", "-nope"),
        ("show", "a..b"),
        ("create", "x" * 201),
        ("explain", "UPPER", "--user", "1"),
        ("delete", ".lead", "--yes"),
        ("target", "sp ace", "--on", "1"),
        ("audit", "bad!key"),
        ("audit", "--since", "yesterday"),
        ("audit", "--since", "1x"),
        ("explain", "ui-improvements", "--attr", "novalue"),
        ("disable",),
        ("disable", "a", "--tag", "ui"),
        ("target", "ui-improvements"),
        ("enable", "ui-improvements", "--timeout", "-1"),
        ("token", "create", "ci", "--scope", "root"),
        ("token", "create", "ci"),  # the scope is never assumed
        ("frobnicate",),
    ],
)
def test_usage_errors_exit_2_without_contacting_the_server(args: tuple[str, ...]) -> None:
    result = run_flags(*args, url="http://127.0.0.1:1")  # nothing listens there
    assert result.code == 2, str(result)
    assert "cannot reach" not in result.err


def test_token_create_without_a_scope_names_the_scopes() -> None:
    result = run_flags("token", "create", "ci", url="http://127.0.0.1:1")
    assert result.code == 2, str(result)
    assert "token create needs --scope" in result.err
    for scope in ("evaluate (browser-safe", "sdk (server SDKs", "viewer (admin reads", "admin"):
        assert scope in result.err, result.err


NOT_SINCE = "--since must be a duration such as 1h, 24h or 7d, or an ISO-8601 date-time"
ABSURD_SINCE = [
    ("99999999999d", "duration '99999999999d' is too long: at most 36500d"),
    ("9" * 400 + "h", "is too long: at most 36500d"),
    ("1e309h", NOT_SINCE + "; got '1e309h'"),
    ("-1h", NOT_SINCE + "; got '-1h'"),
    ("", NOT_SINCE + "; got ''"),
    ("0001-01-01T00:00:00+01:00", "--since '0001-01-01T00:00:00+01:00' is out of range"),
]


@pytest.mark.parametrize("command", [("audit",), ("stats", "ui-improvements")])
def test_absurd_since_exits_2_before_any_request(command: tuple[str, ...]) -> None:
    for value, message in ABSURD_SINCE:
        result = run_flags(*command, "--since", value, url="http://127.0.0.1:1")
        assert result.code == 2, str(result)
        assert len(result.err.strip().splitlines()) == 1, str(result)
        assert message in result.err, str(result)


def test_refused_by_the_server_exits_1(flags: Flags) -> None:
    for args in (
        ("show", "no-such-flag"),
        ("enable", "no-such-flag"),
        ("disable", "no-such-flag"),
        ("explain", "no-such-flag", "--user", "1"),
        ("disable", "--tag", "no-such-tag"),
        ("create", "ui-improvements"),
        ("delete", "ui-improvements", "--yes"),
        ("token", "revoke", "no-such-token"),
    ):
        result = flags(*args)
        assert result.code == 1, (args, str(result))
        assert len(result.err.strip().splitlines()) == 1, result.err
    assert "not found" in flags("enable", "no-such-flag").err
    assert "already exists" in flags("create", "ui-improvements").err


def test_not_authorized_exits_4(flags: Flags, server: RunningServer, tmp_path: Path) -> None:
    wrong = flags("list", token="fpa_wrong")
    assert wrong.code == 4
    assert "not authorized (401)" in wrong.err
    missing = flags("disable", "ui-improvements", token=None, cwd=tmp_path)
    assert missing.code == 4
    assert "no admin token" in missing.err
    secret = flags.ok("token", "create", "reader", "--scope", "evaluate").out.strip()
    forbidden = flags("list", token=secret)
    assert forbidden.code == 4
    assert "403" in forbidden.err


def test_token_lookup_order(flags: Flags, tmp_path: Path) -> None:
    (tmp_path / ".flagport").mkdir()
    (tmp_path / ".flagport" / "admin-token").write_text(ADMIN_TOKEN + "\n")
    assert flags("list", token=None, cwd=tmp_path).code == 0  # the file
    env = {"FLAGPORT_ADMIN_TOKEN": "fpa_wrong"}
    assert flags("list", token=None, cwd=tmp_path, env=env).code == 4  # env beats the file
    env = {"FLAGPORT_ADMIN_TOKEN": ADMIN_TOKEN}
    assert flags("list", token="fpa_wrong", cwd=tmp_path, env=env).code == 4  # FLAGPORT_TOKEN
    assert flags("list", token=None, cwd=tmp_path, env=env).code == 0
    assert flags("--token", ADMIN_TOKEN, "list", token="fpa_wrong").code == 0  # --token first


def test_server_down_exits_3_naming_the_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (("list",), ("disable", "ui-improvements"), ("status",)):
        result = run_flags(*args, url=url)
        assert result.code == 3, str(result)
        assert url in result.err
    socket_url = f"unix://{tmp_path}/missing.sock"
    result = run_flags("list", url=socket_url)
    assert result.code == 3
    assert socket_url in result.err


def test_malformed_import_exits_2_naming_line_and_field(flags: Flags, tmp_path: Path) -> None:
    before = flags.ok("export").out
    version = snapshot_version(flags)
    bad_field = tmp_path / "bad-field.yaml"
    bad_field.write_text(
        "bucketing: 1\nflags:\n  ui-improvements:\n    enabled: true\n    percentage: lots\n"
    )
    result = flags("import", str(bad_field))
    assert result.code == 2, str(result)
    assert "line 5" in result.err
    assert '$.flags["ui-improvements"].percentage' in result.err
    bad_syntax = tmp_path / "bad-syntax.yaml"
    bad_syntax.write_text("flags:\n  a:\n    enabled: true\n   percentage: [1\n")
    result = flags("import", str(bad_syntax))
    assert result.code == 2
    assert "line 4" in result.err
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"flags": {"a": {"enabled": tru}}}')
    result = flags("diff", str(bad_json))
    assert result.code == 2
    assert "line 1" in result.err
    assert flags("import", str(tmp_path / "absent.yaml")).code == 2
    assert flags.ok("export").out == before
    assert snapshot_version(flags) == version


#: The address space a ``flags`` process may use in the alias bomb tests: the bomb expanded
#: would need gigabytes.
_BOUNDED = 512 * 1024 * 1024
_NO_ALIASES = "invalid YAML at line 8, column 13: aliases and anchors are not supported (&l0)"


def test_alias_bomb_refused_by_import_and_diff(flags: Flags, tmp_path: Path) -> None:
    version = snapshot_version(flags)
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb())
    for command in ("import", "diff"):
        started = time.monotonic()
        result = flags(command, str(bomb), memory_limit=_BOUNDED, timeout=20.0)
        assert result.code == 2, str(result)
        assert result.err.strip() == f"flags: {bomb}: {_NO_ALIASES}; write the value out in full"
        assert time.monotonic() - started < 10.0
    assert snapshot_version(flags) == version


def test_documents_over_16_mib_refused_unread(flags: Flags, tmp_path: Path) -> None:
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as handle:
        handle.truncate(1 << 30)  # sparse: a gigabyte that is neither written nor read
    for command in ("import", "diff"):
        result = flags(command, str(huge), memory_limit=_BOUNDED)
        assert result.code == 2, str(result)
        assert "the document is larger than 16 MiB, the limit" in result.err


def test_serve_refuses_a_seed_with_aliases(tmp_path: Path) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text(alias_bomb())
    result = run_flags(
        "serve",
        "--port",
        str(free_port()),
        "--seed",
        str(seed),
        url=None,
        token=None,
        cwd=tmp_path,
        timeout=20.0,
        memory_limit=_BOUNDED,
    )
    assert result.code == 2, str(result)
    assert result.err.strip() == f"flags: {seed}: {_NO_ALIASES}; write the value out in full"
    assert not (tmp_path / ".flagport").exists()  # refused before anything started


def test_prerequisite_cycle_is_refused_and_nothing_applied(flags: Flags, tmp_path: Path) -> None:
    before = flags.ok("export").out
    cycle = tmp_path / "cycle.yaml"
    cycle.write_text(
        "flags:\n"
        "  cycle-a:\n    enabled: true\n    prerequisites: [{key: cycle-b}]\n"
        "  cycle-b:\n    enabled: true\n    prerequisites: [{key: cycle-a}]\n"
    )
    for args in (("import", str(cycle)), ("import", str(cycle), "--merge")):
        result = flags(*args)
        assert result.code == 1, str(result)
        assert "cycle" in result.err
    # A cycle through a flag only the server has: the file alone looks fine.
    flags.ok("create", "cycle-base")
    merge = tmp_path / "merge.yaml"
    merge.write_text(
        "flags:\n  cycle-base:\n    prerequisites: [{key: cycle-top}]\n"
        "  cycle-top:\n    prerequisites: [{key: cycle-base}]\n"
    )
    assert flags("import", str(merge), "--merge").code == 1
    flags.ok("delete", "cycle-base", "--yes")
    assert flags.ok("export").out == before


@contextlib.contextmanager
def stopped_instance(server: RunningServer, tmp_path: Path) -> Iterator[None]:
    """A worker that stays "live" in the propagation registry (it heartbeats) but applies
    nothing, as a hung instance would. It writes its heartbeats straight into the store, so
    unlike a SIGSTOPped server it can never be frozen while holding the SQLite write lock."""
    from flagport_server.stores.base import WorkerStatus
    from flagport_server.stores.sqlite import SQLiteStore

    stop = threading.Event()
    beating = threading.Event()

    async def heartbeat() -> None:
        store = SQLiteStore(server.workdir / "flagport.db")
        await store.open()
        try:
            while not stop.is_set():
                now = time.time()
                status = WorkerStatus(
                    instance="frozen", pid=4242, applied_version=0, heartbeat_at=now, started_at=now
                )
                await store.heartbeat(status)
                beating.set()
                await asyncio.sleep(0.2)
            await store.forget_worker("frozen", 4242)
        finally:
            await store.close()

    thread = threading.Thread(target=lambda: asyncio.run(heartbeat()), daemon=True)
    thread.start()
    assert beating.wait(10), "the fake worker never wrote a heartbeat"
    try:
        yield None
    finally:
        stop.set()
        thread.join(10)


@contextlib.contextmanager
def silent_propagation(server: RunningServer) -> Iterator[str]:
    """The server behind a proxy that passes every request but the propagation registry's,
    which it never answers (a server hung in that one read); yields the proxy's URL."""
    release = threading.Event()

    class Relay(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _relay(self) -> None:
            if self.path.startswith("/admin/v1/propagation"):
                release.wait(30)
                self.close_connection = True
                return
            size = int(self.headers.get("Content-Length") or 0)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            answer = httpx.request(
                self.command,
                server.url + self.path,
                headers=headers,
                content=self.rfile.read(size),
                timeout=10,
            )
            self.send_response(answer.status_code)
            for name, value in answer.headers.items():
                if name.lower() not in ("content-length", "connection", "content-encoding"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _relay

        def log_message(self, format: str, *args: object) -> None:
            pass

    with serving(Relay) as url:
        try:
            yield url
        finally:
            release.set()


def test_the_wait_ends_at_its_timeout_when_the_server_stops_answering(
    flags: Flags, server: RunningServer
) -> None:
    """``--timeout`` bounds the whole wait, its polls included: a registry that never
    answers gives exit 5 (committed, not confirmed) at the timeout, not after the client's
    10-second request timeout."""
    with silent_propagation(server) as url:
        started = time.monotonic()
        result = run_flags(
            "disable", "auth-improvements", "--timeout", "0.5", "--reason", "x", url=url
        )
        took = time.monotonic() - started
    assert result.code == 5, str(result)
    assert "auth-improvements: off" in result.out  # committed and shown
    assert "not confirmed within 0.5 s" in result.err, result.err
    assert took < 5.0, took
    flags.ok("enable", "auth-improvements")


def test_not_confirmed_exits_5_naming_stragglers(
    flags: Flags, server: RunningServer, tmp_path: Path
) -> None:
    with stopped_instance(server, tmp_path):
        result = flags("disable", "auth-improvements", "--timeout", "0.3", "--reason", "x")
        assert result.code == 5, str(result)
        assert "auth-improvements: off" in result.out  # committed and shown
        assert "not confirmed within 0.3 s by: frozen pid" in result.err
        assert flags("enable", "auth-improvements", "--timeout", "0.2").code == 5
        assert flags("enable", "auth-improvements", "--no-wait").code == 0
    shown = json.loads(flags.ok("show", "auth-improvements", "--json").out)
    assert shown["enabled"] is True

"""Every command, against what a broken network or a proxy in front of Flagport answers (an
HTML error page, a login page, a redirect, JSON of another service, a body that does not
decode, a dropped connection, a port that does not speak HTTP): one line on stderr and an
exit code, never a traceback. No Flagport server answers like this, so a small HTTP server
plays the part; the CLI runs in this process, as ``flags`` does."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import click
import pytest

from flagport_cli.main import cli, main
from tests.support.http_server import serving

#: Arguments that get each command past its own checks to its first request.
ARGUMENTS: dict[str, tuple[str, ...]] = {
    "list": ("list",),
    "show": ("show", "a"),
    "create": ("create", "a"),
    "enable": ("enable", "a", "--timeout", "0.1"),
    "disable": ("disable", "a", "--timeout", "0.1"),
    "kill": ("kill", "--all", "--timeout", "0.1"),
    "target": ("target", "a", "--on", "u1"),
    "delete": ("delete", "a", "--yes"),
    "audit": ("audit", "--since", "1h"),
    "explain": ("explain", "a", "--user", "u1"),
    "import": ("import", "{document}"),
    "export": ("export", "-o", "{output}"),
    "diff": ("diff", "{document}"),
    "token create": ("token", "create", "ci", "--scope", "sdk"),
    "token list": ("token", "list"),
    "token revoke": ("token", "revoke", "t1"),
    "token rotate-secret": ("token", "rotate-secret", "--timeout", "0.1"),
    "status": ("status",),
    "stats": ("stats", "a", "--since", "1h"),
    "stale": ("stale",),
    "rollout start": ("rollout", "start", "a"),
    "rollout status": ("rollout", "status", "a"),
    "rollout list": ("rollout", "list"),
    "rollout pause": ("rollout", "pause", "a"),
    "rollout resume": ("rollout", "resume", "a"),
    "rollout abort": ("rollout", "abort", "a"),
    "token rotate": ("token", "rotate", "t1", "--timeout", "0.1"),
    "approvals require": ("approvals", "require", "a"),
    "approvals list": ("approvals", "list"),
    "approvals remove": ("approvals", "remove", "--tag", "payments"),
    "request enable": ("request", "enable", "a", "--percentage", "50", "--reason", "r"),
    "request put": ("request", "put", "a", "--file", "{flag}", "--reason", "r"),
    "request segment": ("request", "segment", "a", "--file", "{flag}", "--reason", "r"),
    "request delete": ("request", "delete", "a", "--reason", "r"),
    "request rollout-resume": ("request", "rollout-resume", "a", "--reason", "r"),
    "requests": ("requests",),
    "approve": ("approve", "r1"),
    "reject": ("reject", "r1"),
    "promote": ("promote", "a", "--from", "staging", "--to", "production"),
    "webhook add": ("webhook", "add", "https://hooks.example/x"),
    "webhook list": ("webhook", "list"),
    "webhook remove": ("webhook", "remove", "wh_1"),
    "webhook test": ("webhook", "test", "wh_1"),
    "webhook deliveries": ("webhook", "deliveries", "--failed"),
    "webhook redeliver": ("webhook", "redeliver", "wh_1", "7"),
}

#: Commands that report a change or a comparison: an answer that is not Flagport's must
#: never let them exit 0. The others may print what little a JSON object told them.
CLAIMS = {
    "promote",
    "create",
    "enable",
    "disable",
    "kill",
    "target",
    "delete",
    "import",
    "diff",
    "token create",
    "token revoke",
    "token rotate-secret",
    "token rotate",
    "approvals require",
    "approvals remove",
    "request enable",
    "request put",
    "request segment",
    "request delete",
    "request rollout-resume",
    "approve",
    "reject",
    "rollout start",
    "rollout pause",
    "rollout resume",
    "rollout abort",
    "webhook add",
    "webhook remove",
    "webhook test",
    "webhook redeliver",
}
#: Answers that are JSON objects of another shape.
OTHER_OBJECTS = {"empty object", "wrong types"}

#: (status, headers, body) of each answer, or how the connection misbehaves.
ANSWERS: dict[str, tuple[int, dict[str, str], bytes] | str] = {
    "proxy 502 page": (502, {"Content-Type": "text/html"}, b"<html>Bad Gateway</html>"),
    "proxy 500 page": (500, {"Content-Type": "text/html"}, b"<html>oops</html>"),
    "login page": (200, {"Content-Type": "text/html"}, b"<html>Sign in</html>"),
    "redirect": (302, {"Location": "https://sso.example/login"}, b""),
    "json array": (200, {"Content-Type": "application/json"}, b"[1, 2]"),
    "json null": (200, {"Content-Type": "application/json"}, b"null"),
    "empty object": (200, {"Content-Type": "application/json"}, b"{}"),
    "wrong types": (
        200,
        {"Content-Type": "application/json"},
        b'{"flags": 3, "flag": 1, "entries": 2, "tokens": 4, "diff": 5, "token": 6, '
        b'"snapshot_version": "x", "snapshot": 7, "store": 8, "name": [], "series": 9}',
    ),
    "bad gzip": (200, {"Content-Type": "application/json", "Content-Encoding": "gzip"}, b"{}"),
    "dropped connection": "drop",
    "not http": "garbage",
}


class _Misbehaving(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    answer: tuple[int, dict[str, str], bytes] | str = "drop"

    def log_message(self, *args: object) -> None:
        pass

    def handle_one_request(self) -> None:
        if isinstance(self.answer, str):
            self.rfile.readline(65537)
            if self.answer == "garbage":
                self.wfile.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
            self.close_connection = True
            return
        super().handle_one_request()

    def _reply(self) -> None:
        assert not isinstance(self.answer, str)
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        status, headers, body = self.answer
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _reply


class _Quiet(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the client hanging up on garbage is the point


@pytest.fixture(scope="module")
def stand_in() -> Iterator[str]:
    with serving(_Misbehaving, server_class=_Quiet) as url:
        yield url


#: Commands that never ask a server: ``serve`` is one, ``backup`` and ``restore`` open the
#: store itself.
_NO_SERVER = {"serve", "backup", "restore"}


def _every_command() -> set[str]:
    names = set()
    for name, command in cli.commands.items():
        if isinstance(command, click.Group):
            names.update(f"{name} {sub}" for sub in command.commands)
        elif name not in _NO_SERVER:
            names.add(name)
    return names


def test_every_command_is_covered() -> None:
    assert set(ARGUMENTS) == _every_command()


@pytest.mark.parametrize("answer", sorted(ANSWERS))
def test_every_command_turns_a_bad_answer_into_one_line_and_an_exit_code(
    answer: str,
    stand_in: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    document = tmp_path / "flags.yaml"
    document.write_text("flags:\n  a:\n    enabled: true\n")
    output = tmp_path / "export.yaml"
    flag = tmp_path / "flag.json"
    flag.write_text('{"enabled": true}')
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(
        "".join(f'[profiles.{name}]\nurl = "{stand_in}"\n' for name in ("staging", "production"))
    )
    profiles.chmod(0o600)
    monkeypatch.setenv("FLAGPORT_PROFILES", str(profiles))
    monkeypatch.setattr(_Misbehaving, "answer", ANSWERS[answer])
    monkeypatch.setenv("FLAGPORT_TOKEN", "fpa_stand_in")
    monkeypatch.chdir(tmp_path)
    for name, arguments in ARGUMENTS.items():
        args = [a.format(document=document, output=output, flag=flag) for a in arguments]
        monkeypatch.setattr(sys, "argv", ["flags", "--url", stand_in, *args])
        with pytest.raises(SystemExit) as exited:
            main()
        err = capsys.readouterr().err
        if exited.value.code == 0 and answer in OTHER_OBJECTS and name not in CLAIMS:
            continue
        assert exited.value.code in (1, 3), (name, exited.value.code, err)
        assert len(err.strip().splitlines()) == 1, (name, err)
        assert err.startswith("flags: "), (name, err)
    assert not output.exists()  # a page that is not the configuration is never written


def test_a_bad_url_or_token_is_a_usage_problem(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for url, token in (
        ("http://[::1", "fpa_x"),
        (f"http://127.0.0.1:{port}/\x01", "fpa_x"),
        (f"http://127.0.0.1:{port}", "fpa_tök"),
        (f"http://127.0.0.1:{port}", "fpa_a b"),
    ):
        monkeypatch.setenv("FLAGPORT_TOKEN", token)
        monkeypatch.setattr(sys, "argv", ["flags", "--url", url, "list"])
        with pytest.raises(SystemExit) as exited:
            main()
        err = capsys.readouterr().err
        assert exited.value.code == 2, (url, token, err)
        assert len(err.strip().splitlines()) == 1, err

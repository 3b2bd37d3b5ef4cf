"""Every shared evaluation case (``tests/spec/evaluation/*.json``) asked of a real server by
the PHP bridge and by the Python remote, async and local clients: each answer must be the
engine's for the same context. "On" is the engine's own rule, the one that gates a flag's
children: the flag serves anything but its off variant.

One server serves each case file in turn. The documents hold flags that fail to compile on
purpose (cycles, unknown segments), which the admin API refuses, so they are written to the
store directly, as a bug or an older release could have left them.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from flagport import AsyncClient, Client, ClientStatus, LocalClient
from flagport.engine import (
    CompiledSnapshot,
    EvaluationResult,
    SnapshotDocument,
    compile_snapshot,
    document_from_builtins,
)
from flagport_server.stores import open_store
from flagport_server.stores.base import Mutation
from tests.php.conftest import BRIDGE
from tests.support.server import RunningServer, running_server, wait_until
from tests.support.tools import REPO_ROOT

CASE_FILES = sorted((REPO_ROOT / "tests" / "spec" / "evaluation").glob("*.json"))
BULK = "/ofrep/v1/evaluate/flags"


@dataclass
class Served:
    """One case file, served by the server."""

    server: RunningServer
    cases: list[dict[str, Any]]
    snapshot: CompiledSnapshot

    def expected(self, key: str, context: dict[str, Any]) -> tuple[EvaluationResult, bool | None]:
        """The engine's result and whether the flag is on (None on an error)."""
        result = self.snapshot.evaluate(key, context, time.time())
        flag = self.snapshot.flag(key)
        if result.error_code is not None or flag is None:
            return result, None
        return result, result.variant != flag.off_variant


async def _replace_document(store_url: str, document: SnapshotDocument) -> int:
    """Replace the store's flags and segments by ``document``'s; the new snapshot version."""
    store = open_store(store_url)
    await store.open()
    try:
        current = (await store.load()).document
        mutations = [Mutation("flag", key, "delete") for key in current.flags]
        mutations += [Mutation("segment", key, "delete") for key in current.segments]
        mutations += [
            Mutation("segment", key, "put", msgspec.structs.replace(segment, version=1))
            for key, segment in document.segments.items()
        ]
        mutations += [
            Mutation("flag", key, "put", msgspec.structs.replace(flag, version=1))
            for key, flag in document.flags.items()
        ]
        return (await store.commit(mutations, [])).snapshot_version
    finally:
        await store.close()


@pytest.fixture(scope="module")
def cases_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("shared-cases")) as server:
        yield server


@pytest.fixture(scope="module", params=CASE_FILES, ids=lambda path: path.stem)
def served(request: pytest.FixtureRequest, cases_server: RunningServer) -> Served:
    data = json.loads(Path(request.param).read_text(encoding="utf-8"))
    document = document_from_builtins(data["document"])
    version = asyncio.run(
        _replace_document(f"sqlite:///{cases_server.workdir / 'flagport.db'}", document)
    )
    with cases_server.client(timeout=5.0) as http:

        def serving() -> bool:
            answer = http.post(BULK, json={"context": {"targetingKey": ""}})
            return int(answer.headers.get("x-flagport-snapshot", "-1")) >= version

        assert wait_until(serving, timeout=10.0), "the server did not pick up the document"
    return Served(cases_server, data["cases"], compile_snapshot(document))


def _as_json(value: Any) -> str:
    """Comparable with JSON types kept (1, 1.0 and true differ)."""
    return json.dumps(value, sort_keys=True)


def test_php_bridge_answers_every_case_as_the_engine(php: str, served: Served) -> None:
    request = {
        "url": served.server.url,
        "cases": [{"key": case["key"], "context": case["context"]} for case in served.cases],
    }
    completed = subprocess.run(
        [php, str(BRIDGE / "tests" / "answer-cases.php")],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    output = json.loads(completed.stdout)
    assert output["logged"] == []
    wrong = []
    for case, php_answer in zip(served.cases, output["answers"], strict=True):
        key = case["key"]
        result, on = served.expected(key, php_answer["sent"])
        code = result.error_code
        error = code is not None
        details = php_answer["details"]
        want_details = (
            None
            if key not in served.snapshot
            else {
                "value": None if error else result.value,
                "variant": None if error else result.variant,
                "reason": None if error else result.reason.value,
                "errorCode": None if code is None else code.value,
                "source": php_answer["source"],
            }
        )
        checks = {
            "isEnabled": (php_answer["enabled"], False if on is None else on),
            "isEnabled(default true)": (php_answer["enabledOrTrue"], True if on is None else on),
            "value": (php_answer["value"], None if error else result.value),
            "details": (details, want_details),
            "source": (php_answer["source"] in ("server", "not-modified"), True),
        }
        for what, (got, want) in checks.items():
            if _as_json(got) != _as_json(want):
                where = f"{case['name']} ({key}, sent {php_answer['sent']})"
                wrong.append(f"{where}: {what} {got!r}, engine {want!r}")
    assert not wrong, "\n".join(wrong)


def test_python_clients_answer_every_case_as_the_engine(served: Served) -> None:
    # The server refuses a whole request whose targetingKey is not a string (OFREP); the
    # remote clients send ints as text and an absent or null key as "" (no unit either way).
    sendable = [
        case
        for case in served.cases
        if type(case["context"].get("targetingKey")) in (str, int, type(None))
    ]
    url = served.server.url
    with Client(url, timeout=5.0) as remote, LocalClient(url, report_exposures=False) as local:
        assert local.status is ClientStatus.READY

        async def ask_async() -> list[tuple[bool, bool]]:
            async with AsyncClient(url, timeout=5.0) as flags:
                return [
                    (
                        await flags.is_enabled(case["key"], case["context"]),
                        await flags.is_enabled(case["key"], case["context"], default=True),
                    )
                    for case in sendable
                ]

        asynchronous = dict(
            zip((id(case) for case in sendable), asyncio.run(ask_async()), strict=True)
        )
        wrong = []
        for case in served.cases:
            key, context = case["key"], case["context"]
            _, on = served.expected(key, context)
            want = (False, True) if on is None else (on, on)
            answers = {
                "local": (local.is_enabled(key, context), local.is_enabled(key, context, True))
            }
            if id(case) in asynchronous:
                answers["remote"] = (
                    remote.is_enabled(key, context),
                    remote.is_enabled(key, context, True),
                )
                answers["async"] = asynchronous[id(case)]
            for client, got in answers.items():
                if got != want:
                    wrong.append(
                        f"{case['name']} ({key}): {client} is_enabled {got}, engine {want}"
                    )
    assert not wrong, "\n".join(wrong)


def _wire(result: EvaluationResult) -> dict[str, Any]:
    """What OFREP answers for ``result`` (the fields the spec decides)."""
    if result.error_code is not None:
        return {"key": result.key, "errorCode": result.error_code.value}
    return {
        "key": result.key,
        "value": result.value,
        "variant": result.variant,
        "reason": result.reason.value,
    }


def _decided(item: dict[str, Any]) -> dict[str, Any]:
    fields = ("key", "errorCode") if "errorCode" in item else ("key", "value", "variant", "reason")
    return {name: item.get(name) for name in fields}


def test_ofrep_answers_every_context_as_sent(served: Served) -> None:
    """Each case's context posted as it is (no client fills in a missing targetingKey) to
    OFREP single and bulk: the engine's answer per flag. A context without targetingKey is an
    anonymous visitor, never a refused request (docs/spec.md section 4)."""
    sendable = [
        case
        for case in served.cases
        if type(case["context"].get("targetingKey", "")) is str and case["key"] in served.snapshot
    ]
    assert sendable
    wrong = []
    bulk_answers: dict[str, dict[str, Any]] = {}
    with served.server.client(timeout=5.0) as http:
        for case in sendable:
            key, context = case["key"], case["context"]
            want = _as_json(_wire(served.expected(key, context)[0]))
            single = http.post(f"{BULK}/{key}", json={"context": context})
            if _as_json(_decided(single.json())) != want:
                wrong.append(f"{case['name']}: single {single.status_code} {single.text}")
            sent = _as_json(context)
            if sent not in bulk_answers:
                answer = http.post(BULK, json={"context": context})
                assert answer.status_code == 200, (case["name"], answer.text)
                bulk_answers[sent] = {item["key"]: item for item in answer.json()["flags"]}
            item = bulk_answers[sent][key]
            if _as_json(_decided(item)) != want:
                wrong.append(f"{case['name']}: bulk item {item}, engine {want}")
    assert not wrong, "\n".join(wrong)

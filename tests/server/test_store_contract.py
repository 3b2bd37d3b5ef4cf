"""The store contract (``flagport_server.stores.base.Store``), run against every backend.

Each test gets a fresh, empty store through the ``store`` / ``store_backend`` fixtures
(``tests/server/conftest.py``). "Another process" is either a second store object on the same
data (its own connections) or a real subprocess, never a mock. A few SQLite-only checks
(pragmas, URL parsing) are at the end.
"""

from __future__ import annotations

import asyncio
import importlib.util
import signal
import sqlite3
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from flagport.engine import (
    Condition,
    Flag,
    Operator,
    Prerequisite,
    Rule,
    Segment,
    SnapshotDocument,
)
from flagport_server.errors import (
    AlreadyExists,
    InvalidInput,
    StoreError,
    StoreUnavailable,
    VersionConflict,
)
from flagport_server.stores import SQLiteStore, open_store, sqlite_path
from flagport_server.stores.base import (
    SCOPE_MODEL,
    SERVER_SECRET_BYTES,
    AuditEntry,
    AuditQuery,
    Mutation,
    Store,
    TokenRecord,
    WorkerStatus,
)
from tests.support.stores import Backend

pytestmark = pytest.mark.anyio

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The propagation budget: every worker sees a commit within this many seconds.
CHANGE_BUDGET_S = 0.1


# -- helpers ---------------------------------------------------------------------------------


def put_flag(key: str, flag: Flag, expected: int | None = -1) -> Mutation:
    return Mutation(kind="flag", key=key, op="put", value=flag, expected_version=expected)


def put_segment(key: str, segment: Segment, expected: int | None = -1) -> Mutation:
    return Mutation(kind="segment", key=key, op="put", value=segment, expected_version=expected)


def delete(kind: str, key: str, expected: int | None = -1) -> Mutation:
    return Mutation(kind=kind, key=key, op="delete", expected_version=expected)  # type: ignore[arg-type]


def entry(
    key: str, actor: str = "alice", at: str = "2026-01-01T10:00:00Z", **fields: Any
) -> AuditEntry:
    return AuditEntry(actor=actor, action=fields.pop("action", "update"), key=key, at=at, **fields)


async def create(store: Store, key: str, **fields: Any) -> Flag:
    flag = Flag(version=1, **fields)
    await store.commit([put_flag(key, flag, expected=None)], [entry(key, action="create")])
    return flag


def without_ids(entries: list[AuditEntry]) -> list[AuditEntry]:
    return [msgspec.structs.replace(e, id=0, snapshot_version=0) for e in entries]


async def opened(backend: Backend) -> Store:
    other = backend.make()
    await other.open()
    return other


def run_script(backend: Backend, script: str, *args: str) -> subprocess.Popen[str]:
    """A real second process (the interpreter running the tests, without ``uv run``)."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), backend.url, *args],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def release(processes: list[subprocess.Popen[str]]) -> None:
    """Unblock scripts waiting on stdin all at once (``communicate`` would go one by one)."""
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()


# -- loading and committing ------------------------------------------------------------------


async def test_empty_store_loads_an_empty_document_at_version_0(store: Store) -> None:
    state = await store.load()
    assert state.store_id
    assert state.document == SnapshotDocument(version=0)
    assert await store.snapshot_version() == (state.store_id, 0)


async def test_store_id_is_shared_by_every_connection_and_kept_on_reopen(
    store: Store, store_backend: Backend
) -> None:
    store_id, _ = await store.snapshot_version()
    other = await opened(store_backend)
    try:
        assert (await other.snapshot_version())[0] == store_id
    finally:
        await other.close()
    await store.close()
    await store.open()
    assert (await store.snapshot_version())[0] == store_id


async def test_open_is_idempotent(store: Store) -> None:
    await create(store, "a")
    await store.open()
    assert list((await store.load()).document.flags) == ["a"]


async def test_put_update_and_delete_flags_and_segments(store: Store) -> None:
    flag = Flag(description="first", enabled=True, percentage=10, version=1)
    segment = Segment(included=["7"], version=1)
    result = await store.commit(
        [put_flag("ui", flag, None), put_segment("beta", segment, None)], [entry("ui")]
    )
    assert result.snapshot_version == 1
    document = (await store.load()).document
    assert document.version == 1
    assert document.flags == {"ui": flag}
    assert document.segments == {"beta": segment}

    updated = msgspec.structs.replace(flag, percentage=50.0, version=2)
    result = await store.commit([put_flag("ui", updated, 1)], [])
    assert result.snapshot_version == 2
    assert (await store.load()).document.flags == {"ui": updated}

    result = await store.commit([delete("flag", "ui", 2), delete("segment", "beta", 1)], [])
    assert result.snapshot_version == 3
    document = (await store.load()).document
    assert (document.flags, document.segments, document.version) == ({}, {}, 3)


async def test_every_commit_bumps_the_version_by_exactly_one(store: Store) -> None:
    store_id, _ = await store.snapshot_version()
    many = [put_flag(f"f{i}", Flag(version=1), None) for i in range(5)]
    versions = [
        (await store.commit(many, [])).snapshot_version,
        (await store.commit([put_flag("f0", Flag(version=2), 1)], [])).snapshot_version,
        # Audit only (e.g. a token was created): still one commit, one version.
        (await store.commit([], [entry("tokens", kind="token")])).snapshot_version,
        (await store.commit([delete("flag", "f1")], [])).snapshot_version,
    ]
    assert versions == [1, 2, 3, 4]
    assert await store.snapshot_version() == (store_id, 4)
    assert (await store.load()).document.version == 4


async def test_put_stores_the_callers_flag_version(store: Store) -> None:
    await store.commit([put_flag("a", Flag(version=41), None)], [])
    assert (await store.load()).document.flags["a"].version == 41
    await store.commit([put_flag("a", Flag(version=42), 41)], [])
    assert (await store.load()).document.flags["a"].version == 42


async def test_guards_see_earlier_mutations_of_the_same_batch(store: Store) -> None:
    await store.commit(
        [put_flag("a", Flag(version=1), None), put_flag("a", Flag(version=2, enabled=True), 1)],
        [],
    )
    assert (await store.load()).document.flags["a"] == Flag(version=2, enabled=True)


# -- compare-and-set guards ------------------------------------------------------------------


async def test_create_when_it_exists_conflicts(store: Store) -> None:
    await create(store, "a")
    with pytest.raises(VersionConflict) as caught:
        await store.commit([put_flag("a", Flag(version=1, enabled=True), None)], [entry("a")])
    assert (caught.value.kind, caught.value.key) == ("flag", "a")
    assert (caught.value.expected, caught.value.actual) == (None, 1)
    assert (await store.load()).document.flags["a"].enabled is False


async def test_update_with_a_stale_version_conflicts(store: Store) -> None:
    await create(store, "a")
    await store.commit([put_flag("a", Flag(version=2), 1)], [])
    with pytest.raises(VersionConflict) as caught:
        await store.commit([put_flag("a", Flag(version=2, enabled=True), 1)], [])
    assert (caught.value.expected, caught.value.actual) == (1, 2)
    with pytest.raises(VersionConflict) as caught:
        await store.commit([delete("flag", "a", 1)], [])
    assert (caught.value.expected, caught.value.actual) == (1, 2)


async def test_update_of_a_missing_object_conflicts(store: Store) -> None:
    with pytest.raises(VersionConflict) as caught:
        await store.commit([put_segment("beta", Segment(version=2), 1)], [])
    assert (caught.value.kind, caught.value.expected, caught.value.actual) == ("segment", 1, None)
    with pytest.raises(VersionConflict):
        await store.commit([delete("segment", "beta", 1)], [])


async def test_unchecked_mutations_always_apply(store: Store) -> None:
    await create(store, "a")
    await store.commit([put_flag("a", Flag(version=9), -1), put_flag("b", Flag(version=1))], [])
    await store.commit([delete("flag", "missing")], [])  # deleting nothing is not an error
    assert {k: f.version for k, f in (await store.load()).document.flags.items()} == {
        "a": 9,
        "b": 1,
    }


async def test_a_failed_guard_applies_nothing_of_the_batch(store: Store) -> None:
    await create(store, "a")
    before = await store.load()
    audit_before = await store.audit(AuditQuery())
    batch = [
        put_flag("new", Flag(version=1), None),
        put_segment("beta", Segment(version=1), None),
        delete("flag", "a", 1),
        put_flag("b", Flag(version=1), 5),  # the failing guard comes last
    ]
    with pytest.raises(VersionConflict):
        await store.commit(batch, [entry("new"), entry("a")])
    assert await store.load() == before
    assert await store.audit(AuditQuery()) == audit_before
    assert (await store.commit([], [])).snapshot_version == before.document.version + 1


async def test_malformed_mutations_are_refused(store: Store) -> None:
    with pytest.raises(InvalidInput):
        await store.commit([Mutation(kind="flag", key="a", op="put")], [])
    with pytest.raises(InvalidInput):
        await store.commit([put_flag("a", Segment())], [])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        await store.commit([], [entry("a", at="yesterday")])
    assert (await store.load()).document.version == 0


# -- round trip ------------------------------------------------------------------------------


async def test_flags_and_segments_round_trip_with_json_types_kept(store: Store) -> None:
    flag = Flag(
        description="Mobile nav — ünïcode ✓",
        enabled=True,
        percentage=12.345,
        bucket_by="company_id",
        salt="ui-improvements",
        variants={
            "int": 3,
            "float": 3.0,
            "big": 2**53 + 1,
            "obj": {"n": 1.5, "i": 2, "list": [1, 2.0, "x", None, True], "nested": {"z": 0.1}},
            "off": False,
        },
        on_variant="obj",
        off_variant="off",
        weights={"int": 1, "float": 2},
        targets={"int": ["7", "42"]},
        rules=[
            Rule(
                conditions=[
                    Condition(op=Operator.GTE, values=[2, 2.5], attribute="seats"),
                    Condition(op=Operator.IN_SEGMENT, values=["beta"]),
                ],
                percentage=50.0,
                name="big customers",
            ),
            Rule(conditions=[Condition(op=Operator.IN, values=["a", 1, True])], variant="int"),
        ],
        prerequisites=[Prerequisite(key="ui"), Prerequisite(key="billing", variant="on")],
        tags=["ui", "mobile"],
        owner="web-team",
        version=7,
        created_at="2026-01-01T10:00:00Z",
        updated_at="2026-01-02T10:00:00Z",
    )
    segment = Segment(
        description="beta",
        included=["1"],
        excluded=["2"],
        conditions=[Condition(op=Operator.ENDS_WITH, values=["@acme.test"], attribute="email")],
        version=3,
        updated_at="2026-01-02T10:00:00Z",
    )
    await store.commit([put_flag("ui.nav", flag), put_segment("beta", segment)], [])
    document = (await store.load()).document
    assert document.flags["ui.nav"] == flag
    assert document.segments["beta"] == segment
    variants = document.flags["ui.nav"].variants
    assert type(variants["float"]) is float
    assert type(variants["int"]) is int
    assert variants["big"] == 2**53 + 1
    assert type(variants["obj"]["n"]) is float
    assert [type(v) for v in variants["obj"]["list"]] == [int, float, str, type(None), bool]
    assert type(document.flags["ui.nav"].percentage) is float
    assert document.flags["ui.nav"].rules[0].conditions[0].values == [2, 2.5]
    assert type(document.flags["ui.nav"].rules[0].conditions[0].values[0]) is int


async def test_load_returns_flags_in_key_order(store: Store) -> None:
    keys = ["b", "a.c", "a", "c", "a.b"]
    await store.commit([put_flag(k, Flag(version=1)) for k in keys], [])
    assert list((await store.load()).document.flags) == sorted(keys)


# -- audit -----------------------------------------------------------------------------------


async def test_audit_entries_get_ids_and_the_snapshot_version(store: Store) -> None:
    first = entry(
        "a",
        action="create",
        reason="launch",
        after={"enabled": False, "percentage": 100.0, "variants": {"on": 1, "off": 0.5}},
    )
    second = entry("b", actor="bob", kind="segment")
    result = await store.commit([put_flag("a", Flag(version=1))], [first, second])
    assert len(result.audit_ids) == 2
    assert result.audit_ids[0] < result.audit_ids[1]
    third = await store.commit([], [entry("a", before=first.after, after=None)])
    assert third.audit_ids[0] > result.audit_ids[1]

    entries = await store.audit(AuditQuery())
    assert [e.id for e in entries] == [third.audit_ids[0], *reversed(result.audit_ids)]
    assert [e.snapshot_version for e in entries] == [2, 1, 1]
    assert without_ids(entries[1:]) == [second, first]
    stored_after = entries[2].after
    assert stored_after is not None
    assert type(stored_after["percentage"]) is float
    assert stored_after["variants"] == {"on": 1, "off": 0.5}
    assert type(stored_after["variants"]["on"]) is int


async def test_audit_filters_by_key_actor_and_since(store: Store) -> None:
    entries = [
        entry("a", actor="alice", at="2026-01-01T09:00:00Z"),
        entry("b", actor="bob", at="2026-01-01T10:00:00Z"),
        entry("a", actor="bob", at="2026-01-01T11:00:00Z"),
        entry("a", actor="alice", at="2026-01-01T12:00:00.500000+00:00"),
    ]
    for one in entries:
        await store.commit([], [one])

    async def query(**fields: Any) -> list[AuditEntry]:
        return without_ids(await store.audit(AuditQuery(**fields)))

    assert await query(key="a") == [entries[3], entries[2], entries[0]]
    assert await query(actor="bob") == [entries[2], entries[1]]
    assert await query(key="a", actor="alice") == [entries[3], entries[0]]
    assert await query(since="2026-01-01T10:00:00Z") == [entries[3], entries[2], entries[1]]
    # An instant, not a string: 12:00+02:00 is 10:00Z; no offset means UTC.
    assert await query(since="2026-01-01T12:00:00+02:00") == entries[:0:-1]
    assert await query(since="2026-01-01T12:00:00") == [entries[3]]
    assert await query(key="a", since="2026-01-01T10:30:00Z", actor="bob") == [entries[2]]
    assert await query(key="nothing") == []
    with pytest.raises(InvalidInput):
        await store.audit(AuditQuery(since="last tuesday"))


async def test_audit_pages_newest_first(store: Store) -> None:
    result = await store.commit([], [entry(f"k{i}") for i in range(25)])
    ids = result.audit_ids
    pages: list[list[int]] = []
    before_id = None
    while True:
        page = await store.audit(AuditQuery(before_id=before_id, limit=10))
        if not page:
            break
        pages.append([e.id for e in page])
        before_id = page[-1].id
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [i for page in pages for i in page] == sorted(ids, reverse=True)
    keyed = await store.audit(AuditQuery(key="k3", before_id=ids[3]))
    assert keyed == []
    assert [e.key for e in await store.audit(AuditQuery(key="k3", before_id=ids[3] + 1))] == ["k3"]
    with pytest.raises(InvalidInput):
        await store.audit(AuditQuery(limit=0))


async def test_audit_limit_is_capped_at_1000(store: Store) -> None:
    await store.commit([], [entry("k") for _ in range(1005)])
    assert len(await store.audit(AuditQuery(limit=5000))) == 1000
    assert len(await store.audit(AuditQuery())) == 100


# -- tokens ----------------------------------------------------------------------------------


def token(
    id_: str,
    scope: str = "admin",
    created_at: str = "2026-01-01T10:00:00Z",
    scope_model: int = SCOPE_MODEL,
) -> TokenRecord:
    return TokenRecord(
        id=id_,
        name=f"{id_}-name",
        scope=scope,  # type: ignore[arg-type]
        secret_hash=f"{id_:0>64}",
        created_at=created_at,
        scope_model=scope_model,
    )


async def test_tokens_stored_before_the_four_scopes_are_read_in_todays_model(
    store: Store, store_backend: Backend
) -> None:
    """An ``evaluate`` token of scope model 1 reached /v1/snapshot and /v1/exposures: it
    reads as ``sdk`` (deployed LocalClients keep working), from every connection, and stays
    ``sdk`` once revoked (the revocation rewrites it in today's model). Today's ``evaluate``
    and an old ``admin`` token keep their scope (docs/adr/0014-token-scopes.md)."""
    old_evaluate = token("old-eval", "evaluate", "2026-01-01T10:00:00Z", scope_model=1)
    old_admin = token("old-admin", "admin", "2026-01-01T11:00:00Z", scope_model=1)
    browser = token("browser", "evaluate", "2026-01-01T12:00:00Z")
    for record in (old_evaluate, old_admin, browser):
        await store.add_token(record)
    expected = [
        msgspec.structs.replace(old_evaluate, scope="sdk", scope_model=SCOPE_MODEL),
        msgspec.structs.replace(old_admin, scope_model=SCOPE_MODEL),
        browser,
    ]
    assert await store.tokens() == expected
    other = await opened(store_backend)
    try:
        assert await other.tokens() == expected
    finally:
        await other.close()
    revoked = await store.revoke_token("old-eval", "2026-01-02T10:00:00Z")
    assert revoked == msgspec.structs.replace(expected[0], revoked_at="2026-01-02T10:00:00Z")
    assert (await store.tokens())[0] == revoked


async def test_tokens_add_list_and_revoke(store: Store, store_backend: Backend) -> None:
    ci = token("ci", "evaluate", "2026-01-02T10:00:00Z")
    admin = token("admin")
    await store.add_token(ci)
    await store.add_token(admin)
    assert await store.tokens() == [admin, ci]  # oldest first
    with pytest.raises(AlreadyExists):
        await store.add_token(msgspec.structs.replace(ci, name="again"))
    with pytest.raises(AlreadyExists):
        await store.add_token(msgspec.structs.replace(ci, id="other"))  # same secret

    revoked = await store.revoke_token("ci", "2026-01-03T10:00:00Z")
    assert revoked == msgspec.structs.replace(ci, revoked_at="2026-01-03T10:00:00Z")
    # Revoking twice keeps the first time; a revoked token is still listed (to refuse it).
    assert await store.revoke_token("ci", "2026-01-04T10:00:00Z") == revoked
    assert await store.tokens() == [admin, revoked]
    assert await store.revoke_token("nope", "2026-01-03T10:00:00Z") is None

    other = await opened(store_backend)
    try:
        assert await other.tokens() == [admin, revoked]
    finally:
        await other.close()
    assert (await store.load()).document.version == 0  # tokens are not configuration


async def test_a_store_a_newer_flagport_upgraded_is_refused(
    store: Store, store_backend: Backend
) -> None:
    """A server left behind by a rolling upgrade stops using a store a newer release took
    over, rather than misread or overwrite it: when it opens the store, at every load and
    version check, at every write of the configuration or the tokens. It says why."""
    await store.commit([Mutation("flag", "a", "put", Flag(version=1), None)], [])
    await store.add_token(token("ci"))
    before = await store.snapshot_version()
    newer = store_backend.schema_version + 1
    store_backend.write_schema_version(newer)
    why = f"schema version {newer} was written by a newer Flagport.*upgrade this server"

    fresh = store_backend.make()
    with pytest.raises(StoreError, match=why):
        await fresh.open()
    await fresh.close()
    attempts: list[Callable[[], Awaitable[object]]] = [
        store.open,
        store.load,
        store.snapshot_version,
        lambda: store.commit([Mutation("flag", "b", "put", Flag(version=1), None)], []),
        lambda: store.add_token(token("other")),
        lambda: store.revoke_token("ci", "2026-01-03T10:00:00Z"),
    ]
    for attempt in attempts:
        with pytest.raises(StoreError, match=why):
            await attempt()

    store_backend.write_schema_version(store_backend.schema_version)
    assert await store.snapshot_version() == before
    assert list((await store.load()).document.flags) == ["a"]
    assert await store.tokens() == [token("ci")]


async def test_the_server_secret_is_made_once_shared_and_rotated(
    store: Store, store_backend: Backend
) -> None:
    secret = await store.server_secret()
    assert len(secret) == SERVER_SECRET_BYTES
    assert await store.server_secret() == secret  # made once
    other = await opened(store_backend)
    try:
        assert await other.server_secret() == secret  # every connection reads the same
        rotated = await other.rotate_server_secret()
        assert rotated != secret
        assert len(rotated) == SERVER_SECRET_BYTES
        assert await store.server_secret() == rotated
    finally:
        await other.close()
    # Never part of the configuration: not in what a server loads and exports.
    state = await store.load()
    assert rotated.hex() not in msgspec.json.encode(state).decode()


_SECRET_SCRIPT = """
    import asyncio, sys
    from flagport_server.stores import open_store

    async def main(url):
        store = open_store(url)
        await store.open()
        print((await store.server_secret()).hex(), flush=True)
        await store.close()

    asyncio.run(main(sys.argv[1]))
"""


async def test_workers_starting_at_once_share_one_server_secret(store_backend: Backend) -> None:
    processes = [run_script(store_backend, _SECRET_SCRIPT) for _ in range(6)]
    release(processes)
    outputs = [process.communicate(timeout=60) for process in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
    assert len({out.strip() for out, _ in outputs}) == 1


async def test_token_names_are_unique_whatever_their_case(
    store: Store, store_backend: Backend
) -> None:
    """A name names one token for good (revoked ones keep theirs): the audit's actor is a
    name, and another process adding the same name at once must be refused too."""
    await store.add_token(token("ci"))  # named "ci-name"
    await store.revoke_token("ci", "2026-01-03T10:00:00Z")
    other = await opened(store_backend)
    try:
        for name in ("ci-name", "CI-Name"):
            with pytest.raises(AlreadyExists) as caught:
                await other.add_token(msgspec.structs.replace(token("ci2"), name=name))
            assert "'" + name + "'" in str(caught.value)
            assert "name" in str(caught.value)
        await other.add_token(msgspec.structs.replace(token("ci2"), name="ci-name-2"))
    finally:
        await other.close()
    assert [t.name for t in await store.tokens()] == ["ci-name", "ci-name-2"]


# -- propagation registry --------------------------------------------------------------------


async def test_registry_heartbeats_max_age_and_forget(store: Store, store_backend: Backend) -> None:
    now = 1_800_000_000.0
    beats = [
        WorkerStatus("host:8000", 11, 3, now - 1, started_at=now - 100),
        WorkerStatus("host:8000", 12, 2, now - 4.5, started_at=now - 100),
        WorkerStatus("other:8000", 7, 3, now - 30, started_at=now - 200),
    ]
    for beat in beats:
        await store.heartbeat(beat)
    assert await store.workers(max_age=5, now=now) == beats[:2]
    assert await store.workers(max_age=60, now=now) == beats
    assert await store.workers(max_age=0.5, now=now) == []

    # A beat replaces the worker's row (keyed by instance and pid), never adds one.
    fresh = WorkerStatus("other:8000", 7, 4, now, started_at=now - 200)
    await store.heartbeat(fresh)
    assert await store.workers(max_age=5, now=now) == [*beats[:2], fresh]

    await store.forget_worker("host:8000", 12)
    await store.forget_worker("host:8000", 99)  # unknown: no error
    other = await opened(store_backend)
    try:
        assert await other.workers(max_age=60, now=now) == [beats[0], fresh]
    finally:
        await other.close()
    assert (await store.load()).document.version == 0


# -- change notifications --------------------------------------------------------------------


async def _next_versions(
    iterators: list[AsyncIterator[int]], commit: Any
) -> tuple[list[int], list[float], float]:
    """Commit (through ``commit()``) while every iterator waits; each iterator's next
    version, its delay after the commit was acknowledged, and the commit's own latency."""
    seen_at: dict[int, float] = {}

    def record(index: int) -> Callable[[object], None]:
        def done(_: object) -> None:
            seen_at.setdefault(index, time.perf_counter())

        return done

    tasks = []
    for index, iterator in enumerate(iterators):
        task = asyncio.ensure_future(anext(iterator))
        task.add_done_callback(record(index))
        tasks.append(task)
    # Let every iterator take its baseline (and Redis subscribers subscribe) first.
    await asyncio.sleep(0.2)
    started = time.perf_counter()
    await commit()
    acknowledged = time.perf_counter()
    versions = await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)
    delays = [max(0.0, seen_at[i] - acknowledged) for i in range(len(iterators))]
    return versions, delays, acknowledged - started


async def test_changes_reach_every_worker_within_100_ms(
    store: Store, store_backend: Backend
) -> None:
    # Eight server workers, each with its own store object, and one admin writer.
    watchers = [await opened(store_backend) for _ in range(8)]
    iterators = [w.changes() for w in watchers]
    delays: list[float] = []
    commit_latencies: list[float] = []
    try:
        for round_ in range(1, 6):

            async def commit(round_: int = round_) -> None:
                flag = Flag(version=round_)
                await store.commit([put_flag("a", flag)], [entry("a")])

            versions, round_delays, latency = await _next_versions(iterators, commit)
            assert versions == [round_] * len(watchers)
            delays.extend(round_delays)
            commit_latencies.append(latency)
    finally:
        for iterator in iterators:
            await iterator.aclose()  # type: ignore[attr-defined]
        for watcher in watchers:
            await watcher.close()
    print(
        f"\n[{store_backend.name}] changes(): median {statistics.median(delays) * 1000:.1f} ms,"
        f" max {max(delays) * 1000:.1f} ms after the commit returned, over {len(delays)}"
        f" notifications; commit median {statistics.median(commit_latencies) * 1000:.1f} ms"
    )
    assert max(delays) < CHANGE_BUDGET_S


async def test_changes_yield_only_new_versions(store: Store, store_backend: Backend) -> None:
    other = await opened(store_backend)
    iterator = store.changes()
    try:
        pending = asyncio.ensure_future(anext(iterator))
        await asyncio.sleep(0.2)
        # Writes that are not configuration must not wake every worker with a stale version.
        await other.heartbeat(WorkerStatus("host:8000", 1, 0, time.time()))
        await other.add_token(token("ci"))
        await asyncio.sleep(0.2)
        assert not pending.done()
        result = await other.commit([put_flag("a", Flag(version=1))], [])
        assert await asyncio.wait_for(pending, timeout=5) == result.snapshot_version
    finally:
        await iterator.aclose()  # type: ignore[attr-defined]
        await other.close()


async def test_changes_end_when_the_store_is_closed(store_backend: Backend) -> None:
    watcher = await opened(store_backend)
    iterator = watcher.changes()
    pending = asyncio.ensure_future(anext(iterator))
    await asyncio.sleep(0.1)
    await watcher.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(pending, timeout=5)


# -- several processes -----------------------------------------------------------------------

_INCREMENT_SCRIPT = """
    import asyncio, sys
    from flagport.engine import Flag
    from flagport_server.errors import VersionConflict
    from flagport_server.stores import open_store
    from flagport_server.stores.base import AuditEntry, Mutation

    async def main(url, rounds):
        store = open_store(url)
        await store.open()
        print("ready", flush=True)
        sys.stdin.readline()  # start together, so the commits really contend
        commits = conflicts = 0
        for _ in range(rounds):
            while True:  # read-modify-write with compare-and-set, retried on conflict
                flag = (await store.load()).document.flags["counter"]
                bumped = Flag(description=str(int(flag.description) + 1), version=flag.version + 1)
                mutation = Mutation(kind="flag", key="counter", op="put", value=bumped,
                                    expected_version=flag.version)
                audit = AuditEntry(actor="w", action="update", key="counter",
                                   at="2026-01-01T10:00:00Z")
                try:
                    await store.commit([mutation], [audit])
                except VersionConflict:
                    conflicts += 1
                    continue
                commits += 1
                break
        await store.close()
        print(commits, conflicts)

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def test_concurrent_committers_lose_no_update(store: Store, store_backend: Backend) -> None:
    workers, rounds = 8, 25
    await store.commit([put_flag("counter", Flag(description="0", version=1), None)], [])
    processes = [run_script(store_backend, _INCREMENT_SCRIPT, str(rounds)) for _ in range(workers)]
    for process in processes:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n", process.stderr
    release(processes)
    outputs = [process.communicate(timeout=120) for process in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
    commits = sum(int(out.split()[0]) for out, _ in outputs)
    conflicts = sum(int(out.split()[1]) for out, _ in outputs)
    state = await store.load()
    assert commits == workers * rounds
    assert state.document.flags["counter"].description == str(workers * rounds)
    assert state.document.flags["counter"].version == 1 + workers * rounds
    assert state.document.version == 1 + workers * rounds
    assert len(await store.audit(AuditQuery(key="counter", limit=1000))) == workers * rounds
    print(
        f"\n[{store_backend.name}] {commits} CAS commits by {workers} processes,"
        f" {conflicts} retries"
    )


async def test_tasks_sharing_one_store_lose_no_update(store: Store) -> None:
    await store.commit([put_flag("counter", Flag(description="0", version=1), None)], [])

    async def increment() -> None:
        while True:
            flag = (await store.load()).document.flags["counter"]
            bumped = Flag(description=str(int(flag.description) + 1), version=flag.version + 1)
            try:
                await store.commit([put_flag("counter", bumped, flag.version)], [])
                return
            except VersionConflict:
                continue

    await asyncio.gather(*(increment() for _ in range(30)))
    assert (await store.load()).document.flags["counter"].description == "30"


_OPEN_SCRIPT = """
    import asyncio, sys
    from flagport_server.stores import open_store

    async def main(url):
        store = open_store(url)
        sys.stdin.readline()
        await store.open()
        print((await store.snapshot_version())[0], flush=True)
        await store.close()

    asyncio.run(main(sys.argv[1]))
"""


async def test_workers_starting_at_once_share_one_store(store_backend: Backend) -> None:
    # Every server worker opens (and may initialise) the fresh store at the same moment.
    processes = [run_script(store_backend, _OPEN_SCRIPT) for _ in range(8)]
    release(processes)
    outputs = [process.communicate(timeout=60) for process in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
    store_ids = {out.strip() for out, _ in outputs}
    assert len(store_ids) == 1
    store = await opened(store_backend)
    try:
        assert await store.snapshot_version() == (store_ids.pop(), 0)
    finally:
        await store.close()


_COMMIT_FOREVER_SCRIPT = """
    import asyncio, sys
    from flagport.engine import Flag
    from flagport_server.stores import open_store
    from flagport_server.stores.base import Mutation

    async def main(url):
        store = open_store(url)
        await store.open()
        i = 0
        while True:
            mutation = Mutation(kind="flag", key=f"f{i}", op="put", value=Flag(version=1),
                                expected_version=None)
            result = await store.commit([mutation], [])
            print("ok", i, result.snapshot_version, flush=True)
            i += 1

    asyncio.run(main(sys.argv[1]))
"""


async def test_acknowledged_commits_survive_kill_9(store_backend: Backend) -> None:
    process = run_script(store_backend, _COMMIT_FOREVER_SCRIPT)
    acknowledged: list[tuple[int, int]] = []
    try:
        assert process.stdout is not None
        while len(acknowledged) < 100:
            line = process.stdout.readline()
            assert line, process.stderr.read() if process.stderr else "child exited"
            _, index, version = line.split()
            acknowledged.append((int(index), int(version)))
        # Killed mid-loop, most likely inside a commit: that one may or may not be there,
        # but every one it printed "ok" for must be.
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == -signal.SIGKILL

    store = await opened(store_backend)
    try:
        document = (await store.load()).document
    finally:
        await store.close()
    for number, _ in acknowledged:
        assert f"f{number}" in document.flags
    assert document.version >= acknowledged[-1][1]
    # Atomic: each commit added exactly one flag, so a half-applied commit would show here.
    assert len(document.flags) == document.version


async def test_unreachable_store_raises_store_unavailable_naming_it(
    store_backend: Backend,
) -> None:
    for url, location in store_backend.unreachable():
        store = open_store(url)
        with pytest.raises(StoreUnavailable) as caught:
            await store.open()
        assert location in str(caught.value), url
        with pytest.raises(StoreUnavailable):
            await store.load()
        with pytest.raises(StoreUnavailable):
            await store.commit([put_flag("a", Flag(version=1))], [])
        await store.close()


# -- SQLite only -----------------------------------------------------------------------------


async def test_sqlite_file_is_wal_with_full_sync(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "f.db")
    await store.open()
    try:
        # The store's own connection: synchronous is a per-connection setting.
        settings = store._run_read(
            lambda conn: (
                conn.execute("PRAGMA journal_mode").fetchone()[0],
                conn.execute("PRAGMA synchronous").fetchone()[0],
                conn.execute("PRAGMA busy_timeout").fetchone()[0],
            )
        )
        assert settings == ("wal", 2, 5000)  # 2 is FULL
        with sqlite3.connect(tmp_path / "f.db") as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # in the file
    finally:
        await store.close()


async def test_sqlite_store_starts_working_once_its_directory_exists(tmp_path: Path) -> None:
    # A server that started while the store was unreachable keeps polling the same object.
    store = SQLiteStore(tmp_path / "later" / "f.db")
    with pytest.raises(StoreUnavailable):
        await store.open()
    (tmp_path / "later").mkdir()
    assert (await store.load()).document.version == 0
    await store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.load()


async def test_sqlite_refuses_a_file_from_a_newer_flagport(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "f.db")
    await store.open()
    await store.close()
    with sqlite3.connect(tmp_path / "f.db") as conn:
        conn.execute("UPDATE meta SET schema_version = 99")
    conn.close()
    with pytest.raises(Exception, match="newer Flagport"):
        await SQLiteStore(tmp_path / "f.db").open()


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///flagport.db", "flagport.db"),
        ("sqlite:///./data/flagport.db", "./data/flagport.db"),
        ("sqlite:////var/lib/flagport/flagport.db", "/var/lib/flagport/flagport.db"),
        ("SQLITE:////tmp/x.db", "/tmp/x.db"),
    ],
)
def test_sqlite_urls(url: str, path: str) -> None:
    assert sqlite_path(url) == path


def test_relative_sqlite_paths_resolve_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///data/f.db")
    assert isinstance(store, SQLiteStore)
    assert store.path == tmp_path / "data" / "f.db"


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///:memory:",
        "sqlite://",
        "sqlite:///",
        "sqlite://host/flagport.db",
        "sqlite:///flagport.db?mode=ro",
        "sqlite:///file:x.db",
    ],
)
def test_bad_sqlite_urls_are_invalid_input(url: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        open_store(url)
    assert caught.value.path == "store_url"


@pytest.mark.parametrize("url", ["postgres://db/flags", "flagport.db", "mysql://u:secret@h/db"])
def test_unknown_schemes_list_the_supported_ones(url: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        open_store(url)
    message = str(caught.value)
    for scheme in ("sqlite://", "redis://", "rediss://", "redis+sentinel://"):
        assert scheme in message
    assert "secret" not in message


def test_redis_urls_need_the_redis_backend() -> None:
    if importlib.util.find_spec("flagport_server.stores.redis") is None:
        with pytest.raises(InvalidInput, match="Redis store"):
            open_store("redis://localhost:6379/0")
    else:
        assert open_store("redis://localhost:6379/0").kind.startswith("redis")

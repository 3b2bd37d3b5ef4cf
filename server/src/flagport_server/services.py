"""Admin operations: validate, build an atomic commit with audit entries, apply it.

Every change bumps the flag's version and the snapshot version and appends an audit entry
(who: the token's name; when; before; after; why). Read-modify-write operations retry on a
concurrent change; a ``PUT`` with ``If-Match`` never retries (PreconditionFailed instead).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import msgspec

from flagport import InvalidDocumentError
from flagport.document import load_document, read_document_file, strip_volatile
from flagport.durations import token_lifetime
from flagport.engine import (
    CompiledSnapshot,
    Flag,
    Rule,
    Segment,
    SnapshotDocument,
    check_document_limits,
    check_new_condition_values,
    check_percentage,
    explain,
    validate_key,
)
from flagport_server.approval_policy import blocked_changes, mark_break_glass
from flagport_server.audit import audit_entry
from flagport_server.auth import RESERVED_ACTORS, SEED_ACTOR, Actor
from flagport_server.errors import (
    AlreadyExists,
    ApprovalRequired,
    Conflict,
    InvalidInput,
    NotFound,
    PreconditionFailed,
    PreconditionRequired,
    StoreUnavailable,
    UnreadableRecord,
    VersionConflict,
    document_errors_as_input,
)
from flagport_server.plan_state import committed_plans
from flagport_server.plans import PlanService, PromqlLookup, human_wins, uses_segment
from flagport_server.recompile import (
    check_in_chunks,
    compile_in_chunks,
    discard_in_chunks,
    release_in_chunks,
)
from flagport_server.runtime import Runtime, committed_state, hash_secret
from flagport_server.stores.base import (
    SCOPE_MODEL,
    AuditEntry,
    AuditQuery,
    Mutation,
    StoreState,
    TokenRecord,
    TokenScope,
)
from flagport_server.token_expiry import expires_at_text
from flagport_server.wire.admin_v1 import FlagView, KeyDiff, PropagationView, SnapshotDiff

__all__ = ["AdminService", "flag_view", "utc_now"]

log = logging.getLogger("flagport.server")

_RETRIES = 20
#: Retired secret hashes kept per token (a rotated-away secret's 401 says it was rotated).
_RETIRED_KEPT = 5

#: A secret's prefix tells a reader (a secret scanner, an operator) its scope at a glance.
_SECRET_PREFIXES: dict[str, str] = {
    "evaluate": "fpe_",
    "sdk": "fps_",
    "viewer": "fpv_",
    "admin": "fpa_",
}


def utc_now() -> str:
    return (
        datetime.datetime.now(datetime.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def flag_view(key: str, flag: Flag) -> FlagView:
    return FlagView(key=key, **msgspec.structs.asdict(flag))


class AdminService:
    """The admin API's operations; one per app, sharing the worker's :class:`Runtime`."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        health: Callable[[str], int | None] | None = None,
        promql: PromqlLookup | None = None,
    ) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self._chunk = runtime.settings.compile_chunk_size
        #: Rollout plans: a person's operations, committed (and served) like every write.
        self.plans = PlanService(self.store, self._commit, time.time, health, promql)

    # -- reads --------------------------------------------------------------------------

    async def state(self) -> StoreState:
        """The stored configuration, with what cannot be read named apart."""
        return await self.store.load()

    async def hourly_evaluations(
        self, hours: int, now: float
    ) -> tuple[int, dict[str, dict[int, int]]]:
        """Every flag's evaluations per hour over the last ``hours`` hours up to ``now``
        (the current one included), in one store read: the first hour, and flag -> hour ->
        count."""
        current = int(now) - int(now) % 3600
        since = current - (hours - 1) * 3600
        return since, await self.store.hourly_counts(since, current + 3600)

    async def document(self) -> SnapshotDocument:
        return (await self.store.load()).document

    async def get_flag(self, key: str) -> tuple[Flag, int]:
        state = await self.state()
        flag = state.document.flags.get(key)
        if flag is None:
            _refuse_unreadable(state, "flag", key)
            raise NotFound(f"flag {key!r} not found")
        return flag, state.document.version

    async def get_segment(self, key: str) -> Segment:
        segment = (await self.document()).segments.get(key)
        if segment is None:
            raise NotFound(f"segment {key!r} not found")
        return segment

    async def tokens(self) -> list[TokenRecord]:
        """Every token, revoked ones too."""
        return await self.store.tokens()

    def explain(self, key: str, context: dict[str, Any]) -> dict[str, Any]:
        """How the served snapshot evaluates flag ``key`` for ``context``, step by step."""
        snapshot = self.runtime.snapshot
        if snapshot is None:
            raise StoreUnavailable("no snapshot loaded yet")
        if key not in snapshot:
            raise NotFound(f"flag {key!r} not found")
        return explain(snapshot, key, context, time.time())

    # -- writes -------------------------------------------------------------------------

    async def _validate(self, committed: StoreState, state: StoreState) -> CompiledSnapshot:
        """Refuse a change that breaks the configuration (unknown variant, segment or
        prerequisite, a cycle, ...); else ``committed`` (the store's state once the change
        is committed onto ``state``) compiled, in chunks that yield to the loop, which the
        worker then serves as it is: a write compiles once. Only problems the change
        introduces count: a problem the store already holds (an unreadable segment, say)
        must not block every other write, least of all one that repairs it."""
        candidate = committed.document
        with document_errors_as_input():
            # Every flag is counted: 30-40 ms for an import of 15,000, off the loop.
            await asyncio.to_thread(check_new_condition_values, candidate, state.document)
        compiled = await self.runtime.compile(committed)
        if not compiled.problems:
            return compiled
        known = await self._known_problems(state)
        new = [p for p in compiled.problems if (p.path, p.problem) not in known]
        if not new:
            return compiled
        if state.unreadable_flags or state.unreadable_segments:
            # What cannot be read is served as broken: judge the change without it, then
            # beside it as the store held it (the rule before a write compiled once).
            served = self.runtime.snapshot
            try:
                await check_in_chunks(candidate, previous=served, chunk_size=self._chunk)
                return compiled
            except InvalidDocumentError:
                pass
            after = await _compile_stored(candidate, state, served, self._chunk)
            new = [p for p in after.problems if (p.path, p.problem) not in known]
            await discard_in_chunks(after)
            if not new:
                return compiled
        raise InvalidInput.from_document(new[0])

    async def _known_problems(self, state: StoreState) -> set[tuple[str | None, str]]:
        """The problems the stored configuration already has."""
        served = self.runtime.snapshot
        if served is not None and served.version == state.document.version:
            return {(p.path, p.problem) for p in served.problems}
        before = await _compile_stored(state.document, state, served, self._chunk)
        known: set[tuple[str | None, str]] = {(p.path, p.problem) for p in before.problems}
        await discard_in_chunks(before)
        return known

    async def _commit(
        self,
        mutations: Sequence[Mutation],
        audit: Sequence[AuditEntry],
        committed: StoreState | None = None,
        compiled: CompiledSnapshot | None = None,
    ) -> int:
        """Commit, and serve the change from this worker at once (the others follow via
        notifications). ``committed``: the state the commit makes if nothing else is
        committed meanwhile (:func:`committed_state`), served without reading the store
        back when so; ``compiled``: that state compiled (by :meth:`_validate`).

        A person always wins over a rollout plan: a write that touches a plan's flag, an
        ancestor, a prerequisite or a segment it uses pauses the plan (deleting the flag
        aborts it) in this same commit (:func:`~flagport_server.plans.human_wins`); the
        person is the author of the write's audit entries.

        An approval policy holds here, for every write of a person (the admin API, the
        admin UI, imports, plan operations): :meth:`_approval_gate`."""
        audit = await self._approval_gate(mutations, audit)
        if committed is not None and audit and committed.plans:
            author = Actor(audit[0].actor, audit[0].token_id)
            added, entries = human_wins(committed, mutations, author, time.time())
            if added:
                mutations = [*mutations, *added]
                audit = [*audit, *entries]
                committed = msgspec.structs.replace(
                    committed, plans=committed_plans(committed.plans, added)
                )
        async with self.runtime.committing():
            result = await self.store.commit(mutations, audit)
            version = result.snapshot_version
            if committed is not None and version == committed.document.version:
                await self.runtime.apply_commit(committed, compiled)
            else:
                await self.runtime.reload(at_least=version)
        return version

    async def _approval_gate(
        self, mutations: Sequence[Mutation], audit: Sequence[AuditEntry]
    ) -> Sequence[AuditEntry]:
        """Refuse (:class:`ApprovalRequired`, nothing written) a write that does not reduce
        the exposure of a flag under an approval policy, unless it applies an approved change
        request (its entries name the request); mark what reduces it as break-glass. Without
        policies this costs one small read; with them, one load of the configuration."""
        if not audit or audit[0].request_id is not None or not mutations:
            return audit
        policies = await self.store.approval_policies()
        if not policies:
            return audit
        state = await self.store.load()
        blocked = blocked_changes(state, mutations, policies)
        if blocked:
            raise ApprovalRequired(
                f"{', '.join(blocked)}: under an approval policy, a change that does not reduce "
                "exposure needs a change request approved by a second person: file it with "
                "`flags request ... --reason ...` (POST /admin/v1/requests). Disabling, a "
                "kill, a lower percentage, pausing or aborting a rollout never wait"
            )
        return mark_break_glass(state, audit, policies)

    async def commit_audit(self, entry: AuditEntry) -> int:
        """Commit an audit entry that changes no record (a token, a policy, a request): the
        snapshot version it bumps makes every worker reload tokens and see the change."""
        return await self._commit([], [entry])

    async def create_flag(
        self, key: str, flag: Flag, actor: Actor, reason: str | None
    ) -> tuple[FlagView, int]:
        with document_errors_as_input():
            validate_key(key, "$.key")
        state = await self.state()
        document = state.document
        if key in document.flags or key in state.unreadable_flags:
            raise AlreadyExists(f"flag {key!r} already exists")
        now = utc_now()
        new = msgspec.structs.replace(flag, version=1, created_at=now, updated_at=now)
        mutations = [Mutation("flag", key, "put", new, None)]
        committed = _committed(state, mutations, flags={**document.flags, key: new})
        compiled = await self._validate(committed, state)
        entry = audit_entry(actor, "create", key, now, reason=reason, after=new)
        try:
            version = await self._commit(mutations, [entry], committed, compiled)
        except VersionConflict:
            raise AlreadyExists(f"flag {key!r} already exists") from None
        return flag_view(key, new), version

    async def replace_flag(
        self, key: str, flag: Flag, if_match: str | None, actor: Actor, reason: str | None
    ) -> tuple[FlagView, int]:
        if if_match is None:
            raise PreconditionRequired(
                f'replacing flag {key!r} needs an If-Match: "<version>" header (GET it first)'
            )
        expected = _parse_if_match(if_match)
        state = await self.state()
        document = state.document
        current = document.flags.get(key)
        if current is None:
            _refuse_unreadable(state, "flag", key)
            raise NotFound(f"flag {key!r} not found")
        if current.version != expected:
            raise PreconditionFailed("flag", key, expected, current.version)
        now = utc_now()
        new = msgspec.structs.replace(
            flag, version=current.version + 1, created_at=current.created_at, updated_at=now
        )
        mutations = [Mutation("flag", key, "put", new, expected)]
        committed = _committed(state, mutations, flags={**document.flags, key: new})
        compiled = await self._validate(committed, state)
        entry = audit_entry(actor, "update", key, now, reason=reason, before=current, after=new)
        try:
            version = await self._commit(mutations, [entry], committed, compiled)
        except VersionConflict as error:  # changed since it was read: If-Match fails
            raise PreconditionFailed("flag", key, expected, error.actual) from None
        return flag_view(key, new), version

    async def _update(
        self,
        keys: Callable[[StoreState], list[str]],
        change: Callable[[Flag], Flag],
        action: str,
        actor: Actor,
        reason: str | None,
        *,
        kill_switch: bool = False,
        expected: int | None = None,
    ) -> tuple[list[FlagView], int]:
        """Read-modify-write of several flags in one atomic commit, retried on conflicts.
        ``expected``: the one flag's version the change was asked on (an approved change
        request): another is :class:`PreconditionFailed`, never retried.

        A ``kill_switch`` change only turns flags off: it is neither validated against the
        rest of the configuration nor refused for limits, so it works whatever the store
        holds (docs/spec.md, "The kill switch")."""
        for _ in range(_RETRIES):
            state = await self.state()
            document = state.document
            selected = keys(state)
            if not selected:
                return [], document.version
            now = utc_now()
            mutations: list[Mutation] = []
            entries: list[AuditEntry] = []
            views: list[FlagView] = []
            flags = dict(document.flags)
            for key in selected:
                current = document.flags[key]
                if expected is not None and current.version != expected:
                    raise PreconditionFailed("flag", key, expected, current.version)
                changed = change(current)
                new = msgspec.structs.replace(changed, version=current.version + 1, updated_at=now)
                flags[key] = new
                mutations.append(
                    Mutation("flag", key, "put", new, current.version, kill_switch=kill_switch)
                )
                entries.append(
                    audit_entry(actor, action, key, now, reason=reason, before=current, after=new)
                )
                views.append(flag_view(key, new))
            committed = _committed(state, mutations, flags=flags)
            compiled = None if kill_switch else await self._validate(committed, state)
            try:
                version = await self._commit(mutations, entries, committed, compiled)
            except VersionConflict as error:
                if expected is not None:
                    raise PreconditionFailed("flag", error.key, expected, error.actual) from None
                continue
            return views, version
        raise Conflict("too many concurrent changes; try again")

    async def _update_one(
        self,
        key: str,
        change: Callable[[Flag], Flag],
        action: str,
        actor: Actor,
        reason: str | None,
        expected: int | None = None,
    ) -> tuple[FlagView, int]:
        """:meth:`_update` of one existing flag (at version ``expected``, if given)."""
        views, version = await self._update(
            self._existing([key]), change, action, actor, reason, expected=expected
        )
        return views[0], version

    async def enable(
        self,
        key: str,
        percentage: float | None,
        actor: Actor,
        reason: str | None,
        expected: int | None = None,
    ) -> tuple[FlagView, int]:
        if percentage is not None:
            with document_errors_as_input():
                check_percentage(percentage, "$.percentage")

        def change(flag: Flag) -> Flag:
            return msgspec.structs.replace(
                flag,
                enabled=True,
                percentage=flag.percentage if percentage is None else float(percentage),
            )

        return await self._update_one(key, change, "enable", actor, reason, expected)

    async def disable(
        self, keys: list[str], actor: Actor, reason: str | None
    ) -> tuple[list[FlagView], int]:
        return await self._update(
            self._existing(keys), _disabled, "disable", actor, reason, kill_switch=True
        )

    async def kill(
        self, keys: list[str] | None, tag: str | None, everything: bool, actor: Actor, reason: str
    ) -> tuple[list[FlagView], int, list[str]]:
        """Disable the flags named, tagged, or all of them in one commit: (changed flags,
        snapshot version, stored flags that could not be read and so were not disabled).

        An unreadable flag never stops the others from being turned off; it is named so
        that the caller can say the kill was not complete (it already serves PARSE_ERROR,
        so every client uses its code default for it)."""
        if sum((keys is not None, tag is not None, everything)) != 1:
            raise InvalidInput("name exactly one of keys, tag or all", "$")
        skipped: list[str] = []

        def select(state: StoreState) -> list[str]:
            document = state.document
            if keys is not None:
                for key in keys:
                    if key not in document.flags and key not in state.unreadable_flags:
                        raise NotFound(f"flag {key!r} not found")
                found = [k for k in dict.fromkeys(keys) if k in document.flags]
                skipped[:] = [k for k in dict.fromkeys(keys) if k in state.unreadable_flags]
                return found
            # Whether an unreadable flag has the tag cannot be known: name every one.
            skipped[:] = sorted(state.unreadable_flags)
            if tag is not None:
                found = [k for k, f in document.flags.items() if tag in f.tags]
                if not found and not skipped:
                    raise NotFound(f"no flag has tag {tag!r}")
                return found
            return list(document.flags)

        views, version = await self._update(
            select, _disabled, "kill", actor, reason, kill_switch=True
        )
        return views, version, skipped

    @staticmethod
    def _existing(keys: list[str]) -> Callable[[StoreState], list[str]]:
        def select(state: StoreState) -> list[str]:
            for key in keys:
                if key not in state.document.flags:
                    _refuse_unreadable(state, "flag", key)
                    raise NotFound(f"flag {key!r} not found")
            return list(dict.fromkeys(keys))

        return select

    async def delete_flag(
        self, key: str, recursive: bool, actor: Actor, reason: str | None
    ) -> tuple[list[str], int]:
        state = await self.state()
        document = state.document
        stored = document.flags.keys() | state.unreadable_flags.keys()
        if key not in stored:
            raise NotFound(f"flag {key!r} not found")
        # Deleting is one of the two repairs of an unreadable flag (an import is the other),
        # so unreadable flags are deleted like any other, without a version guard.
        children = sorted(k for k in stored if k.startswith(key + "."))
        if children and not recursive:
            raise Conflict(
                f"flag {key!r} has {len(children)} child flag(s) ({', '.join(children[:5])}); "
                "delete with ?recursive=true to remove them too"
            )
        doomed = [key, *children]
        dependants = sorted(
            k
            for k, f in document.flags.items()
            if k not in doomed and any(p.key in doomed for p in f.prerequisites)
        )
        if dependants:
            raise Conflict(f"flag(s) {', '.join(dependants)} have {key!r} as a prerequisite")
        now = utc_now()
        mutations = [Mutation("flag", k, "delete", None, _stored_version(state, k)) for k in doomed]
        entries = [
            audit_entry(actor, "delete", k, now, reason=reason, before=document.flags.get(k))
            for k in doomed
        ]
        flags = {k: f for k, f in document.flags.items() if k not in doomed}
        try:
            version = await self._commit(mutations, entries, _committed(state, mutations, flags))
        except VersionConflict as error:
            raise Conflict(f"concurrent change: {error.detail}; try again") from None
        return doomed, version

    # -- targeting ----------------------------------------------------------------------

    async def set_targets(
        self,
        key: str,
        targets: dict[str, list[str]],
        actor: Actor,
        reason: str | None,
        expected: int | None = None,
    ) -> tuple[FlagView, int]:
        def change(flag: Flag) -> Flag:
            return msgspec.structs.replace(flag, targets=targets)

        return await self._update_one(key, change, "targets", actor, reason, expected)

    async def set_rules(
        self,
        key: str,
        rules: list[Rule],
        actor: Actor,
        reason: str | None,
        expected: int | None = None,
    ) -> tuple[FlagView, int]:
        def change(flag: Flag) -> Flag:
            return msgspec.structs.replace(flag, rules=rules)

        return await self._update_one(key, change, "rules", actor, reason, expected)

    # -- segments -----------------------------------------------------------------------

    async def put_segment(
        self, key: str, segment: Segment, if_match: str | None, actor: Actor, reason: str | None
    ) -> tuple[Segment, int, bool]:
        """Create or replace a segment: (segment, snapshot version, created)."""
        with document_errors_as_input():
            validate_key(key, "$.key")
        state = await self.state()
        document = state.document
        current = document.segments.get(key)
        if if_match is not None:
            # If-Match names the version the caller saw: a segment that does not exist
            # (deleted meanwhile, or a typo) is a failed precondition too, not a creation.
            expected = _parse_if_match(if_match)
            actual = None if current is None else current.version
            if actual != expected:
                raise PreconditionFailed("segment", key, expected, actual)
        now = utc_now()
        new = msgspec.structs.replace(
            segment, version=(current.version if current else 0) + 1, updated_at=now
        )
        # A PUT over an unreadable segment repairs it.
        guard = _stored_version(state, key, "segment")
        mutations = [Mutation("segment", key, "put", new, guard)]
        committed = _committed(state, mutations, segments={**document.segments, key: new})
        compiled = await self._validate(committed, state)
        entry = audit_entry(
            actor, "segment.put", key, now, kind="segment", reason=reason, before=current, after=new
        )
        try:
            version = await self._commit(mutations, [entry], committed, compiled)
        except VersionConflict as error:
            if if_match is not None:  # the version If-Match named is gone
                raise PreconditionFailed("segment", key, error.expected, error.actual) from None
            raise Conflict(f"concurrent change: {error.detail}; try again") from None
        return new, version, current is None

    async def delete_segment(self, key: str, actor: Actor, reason: str | None) -> int:
        state = await self.state()
        document = state.document
        current = document.segments.get(key)
        if current is None and key not in state.unreadable_segments:
            raise NotFound(f"segment {key!r} not found")
        users = sorted(k for k, f in document.flags.items() if uses_segment(f, key))
        if users:
            raise Conflict(f"segment {key!r} is used by flag(s) {', '.join(users)}")
        entry = audit_entry(
            actor, "segment.delete", key, utc_now(), kind="segment", reason=reason, before=current
        )
        guard = _stored_version(state, key, "segment")
        mutations = [Mutation("segment", key, "delete", None, guard)]
        segments = {k: g for k, g in document.segments.items() if k != key}
        try:
            return await self._commit(
                mutations, [entry], _committed(state, mutations, segments=segments)
            )
        except VersionConflict as error:
            raise Conflict(f"concurrent change: {error.detail}; try again") from None

    # -- config as code -----------------------------------------------------------------

    async def import_document(
        self,
        incoming: SnapshotDocument,
        *,
        dry_run: bool,
        prune: bool,
        actor: Actor,
        reason: str | None,
        expect_versions: bool = False,
    ) -> tuple[SnapshotDiff, int]:
        """Make the store match ``incoming`` (all or nothing) and return the diff. With
        ``prune`` (the default) flags and segments missing from ``incoming`` are deleted.

        ``expect_versions`` (a merging import only: ``flags promote``): each flag and segment
        of ``incoming`` carries the version its sender last saw here (0: none), and the
        import applies only while every one it changes is still at that version; otherwise
        :class:`PreconditionFailed` names the first that moved, and nothing is applied.

        ``incoming`` must be valid on its own. With ``prune`` the result of the import *is*
        ``incoming`` (versions and timestamps aside), so compiling the result checks it and
        gives what the worker then serves: one compile per import. Without it the result
        keeps other stored flags and is checked as any other change, after ``incoming``.
        Comparing, stamping and checking 15,000 flags takes a few hundred milliseconds: off
        the loop or in chunks, so evaluations go on meanwhile (docs/spec.md section 6); so
        is freeing what it made and replaced, ``incoming`` included: the import consumes
        it (its flags are gone once it is applied)."""
        # Compiled from the snapshot served at each step, never a name kept for it: the one
        # an import replaces is freed in chunks once nothing refers to it (Runtime.apply).
        runtime = self.runtime
        if expect_versions and prune:
            raise InvalidInput(
                "expect_versions needs prune=false: only a merging import names every "
                "record it changes",
                path="expect_versions",
            )
        with document_errors_as_input():
            await asyncio.to_thread(check_document_limits, incoming)
            if dry_run or not prune:
                await check_in_chunks(incoming, previous=runtime.snapshot, chunk_size=self._chunk)
        for _ in range(_RETRIES):
            state = await self.state()
            document = state.document
            diff, mutations, entries, committed = await asyncio.to_thread(
                _plan_import, state, incoming, prune, actor, reason, expect_versions
            )
            if dry_run:
                await release_in_chunks(entries)
                await release_in_chunks(incoming.flags)
                return diff, document.version
            if committed is None:  # nothing to change
                if prune:
                    with document_errors_as_input():
                        await check_in_chunks(
                            incoming, previous=runtime.snapshot, chunk_size=self._chunk
                        )
                return diff, document.version
            if prune:
                compiled = await self.runtime.compile(committed)
                if compiled.problems:
                    # Refused as the document it is, by the engine's own first problem.
                    with document_errors_as_input():
                        await check_in_chunks(
                            incoming, previous=runtime.snapshot, chunk_size=self._chunk
                        )
                    raise InvalidInput.from_document(compiled.problems[0])
                with document_errors_as_input():
                    await asyncio.to_thread(
                        check_new_condition_values, committed.document, document
                    )
            else:
                # The merged result (it keeps extra flags) must be valid too.
                compiled = await self._validate(committed, state)
            try:
                version = await self._commit(mutations, entries, committed, compiled)
            except VersionConflict as error:
                if expect_versions:  # the sender's versions, not ours: retrying cannot help
                    raise PreconditionFailed(
                        error.kind, error.key, error.expected, error.actual
                    ) from None
                continue
            served = runtime.snapshot
            if served is not compiled:
                # The worker's own change notification applied this version first, from the
                # store: what was compiled here was never served. Dropped at once, 15,000
                # flags and their document hold the loop for ~0.1 s (measured).
                await discard_in_chunks(compiled)
                if served is None or served.document is not committed.document:
                    await release_in_chunks(committed.document.flags)
            del served
            # An audit entry per flag, with its body before and after as exported, and the
            # configuration replaced: freed at once, 15,000 flags' worth holds the loop for
            # tens of ms (docs/adr/0020-incremental-compile.md).
            await release_in_chunks(entries)
            await release_in_chunks(mutations)
            await release_in_chunks(state.document.flags)
            await release_in_chunks(incoming.flags)  # the import consumes it
            return diff, version
        raise Conflict("too many concurrent changes; try again")

    async def seed(self, path: str) -> None:
        """Load the document at ``path`` into an empty store (``--seed``: ``make run``'s
        portal flags); a store that has anything, or another worker seeding first, wins."""
        snapshot = self.runtime.snapshot
        if snapshot is None or len(snapshot) or snapshot.document.segments or snapshot.version:
            return
        document = load_document(read_document_file(path))
        now = utc_now()
        mutations: list[Mutation] = []
        for key, segment in document.segments.items():
            stamped_segment = msgspec.structs.replace(segment, version=1, updated_at=now)
            mutations.append(Mutation("segment", key, "put", stamped_segment, None))
        for key, flag in document.flags.items():
            stamped = msgspec.structs.replace(flag, version=1, created_at=now, updated_at=now)
            mutations.append(Mutation("flag", key, "put", stamped, None))
        entry = audit_entry(
            Actor(SEED_ACTOR), "import", "*", now, kind="snapshot", reason=f"seeded from {path}"
        )
        try:
            await self._commit(mutations, [entry])
        except VersionConflict:
            # Another worker seeded first: serve what it seeded now, not the empty store this
            # worker loaded until the next poll (up to a second of empty answers, which a
            # client's first requests got: tests/server/test_stats_live.py once counted 0).
            await self.runtime.reload()
            return
        log.info("seeded %d flags from %s", len(document.flags), path)

    # -- tokens -------------------------------------------------------------------------

    async def create_token(
        self, name: str, scope: TokenScope, actor: Actor, expires: str | None = None
    ) -> tuple[TokenRecord, str, int]:
        """A new token, its secret, and the snapshot version from which every worker accepts
        it (wait on the propagation registry for it). Its name must be free: the store
        refuses a name any token (revoked ones too) has, so an audit entry's actor names one
        token only. ``expires`` (``90d``): a personal token's lifetime, read by
        :func:`flagport.durations.token_lifetime`; ``None``: it never expires."""
        if name.lower() in RESERVED_ACTORS:
            raise InvalidInput(
                f"token name {name!r} is reserved: audit entries by {name.lower()!r} are "
                "the bootstrap token's (FLAGPORT_ADMIN_TOKEN) or --seed's; choose another",
                "$.name",
            )
        lifetime = _lifetime(expires)
        secret = _new_secret(scope)
        now = time.time()
        record = TokenRecord(
            id=secrets.token_hex(8),
            name=name,
            scope=scope,
            secret_hash=hash_secret(secret),
            created_at=utc_now(),
            scope_model=SCOPE_MODEL,
            expires_at=None if lifetime is None else expires_at_text(now, lifetime),
            lifetime_s=lifetime,
        )
        await self.store.add_token(record)
        # An empty commit bumps the snapshot version so every worker reloads its tokens.
        entry = audit_entry(
            actor,
            "token.create",
            record.id,
            record.created_at,
            kind="token",
            after=_token_body(record),
        )
        version = await self._commit([], [entry])
        return record, secret, version

    async def rotate_token(
        self, token_id: str, actor: Actor, expires: str | None, reason: str | None
    ) -> tuple[TokenRecord, str, int]:
        """A new secret for token ``token_id`` (same id, name and scope, so its audit trail
        goes on): the old secret stops working once every worker has applied the snapshot
        version returned (wait for it like for a revocation). ``expires``: the new lifetime;
        ``None`` keeps the token's lifetime, counted from now (an expired personal token is
        renewed by rotating it). A revoked token cannot be rotated."""
        lifetime = _lifetime(expires)
        for _ in range(_RETRIES):
            current = next((t for t in await self.store.tokens() if t.id == token_id), None)
            if current is None:
                raise NotFound(f"token {token_id!r} not found")
            if current.revoked_at is not None:
                raise Conflict(
                    f"token {current.name!r} was revoked at {current.revoked_at}: create a new one"
                )
            secret = _new_secret(current.scope)
            now_text, now = utc_now(), time.time()
            keep = lifetime if lifetime is not None else current.lifetime_s
            rotated = msgspec.structs.replace(
                current,
                secret_hash=hash_secret(secret),
                expires_at=None if keep is None else expires_at_text(now, keep),
                lifetime_s=keep,
                rotated_at=now_text,
                retired_hashes=(current.secret_hash, *current.retired_hashes)[:_RETIRED_KEPT],
            )
            if not await self.store.rotate_token(rotated, current.secret_hash):
                continue  # rotated or revoked meanwhile: read it again
            entry = audit_entry(
                actor,
                "token.rotate",
                token_id,
                now_text,
                kind="token",
                reason=reason,
                before=_token_body(current),
                after=_token_body(rotated),
            )
            return rotated, secret, await self._commit([], [entry])
        raise Conflict("too many concurrent changes; try again")

    async def revoke_token(self, token_id: str, actor: Actor) -> tuple[TokenRecord, int]:
        """Revoke; the snapshot version that carries it (wait for it like for a disable:
        until every worker has applied it, some may still accept the token)."""
        now = utc_now()
        record = await self.store.revoke_token(token_id, now)
        if record is None:
            raise NotFound(f"token {token_id!r} not found")
        entry = audit_entry(
            actor,
            "token.revoke",
            token_id,
            now,
            kind="token",
            before=_token_body(record),
        )
        return record, await self._commit([], [entry])

    async def rotate_server_secret(
        self, actor: Actor, reason: str | None = None
    ) -> tuple[str, int]:
        """Replace the server secret (stream tickets, sessions); when, and the snapshot
        version every worker reads the new one at (the audit entry records who, never the
        value)."""
        now = utc_now()
        await self.store.rotate_server_secret()
        # Kind "token": the secret signs what stands in for tokens, and older servers sharing
        # the store read the entry (a new kind would be unknown to them).
        entry = audit_entry(
            actor, "secret.rotate", "server-secret", now, kind="token", reason=reason
        )
        return now, await self._commit([], [entry])

    async def record_entries(self, entries: Sequence[AuditEntry]) -> int:
        """Commit audit entries that change no flag (a webhook added, a notice): the
        snapshot version that carries them (each commit makes one)."""
        return await self._commit([], entries)

    # -- history and propagation --------------------------------------------------------

    async def audit(self, query: AuditQuery) -> list[AuditEntry]:
        return await self.store.audit(query)

    async def propagation(self, version: int) -> PropagationView:
        workers = await self.store.workers(self.runtime.settings.worker_max_age, time.time())
        stragglers = [w for w in workers if w.applied_version < version]
        return PropagationView(
            version=version, complete=not stragglers, workers=workers, stragglers=stragglers
        )


def _plan_import(
    state: StoreState,
    incoming: SnapshotDocument,
    prune: bool,
    actor: Actor,
    reason: str | None,
    expect_versions: bool = False,
) -> tuple[SnapshotDiff, list[Mutation], list[AuditEntry], StoreState | None]:
    """What importing ``incoming`` over ``state`` changes: the diff, the guarded mutations
    and audit entries that make it, and the store's state once they are committed
    (:func:`_committed`; ``None``: the import changes nothing). Each mutation is guarded by
    the stored version, or with ``expect_versions`` by the one ``incoming`` carries (0: the
    record must not exist), checked here first so a moved record is named before anything
    is compiled. Run in a thread: for 15,000 flags, each step (the stamping, the sort of
    the result) is tens of ms."""
    document = state.document
    diff = diff_documents(state, incoming, prune=prune)
    now = utc_now()
    mutations: list[Mutation] = []
    entries: list[AuditEntry] = []
    flags = dict(document.flags)
    segments = dict(document.segments)
    if diff.empty:
        return diff, mutations, entries, None

    def record(kind: Literal["flag", "segment"], key: str, old: Any, new: Any) -> None:
        guard = _stored_version(state, key, kind)
        if expect_versions:
            sent = (incoming.flags if kind == "flag" else incoming.segments)[key].version
            expected = sent or None
            if expected != guard:
                raise PreconditionFailed(kind, key, expected, guard)
            guard = expected
        mutation, entry = _import_change(kind, key, guard, old, new, actor, reason, now)
        mutations.append(mutation)
        entries.append(entry)

    for key in diff.segments.added + diff.segments.changed:
        old_segment = document.segments.get(key)
        segments[key] = msgspec.structs.replace(
            incoming.segments[key],
            version=(old_segment.version if old_segment else 0) + 1,
            updated_at=now,
        )
        record("segment", key, old_segment, segments[key])
    for key in diff.flags.added + diff.flags.changed:
        old = document.flags.get(key)
        flags[key] = msgspec.structs.replace(
            incoming.flags[key],
            version=(old.version if old else 0) + 1,
            created_at=old.created_at if old else now,
            updated_at=now,
        )
        record("flag", key, old, flags[key])
    for key in diff.flags.removed:
        record("flag", key, flags.pop(key, None), None)
    for key in diff.segments.removed:
        record("segment", key, segments.pop(key, None), None)
    # The merged result (with pruning off it keeps extra flags) must be valid too.
    return diff, mutations, entries, _committed(state, mutations, flags, segments)


def _import_change(
    kind: Literal["flag", "segment"],
    key: str,
    guard: int | None,
    old: Flag | Segment | None,
    new: Flag | Segment | None,
    actor: Actor,
    reason: str | None,
    now: str,
) -> tuple[Mutation, AuditEntry]:
    """The guarded mutation and the audit entry for one key an import changes."""
    mutation = Mutation(kind, key, "delete" if new is None else "put", new, guard)
    entry = audit_entry(actor, "import", key, now, kind=kind, reason=reason, before=old, after=new)
    return mutation, entry


def _committed(
    state: StoreState,
    mutations: Sequence[Mutation],
    flags: dict[str, Flag] | None = None,
    segments: dict[str, Segment] | None = None,
) -> StoreState:
    """The store's state once ``mutations`` are committed onto ``state`` (with nothing else
    committed meanwhile): its configuration with ``flags`` and ``segments`` (``None``: as
    they are), at the next snapshot version."""
    document = state.document
    candidate = msgspec.structs.replace(
        document,
        flags=document.flags if flags is None else flags,
        segments=document.segments if segments is None else segments,
    )
    return committed_state(state, mutations, candidate, document.version + 1)


async def _compile_stored(
    document: SnapshotDocument,
    state: StoreState,
    previous: CompiledSnapshot | None,
    chunk_size: int | None,
) -> CompiledSnapshot:
    """``document`` compiled beside what ``state`` holds but cannot read."""
    return await compile_in_chunks(
        document,
        previous=previous,
        unreadable_flags=state.unreadable_flags,
        unreadable_segments=state.unreadable_segments,
        chunk_size=chunk_size,
    )


def _refuse_unreadable(state: StoreState, kind: Literal["flag", "segment"], key: str) -> None:
    """Raise :class:`UnreadableRecord` if the store holds ``key`` but cannot read it."""
    unreadable = state.unreadable_flags if kind == "flag" else state.unreadable_segments
    why = unreadable.get(key)
    if why is not None:
        raise UnreadableRecord(kind, key, why)


def _stored_version(
    state: StoreState, key: str, kind: Literal["flag", "segment"] = "flag"
) -> int | None:
    """The compare-and-set guard for replacing or deleting ``key``: its version, ``None``
    (must not exist) when absent, ``-1`` (any) when it is stored but cannot be read."""
    document = state.document
    stored: Flag | Segment | None = (
        document.flags.get(key) if kind == "flag" else document.segments.get(key)
    )
    if stored is not None:
        return stored.version
    unreadable = state.unreadable_flags if kind == "flag" else state.unreadable_segments
    return -1 if key in unreadable else None


def diff_documents(
    current: StoreState, incoming: SnapshotDocument, *, prune: bool = True
) -> SnapshotDiff:
    """What importing ``incoming`` would change, ignoring versions and timestamps. A stored
    flag or segment that cannot be read counts as different from whatever is imported."""
    old, new = strip_volatile(current.document), strip_volatile(incoming)
    unreadable: Any = object()  # equal to nothing imported
    old_flags = {**dict.fromkeys(current.unreadable_flags, unreadable), **old.flags}
    old_segments = {**dict.fromkeys(current.unreadable_segments, unreadable), **old.segments}

    def keys(before: dict[str, Any], after: dict[str, Any]) -> KeyDiff:
        return KeyDiff(
            added=sorted(set(after) - set(before)),
            changed=sorted(k for k in set(after) & set(before) if before[k] != after[k]),
            removed=sorted(set(before) - set(after)) if prune else [],
        )

    return SnapshotDiff(flags=keys(old_flags, new.flags), segments=keys(old_segments, new.segments))


def _new_secret(scope: TokenScope) -> str:
    return _SECRET_PREFIXES[scope] + secrets.token_urlsafe(32)


def _lifetime(expires: str | None) -> int | None:
    """Seconds of a token's ``expires`` (``None``: none given); 400 naming the field."""
    if expires is None:
        return None
    try:
        return token_lifetime(expires)
    except ValueError as error:
        raise InvalidInput(str(error), "$.expires") from None


def _token_body(token: TokenRecord) -> dict[str, Any]:
    """A token as its audit entries record it: never a secret or its hash."""
    body: dict[str, Any] = {"name": token.name, "scope": token.scope}
    if token.expires_at is not None:
        body["expires_at"] = token.expires_at
    return body


def _disabled(flag: Flag) -> Flag:
    return msgspec.structs.replace(flag, enabled=False)


def _parse_if_match(value: str) -> int:
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    try:
        return int(text)
    except ValueError:
        raise InvalidInput(
            f'If-Match must be a flag version such as "3", got {value!r}', "If-Match"
        ) from None

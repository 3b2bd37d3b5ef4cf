"""Admin operations: validate, build an atomic commit with audit entries, apply it.

Every change bumps the flag's version and the snapshot version and appends an audit entry
(who: the token's name; when; before; after; why). Read-modify-write operations retry on a
concurrent change; a ``PUT`` with ``If-Match`` never retries (412 instead).
"""

from __future__ import annotations

import datetime
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import msgspec

from flagport._exceptions import InvalidDocumentError
from flagport.document import strip_volatile
from flagport.engine import Flag, Rule, Segment, SnapshotDocument, compile_snapshot, validate_key
from flagport.engine._compile import check_percentage
from flagport_server.errors import (
    AlreadyExists,
    Conflict,
    InvalidInput,
    NotFound,
    PreconditionRequired,
    VersionConflict,
)
from flagport_server.state import Runtime, hash_secret
from flagport_server.stores.base import AuditEntry, AuditQuery, Mutation, TokenRecord
from flagport_server.wire.admin_v1 import FlagView, KeyDiff, PropagationView, SnapshotDiff

__all__ = ["AdminService", "flag_view", "utc_now"]

_RETRIES = 20
_VOLATILE = {"version", "created_at", "updated_at"}


def utc_now() -> str:
    return (
        datetime.datetime.now(datetime.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def flag_view(key: str, flag: Flag) -> FlagView:
    return FlagView(key=key, **msgspec.structs.asdict(flag))


def _body(flag: Flag | Segment | None) -> dict[str, Any] | None:
    return None if flag is None else msgspec.to_builtins(flag)


class AdminService:
    """The admin API's operations; one per app, sharing the worker's :class:`Runtime`."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.store = runtime.store

    # -- reads --------------------------------------------------------------------------

    async def document(self) -> SnapshotDocument:
        return (await self.store.load()).document

    async def get_flag(self, key: str) -> tuple[Flag, int]:
        document = await self.document()
        flag = document.flags.get(key)
        if flag is None:
            raise NotFound(f"flag {key!r} not found")
        return flag, document.version

    # -- writes -------------------------------------------------------------------------

    def _validate(self, document: SnapshotDocument) -> None:
        try:
            compile_snapshot(document, strict=True)
        except InvalidDocumentError as error:
            raise InvalidInput(error.problem, error.path) from None

    async def _commit(self, mutations: Sequence[Mutation], audit: Sequence[AuditEntry]) -> int:
        result = await self.store.commit(mutations, audit)
        # Serve the change from this worker at once; the others follow via notifications.
        await self.runtime.reload(at_least=result.snapshot_version)
        return result.snapshot_version

    async def create_flag(
        self, key: str, flag: Flag, actor: str, reason: str | None
    ) -> tuple[FlagView, int]:
        try:
            validate_key(key, "$.key")
        except InvalidDocumentError as error:
            raise InvalidInput(error.problem, error.path) from None
        document = await self.document()
        if key in document.flags:
            raise AlreadyExists(f"flag {key!r} already exists")
        now = utc_now()
        new = msgspec.structs.replace(flag, version=1, created_at=now, updated_at=now)
        candidate = msgspec.structs.replace(document, flags={**document.flags, key: new})
        self._validate(candidate)
        entry = AuditEntry(
            actor=actor, action="create", key=key, at=now, reason=reason, after=_body(new)
        )
        try:
            version = await self._commit([Mutation("flag", key, "put", new, None)], [entry])
        except VersionConflict:
            raise AlreadyExists(f"flag {key!r} already exists") from None
        return flag_view(key, new), version

    async def replace_flag(
        self, key: str, flag: Flag, if_match: str | None, actor: str, reason: str | None
    ) -> tuple[FlagView, int]:
        if if_match is None:
            raise PreconditionRequired(
                f'replacing flag {key!r} needs an If-Match: "<version>" header (GET it first)'
            )
        expected = _parse_if_match(if_match)
        document = await self.document()
        current = document.flags.get(key)
        if current is None:
            raise NotFound(f"flag {key!r} not found")
        if current.version != expected:
            raise VersionConflict("flag", key, expected, current.version)
        now = utc_now()
        new = msgspec.structs.replace(
            flag, version=current.version + 1, created_at=current.created_at, updated_at=now
        )
        candidate = msgspec.structs.replace(document, flags={**document.flags, key: new})
        self._validate(candidate)
        entry = AuditEntry(
            actor=actor,
            action="update",
            key=key,
            at=now,
            reason=reason,
            before=_body(current),
            after=_body(new),
        )
        version = await self._commit([Mutation("flag", key, "put", new, expected)], [entry])
        return flag_view(key, new), version

    async def _update(
        self,
        keys: Callable[[SnapshotDocument], list[str]],
        change: Callable[[Flag], Flag],
        action: str,
        actor: str,
        reason: str | None,
    ) -> tuple[list[FlagView], int]:
        """Read-modify-write of several flags in one atomic commit, retried on conflicts."""
        for _ in range(_RETRIES):
            document = await self.document()
            selected = keys(document)
            now = utc_now()
            mutations: list[Mutation] = []
            entries: list[AuditEntry] = []
            views: list[FlagView] = []
            flags = dict(document.flags)
            for key in selected:
                current = document.flags[key]
                changed = change(current)
                new = msgspec.structs.replace(changed, version=current.version + 1, updated_at=now)
                flags[key] = new
                mutations.append(Mutation("flag", key, "put", new, current.version))
                entries.append(
                    AuditEntry(
                        actor=actor,
                        action=action,
                        key=key,
                        at=now,
                        reason=reason,
                        before=_body(current),
                        after=_body(new),
                    )
                )
                views.append(flag_view(key, new))
            self._validate(msgspec.structs.replace(document, flags=flags))
            try:
                version = await self._commit(mutations, entries)
            except VersionConflict:
                continue
            return views, version
        raise Conflict("too many concurrent changes; try again")

    async def _update_one(
        self, key: str, change: Callable[[Flag], Flag], action: str, actor: str, reason: str | None
    ) -> tuple[FlagView, int]:
        """:meth:`_update` of one existing flag."""
        views, version = await self._update(self._existing([key]), change, action, actor, reason)
        return views[0], version

    async def enable(
        self, key: str, percentage: float | None, actor: str, reason: str | None
    ) -> tuple[FlagView, int]:
        if percentage is not None:
            try:
                check_percentage(percentage, "$.percentage")
            except InvalidDocumentError as error:
                raise InvalidInput(error.problem, error.path) from None

        def change(flag: Flag) -> Flag:
            return msgspec.structs.replace(
                flag,
                enabled=True,
                percentage=flag.percentage if percentage is None else float(percentage),
            )

        return await self._update_one(key, change, "enable", actor, reason)

    async def disable(
        self, keys: list[str], actor: str, reason: str | None
    ) -> tuple[list[FlagView], int]:
        return await self._update(self._existing(keys), _disabled, "disable", actor, reason)

    async def kill(
        self, keys: list[str] | None, tag: str | None, everything: bool, actor: str, reason: str
    ) -> tuple[list[FlagView], int]:
        if sum((keys is not None, tag is not None, everything)) != 1:
            raise InvalidInput("name exactly one of keys, tag or all", "$")

        def select(document: SnapshotDocument) -> list[str]:
            if keys is not None:
                return self._existing(keys)(document)
            if tag is not None:
                found = [k for k, f in document.flags.items() if tag in f.tags]
                if not found:
                    raise NotFound(f"no flag has tag {tag!r}")
                return found
            return list(document.flags)

        return await self._update(select, _disabled, "kill", actor, reason)

    @staticmethod
    def _existing(keys: list[str]) -> Callable[[SnapshotDocument], list[str]]:
        def select(document: SnapshotDocument) -> list[str]:
            for key in keys:
                if key not in document.flags:
                    raise NotFound(f"flag {key!r} not found")
            return list(dict.fromkeys(keys))

        return select

    async def delete_flag(
        self, key: str, recursive: bool, actor: str, reason: str | None
    ) -> tuple[list[str], int]:
        document = await self.document()
        current = document.flags.get(key)
        if current is None:
            raise NotFound(f"flag {key!r} not found")
        children = sorted(k for k in document.flags if k.startswith(key + "."))
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
        mutations = [Mutation("flag", k, "delete", None, document.flags[k].version) for k in doomed]
        entries = [
            AuditEntry(
                actor=actor,
                action="delete",
                key=k,
                at=now,
                reason=reason,
                before=_body(document.flags[k]),
            )
            for k in doomed
        ]
        try:
            version = await self._commit(mutations, entries)
        except VersionConflict as error:
            raise Conflict(f"concurrent change: {error.detail}; try again") from None
        return doomed, version

    # -- targeting ----------------------------------------------------------------------

    async def set_targets(
        self, key: str, targets: dict[str, list[str]], actor: str, reason: str | None
    ) -> tuple[FlagView, int]:
        def change(flag: Flag) -> Flag:
            return msgspec.structs.replace(flag, targets=targets)

        return await self._update_one(key, change, "targets", actor, reason)

    async def set_rules(
        self, key: str, rules: list[Rule], actor: str, reason: str | None
    ) -> tuple[FlagView, int]:
        def change(flag: Flag) -> Flag:
            return msgspec.structs.replace(flag, rules=rules)

        return await self._update_one(key, change, "rules", actor, reason)

    # -- segments -----------------------------------------------------------------------

    async def put_segment(
        self, key: str, segment: Segment, if_match: str | None, actor: str, reason: str | None
    ) -> tuple[Segment, int, bool]:
        """Create or replace a segment: (segment, snapshot version, created)."""
        try:
            validate_key(key, "$.key")
        except InvalidDocumentError as error:
            raise InvalidInput(error.problem, error.path) from None
        document = await self.document()
        current = document.segments.get(key)
        if if_match is not None:
            # If-Match names the version the caller saw: a segment that does not exist
            # (deleted meanwhile, or a typo) is a failed precondition too, not a creation.
            expected = _parse_if_match(if_match)
            actual = None if current is None else current.version
            if actual != expected:
                raise VersionConflict("segment", key, expected, actual)
        now = utc_now()
        new = msgspec.structs.replace(
            segment, version=(current.version if current else 0) + 1, updated_at=now
        )
        candidate = msgspec.structs.replace(document, segments={**document.segments, key: new})
        self._validate(candidate)
        guard = None if current is None else current.version
        entry = AuditEntry(
            actor=actor,
            action="segment.put",
            key=key,
            at=now,
            reason=reason,
            kind="segment",
            before=_body(current),
            after=_body(new),
        )
        try:
            version = await self._commit([Mutation("segment", key, "put", new, guard)], [entry])
        except VersionConflict as error:
            if if_match is not None:
                raise  # the version If-Match named is gone: 412, as for a flag
            raise Conflict(f"concurrent change: {error.detail}; try again") from None
        return new, version, current is None

    async def delete_segment(self, key: str, actor: str, reason: str | None) -> int:
        document = await self.document()
        current = document.segments.get(key)
        if current is None:
            raise NotFound(f"segment {key!r} not found")
        users = sorted(k for k, f in document.flags.items() if _uses_segment(f, key))
        if users:
            raise Conflict(f"segment {key!r} is used by flag(s) {', '.join(users)}")
        entry = AuditEntry(
            actor=actor,
            action="segment.delete",
            key=key,
            at=utc_now(),
            reason=reason,
            kind="segment",
            before=_body(current),
        )
        try:
            return await self._commit(
                [Mutation("segment", key, "delete", None, current.version)], [entry]
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
        actor: str,
        reason: str | None,
    ) -> tuple[SnapshotDiff, int]:
        """Make the store match ``incoming`` (all or nothing) and return the diff. With
        ``prune`` (the default) flags and segments missing from ``incoming`` are deleted."""
        self._validate(incoming)
        for _ in range(_RETRIES):
            document = await self.document()
            diff = diff_documents(document, incoming, prune=prune)
            if dry_run or diff.empty:
                return diff, document.version
            now = utc_now()
            mutations: list[Mutation] = []
            entries: list[AuditEntry] = []
            flags = dict(document.flags)
            segments = dict(document.segments)

            def record(kind: Literal["flag", "segment"], key: str, old: Any, new: Any) -> None:
                mutation, entry = _import_change(kind, key, old, new, actor, reason, now)  # noqa: B023
                mutations.append(mutation)  # noqa: B023 - used at once, in this iteration
                entries.append(entry)  # noqa: B023

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
                record("flag", key, flags.pop(key), None)
            for key in diff.segments.removed:
                record("segment", key, segments.pop(key), None)
            # The merged result (with pruning off it keeps extra flags) must be valid too.
            self._validate(msgspec.structs.replace(document, flags=flags, segments=segments))
            try:
                version = await self._commit(mutations, entries)
            except VersionConflict:
                continue
            return diff, version
        raise Conflict("too many concurrent changes; try again")

    # -- tokens -------------------------------------------------------------------------

    async def create_token(self, name: str, scope: str, actor: str) -> tuple[TokenRecord, str]:
        prefix = "fpa_" if scope == "admin" else "fpe_"
        secret = prefix + secrets.token_urlsafe(32)
        record = TokenRecord(
            id=secrets.token_hex(8),
            name=name,
            scope=scope,  # type: ignore[arg-type]
            secret_hash=hash_secret(secret),
            created_at=utc_now(),
        )
        await self.store.add_token(record)
        # An empty commit bumps the snapshot version so every worker reloads its tokens.
        entry = AuditEntry(
            actor=actor,
            action="token.create",
            key=record.id,
            at=record.created_at,
            kind="token",
            after={"name": name, "scope": scope},
        )
        await self._commit([], [entry])
        return record, secret

    async def revoke_token(self, token_id: str, actor: str) -> TokenRecord:
        now = utc_now()
        record = await self.store.revoke_token(token_id, now)
        if record is None:
            raise NotFound(f"token {token_id!r} not found")
        entry = AuditEntry(
            actor=actor,
            action="token.revoke",
            key=token_id,
            at=now,
            kind="token",
            before={"name": record.name, "scope": record.scope},
        )
        await self._commit([], [entry])
        return record

    # -- history and propagation --------------------------------------------------------

    async def audit(self, query: AuditQuery) -> list[AuditEntry]:
        return await self.store.audit(query)

    async def propagation(self, version: int) -> PropagationView:
        workers = await self.store.workers(self.runtime.settings.worker_max_age, time.time())
        stragglers = [w for w in workers if w.applied_version < version]
        return PropagationView(
            version=version, complete=not stragglers, workers=workers, stragglers=stragglers
        )


def _import_change(
    kind: Literal["flag", "segment"],
    key: str,
    old: Flag | Segment | None,
    new: Flag | Segment | None,
    actor: str,
    reason: str | None,
    now: str,
) -> tuple[Mutation, AuditEntry]:
    """The guarded mutation and the audit entry for one key an import changes."""
    guard = old.version if old is not None else None
    mutation = Mutation(kind, key, "delete" if new is None else "put", new, guard)
    entry = AuditEntry(
        actor=actor,
        action="import",
        key=key,
        at=now,
        kind=kind,
        reason=reason,
        before=_body(old),
        after=_body(new),
    )
    return mutation, entry


def _uses_segment(flag: Flag, segment: str) -> bool:
    return any(
        condition.op == "in_segment" and segment in condition.values
        for rule in flag.rules
        for condition in rule.conditions
    )


def diff_documents(
    current: SnapshotDocument, incoming: SnapshotDocument, *, prune: bool = True
) -> SnapshotDiff:
    """What importing ``incoming`` would change, ignoring versions and timestamps."""
    old, new = strip_volatile(current), strip_volatile(incoming)

    def keys(before: dict[str, Any], after: dict[str, Any]) -> KeyDiff:
        return KeyDiff(
            added=sorted(set(after) - set(before)),
            changed=sorted(k for k in set(after) & set(before) if before[k] != after[k]),
            removed=sorted(set(before) - set(after)) if prune else [],
        )

    return SnapshotDiff(flags=keys(old.flags, new.flags), segments=keys(old.segments, new.segments))


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

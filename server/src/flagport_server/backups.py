"""``flags backup`` and ``flags restore``: a whole store to a file and back, on the store
directly (docs/spec.md, "Backup and restore"; docs/adr/0031-whole-store-backup.md).

They work on the store, not through the admin API: a backup holds the server secret and the
token digests, which no API answer carries, and a restore is what an operator runs when the
servers may have nothing to serve. Running servers adopt a restore like any newer version.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from flagport_server.audit import audit_entry
from flagport_server.auth import RESTORE_ACTOR, Actor
from flagport_server.services import utc_now
from flagport_server.stores import open_store
from flagport_server.stores.backup import StoreBackup, read_backup, write_backup

__all__ = ["BackupSummary", "restore_store", "summary_of", "take_backup"]


class BackupSummary(msgspec.Struct, frozen=True):
    """What a backup holds (what the commands print)."""

    kind: str
    store_id: str
    snapshot_version: int
    flags: int
    segments: int
    plans: int
    audit: int
    tokens: int
    server_secret: bool
    created_at: str
    approval_policies: int = 0
    change_requests: int = 0
    webhooks: int = 0


def summary_of(backup: StoreBackup) -> BackupSummary:
    return BackupSummary(
        kind=backup.source.kind,
        store_id=backup.source.store_id,
        snapshot_version=backup.source.snapshot_version,
        flags=len(backup.flags),
        segments=len(backup.segments),
        plans=len(backup.plans),
        audit=len(backup.audit),
        tokens=len(backup.tokens),
        server_secret=backup.server_secret is not None,
        created_at=backup.created_at,
        approval_policies=len(backup.approval_policies),
        change_requests=len(backup.change_requests),
        webhooks=len(backup.webhooks),
    )


async def take_backup(store_url: str, path: Path) -> tuple[BackupSummary, int]:
    """Back up the store at ``store_url`` into ``path``: the summary and the bytes written."""
    store = open_store(store_url)
    await store.open()
    try:
        backup = await store.backup()
    finally:
        await store.close()
    return summary_of(backup), write_backup(path, backup)


async def restore_store(
    store_url: str, path: Path, *, replace: bool, reason: str | None
) -> tuple[BackupSummary, int]:
    """Restore the backup in ``path`` into the store at ``store_url``: the backup's summary
    and the snapshot version the store is at now.

    :raises InvalidInput: the file is not a backup this release can read (nothing changed).
    :raises StoreNotEmpty: the store holds a configuration and ``replace`` is false.
    """
    backup = read_backup(path)
    summary = summary_of(backup)
    entry = audit_entry(
        Actor(RESTORE_ACTOR),
        "restore",
        "*",
        utc_now(),
        kind="snapshot",
        reason=reason or f"restored from {path.name}",
        after=msgspec.structs.asdict(summary),
    )
    store = open_store(store_url)
    await store.open()
    try:
        version = await store.restore(backup, entry, replace=replace)
    finally:
        await store.close()
    return summary, version

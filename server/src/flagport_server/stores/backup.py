"""Whole-store backups: what ``flags backup`` writes and ``flags restore`` reads
(docs/spec.md, "Backup and restore"; docs/adr/0031-whole-store-backup.md).

A backup is one JSON document carrying every record a store keeps for the long term, as
the store keeps it: flags, segments and rollout plans with their versions, the audit log with
its ids, the tokens (their secrets only as SHA-256 digests), the audit id sequence and the
server secret. Record bodies are the stored JSON text, copied byte for byte, so a record this
release cannot read (written by a newer one, or damaged) is carried as it is and never made
up. What is rebuilt from traffic is not carried: the stats and outcome series, the worker
registry, leases and change notifications.

``format_version`` is bumped when a section is added; a reader refuses a newer one (it could
not restore what it does not know) and reads an older one with the sections it lacks empty.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from flagport import InvalidDocumentError
from flagport.engine import validate_key
from flagport_server.errors import InvalidInput
from flagport_server.stores.base import ApprovalPolicy, ChangeRequest, TokenRecord
from flagport_server.stores.webhook_records import WebhookDelivery, WebhookRecord

__all__ = [
    "BACKUP_FORMAT",
    "BACKUP_FORMAT_VERSION",
    "HELD_KINDS",
    "BackupAuditEntry",
    "BackupRecord",
    "BackupSource",
    "BackupWebhook",
    "StoreBackup",
    "held_records",
    "read_backup",
    "utc_now_text",
    "write_backup",
]

BACKUP_FORMAT: Final = "flagport-backup"
#: 1: flags, segments, plans, audit, tokens, the server secret. 2: approval policies, change
#: requests, webhooks with their cursors and delivery states.
BACKUP_FORMAT_VERSION: Final = 2
#: A backup file larger than this is refused before it is read (a store at the limits holds
#: 15,000 flags of at most 256 KiB each: far less than this in practice).
MAX_BACKUP_BYTES: Final = 2 * 1024 * 1024 * 1024
_KEY_BYTES: Final = 1024
#: Versions, ids and cursors a backup may carry: exact as doubles (Redis's scripts read
#: them so, and write a larger one as 1e+17) and far from SQLite's 64-bit integers.
MAX_NUMBER: Final = 2**53


class BackupRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A flag, segment or plan as stored: its key, its version (the compare-and-set guard)
    and its JSON body."""

    key: str
    version: int
    body: str


class BackupAuditEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An audit entry as stored: the fields the store indexes it by, and its JSON body."""

    id: int
    snapshot_version: int
    key: str
    actor: str
    at: str
    body: str


class BackupWebhook(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A webhook as stored (its body holds its signing secret) and its cursor over audit
    ids."""

    body: str
    cursor: int


class BackupSource(msgspec.Struct, frozen=True):
    """Where a backup was taken."""

    kind: str
    store_id: str
    schema_version: int
    snapshot_version: int


class StoreBackup(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    format: Literal["flagport-backup"] = BACKUP_FORMAT
    format_version: int = BACKUP_FORMAT_VERSION
    created_at: str
    source: BackupSource
    flags: list[BackupRecord] = []
    segments: list[BackupRecord] = []
    plans: list[BackupRecord] = []
    audit: list[BackupAuditEntry] = []
    #: The next audit id the store would have given: ids are never reused, so a restored
    #: store goes on from here even when the newest entries were deleted.
    audit_next_id: int = 1
    #: Token records as stored (JSON), secrets only as digests.
    tokens: list[str] = []
    #: The server secret, hex (dashboard sessions and stream tickets stay valid).
    server_secret: str | None = None
    #: Approval policies and change requests as stored (JSON; format 2).
    approval_policies: list[str] = []
    change_requests: list[str] = []
    #: Webhooks with their cursors, and the delivery state of each entry tried (format 2).
    webhooks: list[BackupWebhook] = []
    webhook_deliveries: list[str] = []


class _Header(msgspec.Struct):
    """The two fields read before the rest, so a newer format is named as such rather than
    reported as an unknown field."""

    format: str = ""
    format_version: int = 0


#: What makes a store "not empty" for a restore without ``--replace``, in the order each
#: backend counts it (a SQLite table, a Redis hash of that name).
HELD_KINDS: Final = (
    "flags",
    "segments",
    "plans",
    "tokens",
    "audit",
    "approval_policies",
    "change_requests",
    "webhooks",
)


def held_records(counts: Mapping[str, int]) -> str:
    """What a store holds, for :class:`~flagport_server.errors.StoreNotEmpty` ("3 flags,
    12 audit"); empty when it holds nothing."""
    return ", ".join(f"{n} {what}" for what, n in counts.items() if n)


def utc_now_text() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def write_backup(path: Path, backup: StoreBackup) -> int:
    """Write ``backup`` to ``path`` (mode 0600: it holds the server secret and the token
    digests), atomically (a temporary file renamed over it). Returns the bytes written."""
    data = msgspec.json.encode(backup)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return len(data)


def read_backup(path: Path) -> StoreBackup:
    """The backup in ``path``, checked: its format, its version, the shape of every record,
    keys unique per kind, audit ids unique and below ``audit_next_id``.

    :raises InvalidInput: naming the problem (and where); nothing is restored from such a file.
    """
    try:
        size = path.stat().st_size
        if size > MAX_BACKUP_BYTES:
            raise InvalidInput(f"{path} is {size:,} bytes: larger than any backup Flagport makes")
        data = path.read_bytes()
    except OSError as error:
        raise InvalidInput(f"cannot read {path}: {error.strerror or error}") from None
    try:
        header = msgspec.json.decode(data, type=_Header)
    except msgspec.DecodeError as error:
        raise InvalidInput(f"{path} is not a Flagport backup: {error}") from None
    if header.format != BACKUP_FORMAT:
        raise InvalidInput(f"{path} is not a Flagport backup (format {header.format!r})")
    if header.format_version > BACKUP_FORMAT_VERSION:
        raise InvalidInput(
            f"{path} was written by a newer Flagport (backup format {header.format_version}; "
            f"this release reads up to {BACKUP_FORMAT_VERSION}): restore it with that release"
        )
    try:
        backup = msgspec.json.decode(data, type=StoreBackup)
    except msgspec.ValidationError as error:
        raise InvalidInput(f"{path}: {error}") from None
    except msgspec.DecodeError as error:
        raise InvalidInput(f"{path} is not a Flagport backup: {error}") from None
    check_backup(backup, str(path))
    return backup


def check_backup(backup: StoreBackup, where: str) -> None:
    """What the decoder cannot check: unique keys and ids, sane numbers, JSON bodies, and
    what every later commit counts on: keys of the key grammar, each record's body at the
    version the store keeps it under, numbers no commit can overflow. A restored record
    short of these could not be changed afterwards, not even by the kill switch."""
    _check_number(backup.source.snapshot_version, "source.snapshot_version", where, 0)
    _check_number(backup.audit_next_id, "audit_next_id", where, 1)
    for kind, records in (
        ("flag", backup.flags),
        ("segment", backup.segments),
        ("plan", backup.plans),
    ):
        seen: set[str] = set()
        for index, record in enumerate(records):
            at = f"{where}: {kind}s[{index}]"
            if not record.key or len(record.key.encode()) > _KEY_BYTES:
                raise InvalidInput(f"{at}: a key of 1 to {_KEY_BYTES} bytes is required")
            try:
                validate_key(record.key, "key")
            except InvalidDocumentError as error:
                raise InvalidInput(f"{at}: {error}") from None
            if record.key in seen:
                raise InvalidInput(f"{at}: {kind} {record.key!r} appears twice")
            seen.add(record.key)
            _check_number(record.version, "version", at, 1)
            body = _check_json(record.body, at)
            stated = body.get("version") if isinstance(body, dict) else None
            if stated != record.version:
                raise InvalidInput(
                    f"{at}: the body's version ({stated!r}) is not the record's ({record.version})"
                )
    ids: set[int] = set()
    for index, entry in enumerate(backup.audit):
        at = f"{where}: audit[{index}]"
        if entry.id < 1 or entry.id in ids:
            raise InvalidInput(f"{at}: id {entry.id} is not a new positive id")
        ids.add(entry.id)
        if entry.id >= backup.audit_next_id:
            raise InvalidInput(f"{at}: id {entry.id} is not below audit_next_id")
        _check_number(entry.snapshot_version, "snapshot_version", at, 0)
        try:
            datetime.datetime.fromisoformat(entry.at)
        except ValueError:
            raise InvalidInput(f"{at}: at {entry.at!r} is not an ISO-8601 time") from None
        _check_json(entry.body, at)
    token_ids: set[str] = set()
    digests: set[str] = set()
    for index, body in enumerate(backup.tokens):
        at = f"{where}: tokens[{index}]"
        try:
            token = msgspec.json.decode(body, type=TokenRecord)
        except msgspec.DecodeError as error:
            raise InvalidInput(f"{at}: not a token record ({error})") from None
        if token.id in token_ids or token.secret_hash in digests:
            raise InvalidInput(f"{at}: token {token.id!r} (or its secret) appears twice")
        token_ids.add(token.id)
        digests.add(token.secret_hash)
    if backup.server_secret is not None:
        try:
            bytes.fromhex(backup.server_secret)
        except ValueError:
            raise InvalidInput(f"{where}: server_secret is not hex") from None
    _check_records(backup.approval_policies, ApprovalPolicy, f"{where}: approval_policies")
    _check_records(backup.change_requests, ChangeRequest, f"{where}: change_requests")
    webhooks = _check_records(
        [w.body for w in backup.webhooks], WebhookRecord, f"{where}: webhooks"
    )
    for index, webhook in enumerate(backup.webhooks):
        _check_number(webhook.cursor, "the cursor", f"{where}: webhooks[{index}]", 0)
    _check_records(backup.webhook_deliveries, WebhookDelivery, f"{where}: webhook_deliveries")
    deliveries = [
        msgspec.json.decode(body, type=WebhookDelivery) for body in backup.webhook_deliveries
    ]
    seen_deliveries: set[tuple[str, int]] = set()
    for index, delivery in enumerate(deliveries):
        at = f"{where}: webhook_deliveries[{index}]"
        if delivery.webhook_id not in webhooks:
            raise InvalidInput(f"{at}: webhook {delivery.webhook_id!r} is not in the backup")
        if (delivery.webhook_id, delivery.audit_id) in seen_deliveries:
            raise InvalidInput(f"{at}: appears twice")
        seen_deliveries.add((delivery.webhook_id, delivery.audit_id))


def _check_records(bodies: list[str], kind: type[Any], at: str) -> set[str]:
    """Each body decodes as ``kind``, ids unique; the ids (for records that have one)."""
    ids: set[str] = set()
    for index, body in enumerate(bodies):
        try:
            record = msgspec.json.decode(body, type=kind)
        except msgspec.DecodeError as error:
            raise InvalidInput(f"{at}[{index}]: not a {kind.__name__} record ({error})") from None
        record_id = getattr(record, "id", None)
        if record_id is not None:
            if record_id in ids:
                raise InvalidInput(f"{at}[{index}]: {record_id!r} appears twice")
            ids.add(record_id)
    return ids


def _check_json(body: str, at: str) -> Any:
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as error:
        raise InvalidInput(f"{at}: the body is not JSON ({error})") from None


def _check_number(value: int, name: str, at: str, least: int) -> None:
    if not least <= value <= MAX_NUMBER:
        raise InvalidInput(f"{at}: {name} must be from {least} to 2^53, got {value}")

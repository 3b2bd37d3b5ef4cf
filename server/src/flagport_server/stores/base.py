"""The store contract every backend (SQLite, Redis) implements.

The store is never on the evaluation path: servers load a whole :class:`StoreState` into an
immutable compiled snapshot and re-load it when the snapshot version changes. Writes are
atomic batches of :class:`Mutation` guarded by compare-and-set on each flag's version, and
each batch bumps the global snapshot version by exactly one and appends its audit entries.

One contract-test suite (``tests/server/test_store_contract.py``) runs against every backend.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec

from flagport.durations import STATS_HOURS_KEPT
from flagport.engine import Flag, Segment, SnapshotDocument
from flagport.rollout.outcomes import Cohort, Totals
from flagport.rollout.plan import Plan
from flagport_server.stores.webhook_records import WebhookDelivery, WebhookRecord

if TYPE_CHECKING:
    from flagport_server.stores.backup import StoreBackup

__all__ = [
    "OUTCOME_MINUTES_KEPT",
    "SCOPE_MODEL",
    "SERVER_SECRET_BYTES",
    "STATS_HOURS_KEPT",
    "STATS_MINUTES_KEPT",
    "ApprovalPolicy",
    "AuditEntry",
    "AuditKind",
    "AuditQuery",
    "ChangeRequest",
    "CommitResult",
    "FlagSeen",
    "Lease",
    "Mutation",
    "OutcomeRow",
    "RequestStatus",
    "StatsBatch",
    "StatsView",
    "Store",
    "StoreState",
    "TokenRecord",
    "TokenScope",
    "WorkerStatus",
    "migrated_token",
]

#: The per-minute series is kept this many minutes (48 hours).
STATS_MINUTES_KEPT = 48 * 60
#: Outcome signals are kept per minute for this many minutes (48 hours; docs/spec.md,
#: "Guarded rollouts").
OUTCOME_MINUTES_KEPT: Final = 48 * 60


class Mutation(msgspec.Struct, frozen=True):
    """One change inside an atomic commit.

    ``expected_version`` is the compare-and-set guard: the flag's (segment's, plan's)
    current version must equal it; ``None`` means "must not exist yet"; ``-1`` means "don't
    check". ``value`` is the new Flag/Segment/Plan for ``put``, ``None`` for ``delete``.

    A ``plan`` mutation writes the rollout plan of flag ``key`` (one per flag; a finished
    plan is replaced by the next one): every plan transition is one, committed with the
    flag change it makes and its audit entry (docs/adr/0023-rollout-plans-driver-lease.md).

    A put is refused if its value is over a limit (``flagport.engine.check_flag_limits``),
    except a ``kill_switch`` put: one that only turns a flag off. The kill switch must work
    on a flag that was stored under older, looser limits, and turning a flag off cannot
    make it any larger.
    """

    kind: Literal["flag", "segment", "plan"]
    key: str
    op: Literal["put", "delete"]
    value: Flag | Segment | Plan | None = None
    expected_version: int | None = -1
    kill_switch: bool = False


#: The kinds of audit entry this release writes.
AuditKind = Literal["flag", "segment", "token", "snapshot", "request", "notice"]


class AuditEntry(msgspec.Struct, frozen=True, omit_defaults=True):
    """Who changed what, when and why. ``before``/``after`` are the exported flag bodies."""

    actor: str
    action: str
    key: str
    at: str  # ISO-8601 UTC
    reason: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    #: One of :data:`AuditKind` (``request``: a change request or an approval policy,
    #: docs/spec.md "Approvals"; ``notice``: a flag found stale). Read as any text: an entry
    #: of a kind a later release adds must not make this one's audit pages unreadable.
    kind: str = "flag"
    #: Assigned by the store: increasing, unique per store.
    id: int = 0
    snapshot_version: int = 0
    #: The id of the token that made the change (``actor`` is its name); ``None`` for
    #: changes made without one (``--seed``) and in entries written before it was kept.
    token_id: str | None = None
    #: A rollout plan's transition (``kind`` stays ``flag``: older servers read the entry):
    #: the plan record after it, and for an automatic action its evidence (the rule, the
    #: window, samples per cohort, the values, the test statistic).
    plan: dict[str, Any] | None = None
    evidence: dict[str, Any] | None = None
    #: The change request this entry belongs to: the request's own entries (kind
    #: ``request``), and the changes an approval applied.
    request_id: str | None = None
    #: A change to a flag under an approval policy that reduced its exposure (a disable, a
    #: kill, a lower percentage, a pause, an abort, an automatic rollback) and so was applied
    #: at once, without a request. Older servers ignore the field and read the entry.
    break_glass: bool = False


class AuditQuery(msgspec.Struct, frozen=True):
    key: str | None = None
    actor: str | None = None
    since: str | None = None  # ISO-8601; entries at or after it
    #: Page backwards from this id (exclusive); newest first.
    before_id: int | None = None
    limit: int = 100


class CommitResult(msgspec.Struct, frozen=True):
    snapshot_version: int
    audit_ids: list[int]


#: What a token may reach (docs/spec.md section 5): ``evaluate`` (browser-safe evaluation),
#: ``sdk`` (evaluation and the server-side feeds), ``viewer`` (admin reads), ``admin``.
TokenScope = Literal["evaluate", "sdk", "viewer", "admin"]
#: The scope model new tokens are made under. Model 1 (absent from the stored body) had two
#: scopes, and its ``evaluate`` reached ``/v1/snapshot`` and ``/v1/exposures``: such a token
#: reads as ``sdk`` (docs/adr/0014-token-scopes.md).
SCOPE_MODEL: Final = 2


class TokenRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """A token as stored: never the secret, only its SHA-256 hex digest."""

    id: str
    name: str
    scope: TokenScope
    secret_hash: str
    created_at: str
    revoked_at: str | None = None
    #: The scope model the token was made under (1: before the four scopes).
    scope_model: int = 1
    #: When the token stops working (ISO-8601 UTC); ``None``: never. A personal token has
    #: one (docs/spec.md section 5, "Personal tokens"); older servers ignore it.
    expires_at: str | None = None
    #: The lifetime chosen when the token was made or last rotated, in seconds: a rotation
    #: without a new ``--expires`` gives the new secret the same lifetime from then.
    lifetime_s: int | None = None
    #: When the secret was last replaced (``flags token rotate``), and the hashes of the
    #: secrets it replaced (the newest few): a retired secret is refused with a 401 that
    #: says it was rotated away, never matched.
    rotated_at: str | None = None
    retired_hashes: tuple[str, ...] = ()


def migrated_token(token: TokenRecord) -> TokenRecord:
    """``token`` in today's scope model: a model-1 ``evaluate`` token becomes ``sdk`` (it
    keeps everything it could reach), any other model-1 token only changes its model."""
    if token.scope_model >= SCOPE_MODEL:
        return token
    scope: TokenScope = "sdk" if token.scope == "evaluate" else token.scope
    return msgspec.structs.replace(token, scope=scope, scope_model=SCOPE_MODEL)


#: What a change request may be in: ``pending`` until approved (``applied``), ``rejected``,
#: ``expired`` (24 h without a decision) or ``failed`` (approved, but the flag had changed
#: since it was filed, or the change was refused: it must be requested again).
RequestStatus = Literal["pending", "applied", "rejected", "expired", "failed"]


class ApprovalPolicy(msgspec.Struct, frozen=True, omit_defaults=True):
    """Changes that do not reduce exposure of the flag ``target`` (``kind`` ``flag``), or of
    every flag tagged ``target`` (``kind`` ``tag``), need an approved change request. ``id``
    is ``kind:target``."""

    id: str
    kind: Literal["flag", "tag"]
    target: str
    created_at: str
    created_by: str
    reason: str | None = None


class ChangeRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    """A change someone asked for, waiting for a second person (docs/spec.md, "Approvals").

    ``change`` is the change as the admin API took it (``{"kind": "enable", "percentage":
    50}``...), ``key`` the flag (or segment) it changes and ``version`` that record's version
    when the request was filed (``None``: it did not exist): an approval applies the change
    only on that version (compare-and-set), else the request fails and must be filed again.
    """

    id: str
    key: str
    change: dict[str, Any]
    reason: str
    requested_by: str
    requested_by_id: str
    created_at: str
    expires_at: str
    status: RequestStatus
    version: int | None = None
    decided_by: str | None = None
    decided_by_id: str | None = None
    decided_at: str | None = None
    #: Why it was rejected, or why the approval could not apply it.
    decision: str | None = None
    #: Claimed by an approval (``status`` ``applied``) whose change is not yet committed:
    #: a request left so by a server that stopped in between is settled when read, from the
    #: audit (the change's entries name the request; docs/adr/0029). Omitted once settled,
    #: so a release that does not know the field reads the request as before.
    applying: bool = False


class WorkerStatus(msgspec.Struct, frozen=True):
    """One server worker's entry in the propagation registry."""

    instance: str  # instance id (host:port or a configured name)
    pid: int
    applied_version: int
    heartbeat_at: float  # seconds since the epoch
    started_at: float = 0.0


class StatsBatch(msgspec.Struct, frozen=True):
    """Counts gathered by one worker since its last flush, added to whatever the store has
    (every worker and every instance adds its own batches).

    ``counts``: ``(flag, variant, minute, n)`` with ``minute`` the epoch second the minute
    starts at (a multiple of 60): added to the per-minute series and to the hour's total.
    ``units``: ``(flag, variant, hour, units)`` with ``hour`` a multiple of 3600: added to
    that hour's unique-unit sketch (a unit may be listed more than once; it counts once).
    ``seen``: ``(flag, first, last)`` epoch seconds.
    ``reported``: ``(flag, variant, hour, n)``: of the evaluations in ``counts``, those
    in-process clients reported (``POST /v1/exposures``) rather than the server counted
    itself; added to the hour's reported total, kept as long as the hour's count.
    """

    counts: list[tuple[str, str, int, int]] = []
    units: list[tuple[str, str, int, list[str]]] = []
    seen: list[tuple[str, float, float]] = []
    reported: list[tuple[str, str, int, int]] = []

    @property
    def empty(self) -> bool:
        return not (self.counts or self.units or self.seen or self.reported)


class StatsView(msgspec.Struct, frozen=True):
    """One flag's figures over the hours ``[since, until)`` (multiples of 3600).

    ``evaluations`` and ``unique_units`` are per variant; ``units_seen`` is the union of
    every variant's units and ``units_on`` the union of every variant's but the off variant
    (each unit counted once however many hours and variants it was in). ``series`` is
    ``(minute, {variant: n})`` for the minutes still kept (48 hours), oldest first.
    ``reported``: per variant, the part of ``evaluations`` in-process clients reported
    (variants with none are left out; figures stored before it was kept count as 0).
    """

    key: str
    since: int
    until: int
    evaluations: dict[str, int]
    unique_units: dict[str, int]
    units_seen: int
    units_on: int
    series: list[tuple[int, dict[str, int]]]
    first_seen: float | None = None
    last_seen: float | None = None
    reported: dict[str, int] = {}


class FlagSeen(msgspec.Struct, frozen=True):
    """When a flag was first and last evaluated (kept for as long as the store)."""

    key: str
    first_seen: float
    last_seen: float


#: Length of the server secret (HMAC-SHA256 key).
SERVER_SECRET_BYTES: Final = 32


class Lease(msgspec.Struct, frozen=True):
    """Who holds a named lease (the rollout driver's: one per store) and until when, in
    seconds since the epoch; ``renewed_at`` is the holder's last renewal."""

    name: str
    holder: str
    expires_at: float
    renewed_at: float


#: One flag's outcome totals in one minute for one cohort: ``(flag, minute, cohort,
#: totals)``, ``minute`` the epoch second it starts at (a multiple of 60).
OutcomeRow = tuple[str, int, Cohort, Totals]


class StoreState(msgspec.Struct, frozen=True):
    """Everything a server needs to build a snapshot, read atomically.

    A stored flag or segment that cannot be decoded (not JSON, wrong types) is left out of
    ``document`` and named in ``unreadable_flags`` / ``unreadable_segments`` (key -> why)
    instead: one bad record must never stop the rest from being served. Fields this server
    does not know (written by a newer one sharing the store) are ignored, not a reason.
    """

    store_id: str  # random id made when the store was initialised; changes if wiped
    document: SnapshotDocument  # document.version is the snapshot version
    unreadable_flags: dict[str, str] = {}
    unreadable_segments: dict[str, str] = {}
    #: Rollout plans by flag key (finished ones too, until a new plan replaces them); a
    #: stored plan that cannot be read is named in ``unreadable_plans`` instead.
    plans: dict[str, Plan] = {}
    unreadable_plans: dict[str, str] = {}


class Store(abc.ABC):
    """Async store contract. Implementations must be safe to use from several processes.

    Every store carries the version of its layout (its schema version). :meth:`open`,
    :meth:`load`, :meth:`snapshot_version`, :meth:`commit` and the token writes raise
    :class:`~flagport_server.errors.StoreError` (nothing written) once a newer Flagport has
    raised it above the one this server knows (``stores._common.check_schema_version``).
    """

    #: URL scheme(s) served, for messages.
    kind: str = "abstract"

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and create the schema if needed (idempotent)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def load(self) -> StoreState:
        """The whole configuration at one snapshot version."""

    @abc.abstractmethod
    async def load_plans(self) -> dict[str, Plan]:
        """The readable rollout plans by flag key, without the flags: the driver's read every
        half second (a whole :meth:`load` of 15,000 flags costs ~100 ms of decoding)."""

    @abc.abstractmethod
    async def snapshot_version(self) -> tuple[str, int]:
        """(store_id, version): cheap, for the periodic check that repairs missed messages."""

    @abc.abstractmethod
    async def commit(
        self, mutations: Sequence[Mutation], audit: Sequence[AuditEntry]
    ) -> CommitResult:
        """Apply ``mutations`` and append ``audit`` atomically, bumping the snapshot version
        once. Raises :class:`~flagport_server.errors.VersionConflict` (nothing applied) when a
        guard fails; audit entries get ``snapshot_version`` and ``id`` filled in.

        Guards are checked in order, each against the state the earlier mutations of the same
        batch left (a batch may create a flag and then update it). The stored version of a
        put is the ``version`` of its value: the caller bumps it."""

    @abc.abstractmethod
    def changes(self) -> AsyncIterator[int]:
        """Yield new snapshot versions as other processes commit (best effort; the caller
        also polls :meth:`snapshot_version`)."""

    # -- audit ------------------------------------------------------------------------------

    @abc.abstractmethod
    async def audit(self, query: AuditQuery) -> list[AuditEntry]:
        """Entries matching ``query``, newest first, at most ``query.limit``."""

    # -- tokens -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def add_token(self, token: TokenRecord) -> None: ...

    @abc.abstractmethod
    async def tokens(self) -> list[TokenRecord]: ...

    @abc.abstractmethod
    async def revoke_token(self, token_id: str, at: str) -> TokenRecord | None:
        """Mark revoked; ``None`` if unknown."""

    @abc.abstractmethod
    async def rotate_token(self, rotated: TokenRecord, previous_hash: str) -> bool:
        """Replace the stored token ``rotated.id`` with ``rotated`` (its new secret hash,
        expiry and ``retired_hashes``) if it is still not revoked and its secret hash is still
        ``previous_hash`` (compare-and-set: of two rotations at once, one wins); False (nothing
        changed) otherwise. The old secret stops matching at once; its hash stays taken."""

    # -- the server secret ------------------------------------------------------------------

    @abc.abstractmethod
    async def server_secret(self) -> bytes:
        """The server secret (:data:`SERVER_SECRET_BYTES` random bytes), made on first use
        by whichever process asks first, the same for every worker and instance on this store
        (docs/spec.md section 12). Never exported, never in the audit log."""

    @abc.abstractmethod
    async def rotate_server_secret(self) -> bytes:
        """Replace the server secret with new random bytes and return them: every ticket and
        session signed with the old one stops being valid."""

    # -- propagation registry ---------------------------------------------------------------

    @abc.abstractmethod
    async def heartbeat(self, status: WorkerStatus) -> None:
        """Record a worker's applied version and liveness."""

    @abc.abstractmethod
    async def workers(self, max_age: float, now: float) -> list[WorkerStatus]:
        """Workers whose heartbeat is at most ``max_age`` seconds old."""

    @abc.abstractmethod
    async def forget_worker(self, instance: str, pid: int) -> None:
        """Remove a worker on clean shutdown (so it is not waited for)."""

    # -- stats ------------------------------------------------------------------------------

    @abc.abstractmethod
    async def record_stats(self, batch: StatsBatch, now: float) -> None:
        """Add ``batch`` to the stored figures (sums for counts, sketch unions for units,
        min/max for first/last seen) and drop what is older than the retention windows
        (relative to ``now``)."""

    @abc.abstractmethod
    async def stats(
        self, key: str, since: int, until: int, off_variant: str | None = None
    ) -> StatsView:
        """``key``'s figures over the hours ``[since, until)``; ``units_on`` counts the units
        of every variant but ``off_variant``. Empty for a flag that was never counted."""

    @abc.abstractmethod
    async def last_seen(self) -> dict[str, FlagSeen]:
        """First and last evaluation of every flag ever counted."""

    @abc.abstractmethod
    async def hourly_counts(self, since: int, until: int) -> dict[str, dict[int, int]]:
        """Evaluations of every flag per hour (all variants) over the hours ``[since,
        until)`` (multiples of 3600), in one read: flag -> hour -> count, hours without
        evaluations left out (the admin UI's flag list)."""

    # -- rollout: the driver's lease and the outcome signals ----------------------------

    @abc.abstractmethod
    async def acquire_lease(self, name: str, holder: str, ttl: float, now: float) -> bool:
        """Take the lease ``name`` for ``holder`` until ``now + ttl``, or renew it if
        ``holder`` has it; False (nothing changed) while another holder's lease has not
        expired. Atomic across processes and instances."""

    @abc.abstractmethod
    async def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up if ``holder`` has it (a clean shutdown: another takes over at
        once); nothing otherwise."""

    @abc.abstractmethod
    async def lease(self, name: str, now: float) -> Lease | None:
        """The lease's holder if it has not expired at ``now``, else None."""

    @abc.abstractmethod
    async def lease_seen(self, name: str) -> float | None:
        """When the lease was last taken or renewed by anyone (None: never), kept after it
        expires: how long a store has been without a driver."""

    @abc.abstractmethod
    async def record_outcomes(self, rows: Sequence[OutcomeRow], now: float) -> int:
        """Add each row's totals to the stored ones of its flag, minute and cohort (exact
        integer sums, any order, from every worker and instance); drop minutes older than
        :data:`OUTCOME_MINUTES_KEPT` before ``now``. An event series beyond
        ``MAX_EVENT_SERIES`` of one flag, cohort and minute is not counted; the answer is
        how many were left out that way."""

    @abc.abstractmethod
    async def outcomes(self, key: str, first_minute: int, last_minute: int) -> list[OutcomeRow]:
        """``key``'s stored totals of the minutes ``first_minute`` to ``last_minute``
        (inclusive; multiples of 60), oldest first."""

    @abc.abstractmethod
    async def prune_audit(self, before: float, limit: int = 1000) -> int:
        """Delete at most ``limit`` of the oldest audit entries made before ``before``
        (seconds since the epoch), filters included; how many were deleted. Ids are never
        reused. (Audit retention: docs/spec.md, "Backup and restore".)"""

    # -- backup and restore (docs/adr/0031-whole-store-backup.md) ----------------------

    @abc.abstractmethod
    async def backup(self) -> StoreBackup:
        """Every long-lived record, read at one snapshot version (one transaction or one
        script), bodies as stored."""

    @abc.abstractmethod
    async def restore(self, backup: StoreBackup, entry: AuditEntry, *, replace: bool) -> int:
        """Make the store hold exactly what ``backup`` holds, atomically, then append
        ``entry`` (the restore's own audit entry) after the restored log. The store keeps
        the backup's store id and takes a snapshot version above both its own and the
        backup's, so running servers adopt the restored state as a newer version. Returns
        that version.

        :raises StoreNotEmpty: the store holds flags, segments, plans, tokens or audit
            entries and ``replace`` is false (nothing written).
        """

    # -- approvals: policies and change requests (new keys: older servers never read them) --

    @abc.abstractmethod
    async def approval_policies(self) -> list[ApprovalPolicy]:
        """Every approval policy, by id."""

    @abc.abstractmethod
    async def add_approval_policy(self, policy: ApprovalPolicy) -> bool:
        """Store ``policy``; False (nothing changed) if one with its id exists."""

    @abc.abstractmethod
    async def remove_approval_policy(self, policy_id: str) -> ApprovalPolicy | None:
        """Remove the policy and return it; ``None`` if there is none with that id."""

    @abc.abstractmethod
    async def add_change_request(self, request: ChangeRequest, drop: Sequence[str]) -> None:
        """Store ``request`` and remove the requests ``drop`` names (decided ones past the
        time they are kept), atomically."""

    @abc.abstractmethod
    async def change_requests(self) -> list[ChangeRequest]:
        """Every stored change request, oldest first (a record that cannot be read is left
        out: one bad record must not hide the others)."""

    @abc.abstractmethod
    async def decide_change_request(
        self, decided: ChangeRequest, expected: RequestStatus, *, applying: bool = False
    ) -> bool:
        """Store ``decided`` over the request with its id if that one's status is still
        ``expected`` and its ``applying`` still ``applying`` (compare-and-set: of two
        approvals at once, or of two readers settling one claim, one wins); False otherwise."""

    # -- webhooks (docs/adr/0028-webhooks-over-the-audit-log.md) ------------------------

    @abc.abstractmethod
    async def audit_after(self, after_id: int, limit: int) -> list[AuditEntry]:
        """Entries with ids above ``after_id``, oldest (lowest id) first, at most ``limit``
        (itself capped at 1000): what a webhook's cursor has not passed yet."""

    @abc.abstractmethod
    async def add_webhook(self, record: WebhookRecord, cursor: int, limit: int) -> bool:
        """Store ``record`` with its cursor at ``cursor`` (the newest audit id when it was
        added: no backlog); False, nothing added, when ``limit`` webhooks exist already."""

    @abc.abstractmethod
    async def webhooks(self) -> list[WebhookRecord]:
        """Every webhook, oldest first."""

    @abc.abstractmethod
    async def remove_webhook(self, webhook_id: str) -> WebhookRecord | None:
        """Remove the webhook with its cursor and deliveries; ``None`` if unknown."""

    @abc.abstractmethod
    async def webhook_cursor(self, webhook_id: str) -> int | None:
        """The webhook's cursor (``None``: no such webhook)."""

    @abc.abstractmethod
    async def record_delivery(
        self, webhook_id: str, delivery: WebhookDelivery | None, cursor: int | None
    ) -> bool:
        """Keep ``delivery`` (replacing the state of the same entry) and move the webhook's
        cursor up to ``cursor`` (never down), atomically; keep only the newest
        :data:`~flagport_server.stores.webhook_records.DELIVERED_KEPT` delivered entries.
        False, nothing written, if the webhook was removed meanwhile."""

    @abc.abstractmethod
    async def delivery(self, webhook_id: str, audit_id: int) -> WebhookDelivery | None:
        """The delivery state of one entry to one webhook (``None``: never tried)."""

    @abc.abstractmethod
    async def deliveries(
        self, webhook_id: str | None, *, failed: bool, limit: int
    ) -> list[WebhookDelivery]:
        """Deliveries (of one webhook, or all), newest audit id first, at most ``limit``;
        ``failed``: only pending and dead ones."""

"""Admin API v1 wire models (``/admin/v1/...``). Errors are RFC 9457 problem details."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from flagport.engine import Flag, Rule, Segment
from flagport.engine.models import MAX_KEY_LENGTH
from flagport.rollout.decision import Evidence
from flagport.rollout.options import PlanOptions
from flagport.rollout.plan import Plan
from flagport_server.stores.base import AuditEntry, TokenScope, WorkerStatus
from flagport_server.wire.fields import PRINTABLE_PATTERN, TOKEN_NAME_PATTERN, Reason

__all__ = [
    "AuditPage",
    "DisableRequest",
    "EnableRequest",
    "FlagCreate",
    "FlagList",
    "FlagView",
    "FlagWriteResponse",
    "KillRequest",
    "KillResponse",
    "PlanAbort",
    "PlanChange",
    "PlanCreate",
    "PlanGuard",
    "PlanList",
    "PlanView",
    "PlanWriteResponse",
    "Problem",
    "PropagationView",
    "TokenCreate",
    "TokenCreated",
    "TokenRevoked",
    "TokenRotate",
    "TokenRotated",
    "TokenView",
]

AnyKey = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_KEY_LENGTH + 1)]


class FlagCreate(Flag, kw_only=True, forbid_unknown_fields=True):
    """A new flag: its key plus any flag fields (a new flag is disabled at 100 %)."""

    key: AnyKey
    reason: Reason | None = None


class FlagReplace(Flag, kw_only=True, forbid_unknown_fields=True):
    """A whole flag for ``PUT``: what ``GET`` returned, edited (``key``, if present, must
    name the same flag; versions and timestamps are set by the server)."""

    key: str | None = None


class FlagView(Flag, kw_only=True, omit_defaults=False):
    key: str


class FlagWriteResponse(msgspec.Struct):
    flag: FlagView
    snapshot_version: int


class FlagList(msgspec.Struct):
    flags: list[FlagView]
    snapshot_version: int
    #: Stored flags that cannot be read (key -> why): they serve PARSE_ERROR until repaired
    #: with a delete or an import.
    unreadable: dict[str, str] = {}


class EnableRequest(msgspec.Struct, forbid_unknown_fields=True):
    percentage: Annotated[float, msgspec.Meta(ge=0, le=100)] | None = None
    reason: Reason | None = None


class DisableRequest(msgspec.Struct, forbid_unknown_fields=True):
    reason: Reason | None = None


class KillRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Disable several flags in one atomic change: ``keys``, every flag with ``tag``, or
    ``all``. ``reason`` is required: an emergency is worth one line in the audit log."""

    reason: Reason
    keys: list[AnyKey] | None = None
    tag: str | None = None
    all: bool = False


class KillResponse(msgspec.Struct):
    flags: list[FlagView]
    snapshot_version: int
    #: Stored flags that cannot be read, so were not disabled (they serve PARSE_ERROR).
    unreadable: list[str] = []


class AuditPage(msgspec.Struct):
    entries: list[AuditEntry]
    #: Pass as ``before_id`` for the next (older) page; ``None`` at the end.
    next_before_id: int | None


class PropagationView(msgspec.Struct):
    """Which live workers of which instances have applied ``version``."""

    version: int
    complete: bool
    workers: list[WorkerStatus]
    #: Live workers still below ``version``.
    stragglers: list[WorkerStatus]


#: A token lifetime as ``flags token create --expires`` spells it (bounds checked by
#: ``flagport.durations.token_lifetime``).
ExpiresText = Annotated[str, msgspec.Meta(max_length=32, pattern=PRINTABLE_PATTERN)]


class TokenCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[
        str,
        msgspec.Meta(
            pattern=TOKEN_NAME_PATTERN,
            description="1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or "
            "a digit; unique; not 'admin' or 'seed' (the bootstrap token and --seed)",
        ),
    ]
    #: Required: a token's reach is chosen, never assumed (docs/spec.md section 5).
    scope: TokenScope
    #: How long the token lives (``90d``, ``12w``, ``36h``; 1h to 730d); left out: it never
    #: expires.
    expires: ExpiresText | None = None


class TokenRotate(msgspec.Struct, forbid_unknown_fields=True):
    """A new secret for a token (same id and name); the body may be left out."""

    #: The new secret's lifetime; left out: the token's lifetime so far, from now (a token
    #: that never expired still never does).
    expires: ExpiresText | None = None
    reason: Reason | None = None


class TokenView(msgspec.Struct, omit_defaults=True):
    id: str
    name: str
    scope: str
    created_at: str
    revoked_at: str | None = None
    #: When the token stops working (absent: never).
    expires_at: str | None = None
    rotated_at: str | None = None
    #: ``expired``, ``expiring`` (within 7 days), ``revoked``; absent: valid.
    status: str | None = None


class TokenRevoked(TokenView, kw_only=True):
    """The revoked token and the snapshot version that carries the revocation: workers
    refuse the token once they have applied it (``GET /admin/v1/propagation``)."""

    snapshot_version: int


class SecretRotate(msgspec.Struct, forbid_unknown_fields=True):
    """Why the server secret is replaced (for the audit log); the body may be left out."""

    reason: Reason | None = None


class SecretRotated(msgspec.Struct):
    """The server secret was replaced (its value is never shown): stream tickets made before
    stop opening streams once every worker has applied ``snapshot_version``."""

    rotated_at: str
    snapshot_version: int


class TokenCreated(msgspec.Struct):
    token: TokenView
    #: The secret, shown once: only its hash is stored.
    secret: str
    #: Every worker that has applied this version accepts the token (other workers learn
    #: of it within milliseconds: wait on ``/admin/v1/propagation`` to be sure).
    snapshot_version: int


class TokenList(msgspec.Struct):
    tokens: list[TokenView]


class TokenRotated(msgspec.Struct):
    """The token with its new secret (shown once) and the snapshot version from which every
    worker refuses the old secret (``GET /admin/v1/propagation``)."""

    token: TokenView
    secret: str
    snapshot_version: int


class KeyDiff(msgspec.Struct):
    added: list[str]
    changed: list[str]
    removed: list[str]

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed)


class SnapshotDiff(msgspec.Struct):
    flags: KeyDiff
    segments: KeyDiff

    @property
    def empty(self) -> bool:
        return self.flags.empty and self.segments.empty


class ImportResponse(msgspec.Struct):
    """The diff an import made (or, with ``dry_run``, would make)."""

    dry_run: bool
    applied: bool
    diff: SnapshotDiff
    snapshot_version: int


class TargetsRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``{variant: [targetingKey, ...]}``: these units always get that variant."""

    targets: dict[str, list[str]]
    reason: Reason | None = None


class RulesRequest(msgspec.Struct, forbid_unknown_fields=True):
    rules: list[Rule]
    reason: Reason | None = None


class SegmentView(Segment, kw_only=True, omit_defaults=False):
    key: str


class SegmentWriteResponse(msgspec.Struct):
    segment: SegmentView
    snapshot_version: int


class SegmentList(msgspec.Struct):
    segments: list[SegmentView]
    snapshot_version: int


class ExplainRequest(msgspec.Struct, forbid_unknown_fields=True):
    context: dict[str, Any]


class Problem(msgspec.Struct, omit_defaults=True):
    """RFC 9457 problem details."""

    title: str
    status: int
    detail: str
    type: str = "about:blank"
    #: JSONPath of the offending field, when one is to blame.
    field: str | None = None
    extra: dict[str, Any] | None = None


# -- rollout plans (docs/spec.md, "Guarded rollouts") -----------------------------------------


class PlanCreate(PlanOptions, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A new plan, its options as ``flags rollout start`` takes them (durations as text:
    ``30m``; ``start_at`` ISO-8601 with its offset, or ``HH:MM`` with ``tz``; ``window``
    ``HH:MM-HH:MM`` with ``tz``; ``guards`` in the guard grammar; ``prometheus`` the
    Prometheus HTTP API base URL that ``promql(...)`` guards query, each query evaluated
    once before the plan is made)."""

    reason: Reason | None = None


class PlanChange(msgspec.Struct, forbid_unknown_fields=True):
    reason: Reason | None = None


class PlanAbort(msgspec.Struct, forbid_unknown_fields=True):
    """``rollback``: disable the flag in the same commit (``flags rollout abort --rollback``)."""

    reason: Reason | None = None
    rollback: bool = False


class PlanGuard(msgspec.Struct):
    """One guard's reading now: ``verdict`` is ``pass``, ``breach`` or ``not enough data``;
    ``evidence`` its rule, window, threshold, value and sample per cohort (and the test's)."""

    index: int
    verdict: str
    evidence: Evidence


class PlanView(msgspec.Struct):
    """A plan and where it stands at ``now``: ``step`` is 1-based (0: no step exposed),
    ``next_at`` when the next step (or the start, or the completion) may come, if known;
    ``decision`` what the driver would do now and why; every guard's reading."""

    key: str
    status: str
    step: int
    steps: list[float]
    percentage: float | None
    now: float
    next_at: float | None
    decision: str
    reason: str | None
    guards: list[PlanGuard]
    plan: Plan


class PlanList(msgspec.Struct):
    plans: list[PlanView]
    unreadable: dict[str, str] = {}


class PlanWriteResponse(msgspec.Struct):
    plan: Plan
    snapshot_version: int

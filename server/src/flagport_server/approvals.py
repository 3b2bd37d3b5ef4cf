"""Approval policies and change requests: the operations (docs/spec.md, "Approvals";
docs/adr/0029-approvals-and-break-glass.md). The rule of what needs a request is
:mod:`flagport_server.approval_policy`; it holds in :class:`AdminService`'s commit, for
every write. This service keeps the policies and the requests, and applies an approved
request through the same admin operations, with the request named in the actor (so the
policy lets exactly that change through, and its audit entries name the request).

Every policy change and every step of a request (``request.created``, ``request.approved``,
``request.rejected``, ``request.expired``, ``request.failed``, ``policy.added``,
``policy.removed``) is an audit entry of kind ``request``, keyed by the flag (or the
policy): the history of a flag shows its requests, and webhooks see them as events.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from typing import Any, Final, Literal

import msgspec

from flagport import InvalidDocumentError
from flagport.rollout import RolloutError
from flagport_server.approval_policy import policy_id
from flagport_server.audit import audit_entry
from flagport_server.auth import BOOTSTRAP_TOKEN_ID, Actor
from flagport_server.errors import (
    AlreadyExists,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PreconditionFailed,
    ServerError,
    StoreError,
)
from flagport_server.services import AdminService, utc_now
from flagport_server.stores.base import ApprovalPolicy, AuditQuery, ChangeRequest, RequestStatus
from flagport_server.wire.admin_v1 import PlanCreate
from flagport_server.wire.approvals_v1 import (
    DeleteChange,
    EnableChange,
    PutChange,
    RequestChange,
    RolloutResumeChange,
    RolloutStartChange,
    RulesChange,
    SegmentChange,
    TargetsChange,
)

__all__ = ["MAX_PENDING_REQUESTS", "REQUEST_TTL_S", "ApprovalService"]

#: A request not decided within this long expires (it must be filed again).
REQUEST_TTL_S: Final = 24 * 3600
#: Decided requests are kept this long, then dropped as new ones are filed.
DECIDED_KEPT_S: Final = 30 * 86400
#: Pending requests a store holds at most: a flood of requests cannot fill it.
MAX_PENDING_REQUESTS: Final = 500
#: An approval claimed this long ago and still applying was cut short (a commit takes
#: milliseconds, a store's own timeouts seconds): it is settled from the audit when read.
APPLY_GRACE_S: Final = 60.0
#: Audit entries read per page to settle a claim (the approver's on the key, since the claim).
_SETTLE_AUDIT_PAGE: Final = 1000
#: What refuses an approved change before anything is committed (the request fails, saying
#: why); a store's error leaves the outcome unknown, so it is not one of them.
_REFUSALS: Final = (ServerError, InvalidDocumentError, RolloutError, msgspec.ValidationError)
#: Why a request cut short with nothing committed failed.
INTERRUPTED: Final = (
    "interrupted: the server stopped while applying the approved change, and nothing was "
    "changed; file the request again"
)


def _epoch(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def _iso(at: float) -> str:
    moment = dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")


def _refuse_bootstrap(actor: Actor, what: str) -> None:
    """The bootstrap token is for bootstrapping and emergencies: it is nobody in
    particular, so it may neither ask for a change nor be the second person."""
    if actor.token_id == BOOTSTRAP_TOKEN_ID:
        raise Forbidden(
            f"the bootstrap token (FLAGPORT_ADMIN_TOKEN) may not {what}: use a personal token "
            "(flags token create NAME --scope admin --expires 90d)"
        )


class ApprovalService:
    """Policies and change requests over the admin service's store and operations."""

    def __init__(self, admin: AdminService) -> None:
        self.admin = admin
        self.store = admin.store

    # -- policies -----------------------------------------------------------------------

    async def policies(self) -> list[ApprovalPolicy]:
        return await self.store.approval_policies()

    async def require(
        self, kind: Literal["flag", "tag"], target: str, actor: Actor, reason: str | None
    ) -> tuple[ApprovalPolicy, int]:
        """Put flag ``target`` (or every flag tagged ``target``) under an approval policy."""
        if kind == "flag" and target not in (await self.admin.document()).flags:
            raise NotFound(f"flag {target!r} not found")
        policy = ApprovalPolicy(
            id=policy_id(kind, target),
            kind=kind,
            target=target,
            created_at=utc_now(),
            created_by=actor.name,
            reason=reason,
        )
        if not await self.store.add_approval_policy(policy):
            raise AlreadyExists(f"approval policy {policy.id!r} already exists")
        entry = audit_entry(
            actor,
            "policy.added",
            policy.id,
            policy.created_at,
            kind="request",
            reason=reason,
            after=msgspec.to_builtins(policy),
        )
        return policy, await self.admin.commit_audit(entry)

    async def remove(self, policy: str, actor: Actor, reason: str | None) -> int:
        removed = await self.store.remove_approval_policy(policy)
        if removed is None:
            raise NotFound(f"approval policy {policy!r} not found")
        entry = audit_entry(
            actor,
            "policy.removed",
            policy,
            utc_now(),
            kind="request",
            reason=reason,
            before=msgspec.to_builtins(removed),
        )
        return await self.admin.commit_audit(entry)

    # -- requests -----------------------------------------------------------------------

    async def requests(self) -> list[ChangeRequest]:
        """Every kept request, oldest first; a pending one past its expiry is marked
        expired (and audited) as it is read."""
        found = await self.store.change_requests()
        return [await self._settled(r) for r in found]

    async def request(self, request_id: str) -> ChangeRequest:
        found = await self._stored(request_id)
        if found is None:
            raise NotFound(f"change request {request_id!r} not found")
        return await self._settled(found)

    async def file(
        self, key: str, change: RequestChange, reason: str, actor: Actor
    ) -> tuple[ChangeRequest, int]:
        """Record ``change`` of ``key`` for a second person to approve, with the version of
        the flag (or segment) it was asked on."""
        _refuse_bootstrap(actor, "file change requests")
        document = await self.admin.document()
        version: int | None
        if isinstance(change, SegmentChange):
            segment = document.segments.get(key)
            version = None if segment is None else segment.version
        else:
            flag = document.flags.get(key)
            if flag is None:
                raise NotFound(f"flag {key!r} not found")
            version = flag.version
        if isinstance(change, RolloutStartChange) and change.plan.key != key:
            raise InvalidInput(
                f"the plan names flag {change.plan.key!r}, the request {key!r}", "$.change.plan.key"
            )
        now = time.time()
        kept = await self.requests()
        pending = [r for r in kept if r.status == "pending"]
        if len(pending) >= MAX_PENDING_REQUESTS:
            raise Conflict(
                f"{len(pending)} change requests are pending (at most {MAX_PENDING_REQUESTS}): "
                "decide or let some expire first"
            )
        drop = [
            r.id
            for r in kept
            if r.status != "pending"
            and r.decided_at is not None
            and now - _epoch(r.decided_at) > DECIDED_KEPT_S
        ]
        filed = ChangeRequest(
            id=secrets.token_hex(6),
            key=key,
            change=msgspec.to_builtins(change),
            reason=reason,
            requested_by=actor.name,
            requested_by_id=actor.token_id or "",
            created_at=_iso(now),
            expires_at=_iso(now + REQUEST_TTL_S),
            status="pending",
            version=version,
        )
        await self.store.add_change_request(filed, drop)
        return filed, await self._audit(filed, "request.created", actor, reason)

    async def approve(
        self, request_id: str, actor: Actor, reason: str | None
    ) -> tuple[ChangeRequest, int]:
        """Apply the request's change as ``actor`` (a second person), on the version it was
        filed on; the request is ``applied``, or ``failed`` (412: the flag changed since,
        request it again; or the change's own refusal)."""
        _refuse_bootstrap(actor, "approve change requests")
        pending = await self._pending(request_id, "approve")
        if actor.token_id is not None and actor.token_id == pending.requested_by_id:
            raise Forbidden(
                f"change request {request_id} was filed by this token ({pending.requested_by}): "
                "a second person must approve it"
            )
        claimed = msgspec.structs.replace(
            self._decided(pending, "applied", actor, reason), applying=True
        )
        if not await self.store.decide_change_request(claimed, "pending"):
            raise Conflict(f"change request {request_id} was decided meanwhile: see flags requests")
        applied = msgspec.structs.replace(claimed, applying=False)
        try:
            version = await self._apply(pending, actor)
        except Exception as refused:
            if not isinstance(refused, _REFUSALS) or isinstance(refused, StoreError):
                # Not a refusal: the commit may have landed (a timeout after Redis ran it),
                # so the claim stays applying and is settled from the audit, which commits
                # with the change (APPLY_GRACE_S).
                raise
            # Whatever refused the change (a changed flag, the configuration's own checks,
            # a plan's options), the request is over: it says why, and must be filed again.
            why = refused.detail if isinstance(refused, ServerError) else str(refused)
            if isinstance(refused, PreconditionFailed):
                why = refused.detail = (
                    f"{why}: it changed since the request was filed; file the request again"
                )
            failed = msgspec.structs.replace(applied, status="failed", decision=why)
            # Lost only to a reader that settled the claim after APPLY_GRACE_S, from the
            # audit (nothing committed: failed as interrupted): that outcome stands.
            if await self.store.decide_change_request(failed, "applied", applying=True):
                await self._audit(failed, "request.failed", actor, why)
            raise
        if await self.store.decide_change_request(applied, "applied", applying=True):
            await self._audit(applied, "request.approved", actor, reason)
        else:
            await self._correct_early_settle(applied, actor, reason)
        return applied, version

    async def reject(
        self, request_id: str, actor: Actor, reason: str | None
    ) -> tuple[ChangeRequest, int]:
        """Turn the request down (its author may withdraw it so too)."""
        pending = await self._pending(request_id, "reject")
        rejected = self._decided(pending, "rejected", actor, reason)
        if not await self.store.decide_change_request(rejected, "pending"):
            raise Conflict(f"change request {request_id} was decided meanwhile: see flags requests")
        return rejected, await self._audit(rejected, "request.rejected", actor, reason)

    # -- inside -------------------------------------------------------------------------

    async def _pending(self, request_id: str, what: str) -> ChangeRequest:
        found = await self.request(request_id)
        if found.status == "expired":
            raise Conflict(
                f"change request {request_id} expired at {found.expires_at} (requests expire "
                f"after {REQUEST_TTL_S // 3600} h): file it again"
            )
        if found.status != "pending":
            raise Conflict(
                f"change request {request_id} is already {found.status}"
                + (f" (by {found.decided_by})" if found.decided_by else "")
                + f": it cannot be {what}d"
            )
        return found

    @staticmethod
    def _decided(
        request: ChangeRequest, status: RequestStatus, actor: Actor, reason: str | None
    ) -> ChangeRequest:
        return msgspec.structs.replace(
            request,
            status=status,
            decided_by=actor.name,
            decided_by_id=actor.token_id,
            decided_at=utc_now(),
            decision=reason,
        )

    async def _settled(self, request: ChangeRequest) -> ChangeRequest:
        """``request`` as it is now: expired if due, settled if its approval was cut short."""
        request = await self._expire_if_due(request)
        return await self._settle_if_interrupted(request)

    async def _settle_if_interrupted(self, request: ChangeRequest) -> ChangeRequest:
        """A request claimed by an approval more than :data:`APPLY_GRACE_S` ago and still
        applying: its change and the change's audit entries commit together, so an entry
        naming the request says the change was made (the request is applied); none says
        nothing was (it failed, :data:`INTERRUPTED`)."""
        decided_at = request.decided_at
        if (
            not request.applying
            or decided_at is None
            or time.time() - _epoch(decided_at) < APPLY_GRACE_S
        ):
            return request
        made = await self._change_committed(request, decided_at)
        settled = msgspec.structs.replace(
            request,
            applying=False,
            status="applied" if made else "failed",
            decision=request.decision if made else INTERRUPTED,
        )
        if not await self.store.decide_change_request(settled, "applied", applying=True):
            # Settled meanwhile, by another reader or by the approval itself: what it is now.
            return await self._stored(request.id) or settled
        approver = Actor(request.decided_by or "", request.decided_by_id)
        if made:
            await self._audit(settled, "request.approved", approver, request.decision)
        else:
            await self._audit(settled, "request.failed", approver, INTERRUPTED)
        return settled

    async def _change_committed(self, request: ChangeRequest, claimed_at: str) -> bool:
        """Whether the audit holds an entry of the request's change: the approver's, on its
        key, since the claim, naming the request (paged back to the claim: a busy key may
        have many entries since)."""
        query = AuditQuery(
            key=request.key, actor=request.decided_by, since=claimed_at, limit=_SETTLE_AUDIT_PAGE
        )
        while True:
            page = await self.admin.audit(query)
            if any(e.request_id == request.id and e.kind != "request" for e in page):
                return True
            if len(page) < _SETTLE_AUDIT_PAGE:
                return False
            query = msgspec.structs.replace(query, before_id=page[-1].id)

    async def _correct_early_settle(
        self, applied: ChangeRequest, approver: Actor, reason: str | None
    ) -> None:
        """The approval committed its change after a reader, past :data:`APPLY_GRACE_S`
        (a store that slow, or clocks that far apart), settled the claim: a reader that found
        the change wrote ``applied`` (nothing to do); one that found none wrote ``failed`` as
        interrupted, which the commit has made untrue, so the request is ``applied`` after
        all, and audited so."""
        now = await self._stored(applied.id)
        if now is None or now.status != "failed" or now.decision != INTERRUPTED:
            return
        if await self.store.decide_change_request(applied, "failed"):
            await self._audit(applied, "request.approved", approver, reason)

    async def _stored(self, request_id: str) -> ChangeRequest | None:
        """The request as the store holds it (neither expired nor settled here)."""
        return next((r for r in await self.store.change_requests() if r.id == request_id), None)

    async def _expire_if_due(self, request: ChangeRequest) -> ChangeRequest:
        if request.status != "pending" or time.time() < _epoch(request.expires_at):
            return request
        expired = msgspec.structs.replace(request, status="expired")
        if await self.store.decide_change_request(expired, "pending"):
            await self._audit(expired, "request.expired", None, None)
            return expired
        return await self.request(request.id)  # decided meanwhile: what it is now

    async def _audit(
        self, request: ChangeRequest, action: str, actor: Actor | None, reason: str | None
    ) -> int:
        who = actor or Actor(request.requested_by, request.requested_by_id)
        entry = audit_entry(
            Actor(who.name, who.token_id, request.id),
            action,
            request.key,
            utc_now(),
            kind="request",
            reason=reason,
            after=msgspec.to_builtins(request),
        )
        return await self.admin.commit_audit(entry)

    async def _apply(self, request: ChangeRequest, approver: Actor) -> int:
        """The request's change, made by ``approver`` with the request named (the policy
        lets it through), on the version it was filed on."""
        change = msgspec.convert(request.change, type=RequestChange)
        admin, key, expected = self.admin, request.key, request.version
        actor = Actor(approver.name, approver.token_id, request.id)
        why = f"request {request.id} by {request.requested_by}: {request.reason}"
        if isinstance(change, EnableChange):
            return (await admin.enable(key, change.percentage, actor, why, expected))[1]
        if isinstance(change, TargetsChange):
            return (await admin.set_targets(key, change.targets, actor, why, expected))[1]
        if isinstance(change, RulesChange):
            return (await admin.set_rules(key, change.rules, actor, why, expected))[1]
        if isinstance(change, PutChange):
            return (await admin.replace_flag(key, change.flag, f'"{expected}"', actor, why))[1]
        if isinstance(change, SegmentChange):
            match = None if expected is None else f'"{expected}"'
            if match is None and key in (await admin.document()).segments:
                raise PreconditionFailed("segment", key, None, 1)
            return (await admin.put_segment(key, change.segment, match, actor, why))[1]
        await self._check_flag_version(key, expected)
        if isinstance(change, DeleteChange):
            return (await admin.delete_flag(key, False, actor, why))[1]
        if isinstance(change, RolloutResumeChange):
            return (await admin.plans.resume(key, actor, why))[1]
        assert isinstance(change, RolloutStartChange)
        options: dict[str, Any] = msgspec.structs.asdict(change.plan)
        return (await admin.plans.start(PlanCreate(**options, reason=why), actor))[1]

    async def _check_flag_version(self, key: str, expected: int | None) -> None:
        flag = (await self.admin.document()).flags.get(key)
        actual = None if flag is None else flag.version
        if actual != expected:
            raise PreconditionFailed("flag", key, expected, actual)

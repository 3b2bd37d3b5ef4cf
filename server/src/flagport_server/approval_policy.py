"""Approval policies: which changes wait for a second person, and which never wait
(docs/spec.md, "Approvals"; docs/adr/0029-approvals-and-break-glass.md).

:func:`reduces_exposure` is the one rule deciding whether a change to a flag (before ->
after) reduces its exposure: turning it off, or lowering its percentage with nothing else
changed. Every other change of a guarded flag (enabling, a higher percentage, targets, rules,
variants, tags, a deletion, a PUT or an import touching it), a change to a segment a guarded
flag uses, and a plan start or resume on a guarded flag needs an approved change request
(:func:`blocked_changes`). What reduces exposure is applied at once, whoever asks, and is
marked ``break_glass`` in its audit entry (:func:`mark_break_glass`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import msgspec

from flagport.engine import Flag
from flagport.rollout.plan import Plan, PlanStatus
from flagport_server.plans import uses_segment
from flagport_server.stores.base import ApprovalPolicy, AuditEntry, Mutation, StoreState

__all__ = [
    "blocked_changes",
    "guarding_policy",
    "mark_break_glass",
    "policy_id",
    "reduces_exposure",
]

_encoder = msgspec.json.Encoder()
#: Plan states in which the driver raises the flag's exposure.
_ACTIVE: Final = frozenset({PlanStatus.SCHEDULED, PlanStatus.RUNNING})


def policy_id(kind: str, target: str) -> str:
    """A policy's id: ``tag:payments``, ``flag:checkout``."""
    return f"{kind}:{target}"


def _rest(flag: Flag) -> bytes:
    """``flag`` without what a reducing change may change (state, percentage) and what the
    server stamps (versions, timestamps), as JSON: compared as encoded, because Python
    finds ``True == 1`` while a client served ``1`` instead of ``true`` is served another
    value."""
    return _encoder.encode(
        msgspec.structs.replace(
            flag, enabled=False, percentage=0.0, version=0, created_at=None, updated_at=None
        )
    )


def reduces_exposure(before: Flag | None, after: Flag | None) -> bool:
    """Whether changing a flag from ``before`` to ``after`` (``None``: absent) can only
    serve its on variants to fewer units: True for turning it off or lowering its
    percentage with nothing else changed (and for no change at all, and for creating a
    disabled flag); False for anything else, a deletion included (every client then serves
    its own code default, which may be on)."""
    if after is None:
        return False
    if before is None:
        return not after.enabled
    if _rest(before) != _rest(after):
        return False
    if not after.enabled:
        return True
    return before.enabled and after.percentage <= before.percentage


def guarding_policy(
    policies: Sequence[ApprovalPolicy], key: str, *flags: Flag | None
) -> ApprovalPolicy | None:
    """The policy that guards flag ``key`` (by its key, or by a tag of any of ``flags``: its
    bodies before and after a change, so removing a tag is guarded too), else ``None``."""
    tags = {tag for flag in flags if flag is not None for tag in flag.tags}
    for policy in policies:
        if (policy.kind == "flag" and policy.target == key) or (
            policy.kind == "tag" and policy.target in tags
        ):
            return policy
    return None


def _activates(before: Plan | None, after: Plan | None) -> bool:
    """A plan transition after which the driver raises the flag's exposure (a new plan, a
    resume) that was not so before."""
    if after is None or after.status not in _ACTIVE:
        return False
    return before is None or before.status not in _ACTIVE


def blocked_changes(
    state: StoreState, mutations: Sequence[Mutation], policies: Sequence[ApprovalPolicy]
) -> list[str]:
    """What in ``mutations`` (committed onto ``state``) needs an approved change request,
    in words (``flag 'checkout' (policy tag:payments)``); empty when nothing does."""
    if not policies:
        return []
    flags = state.document.flags
    blocked: list[str] = []
    for mutation in mutations:
        if mutation.kind == "flag":
            before = flags.get(mutation.key)
            after = mutation.value if isinstance(mutation.value, Flag) else None
            policy = guarding_policy(policies, mutation.key, before, after)
            if policy is not None and not reduces_exposure(before, after):
                blocked.append(f"flag {mutation.key!r} (policy {policy.id})")
        elif mutation.kind == "segment":
            for key, flag in sorted(flags.items()):
                policy = guarding_policy(policies, key, flag)
                if policy is not None and uses_segment(flag, mutation.key):
                    blocked.append(
                        f"segment {mutation.key!r}, used by flag {key!r} (policy {policy.id})"
                    )
                    break
        elif mutation.kind == "plan":
            after_plan = mutation.value if isinstance(mutation.value, Plan) else None
            policy = guarding_policy(policies, mutation.key, flags.get(mutation.key))
            if policy is not None and _activates(state.plans.get(mutation.key), after_plan):
                blocked.append(f"the rollout plan of flag {mutation.key!r} (policy {policy.id})")
    return blocked


def mark_break_glass(
    state: StoreState, entries: Sequence[AuditEntry], policies: Sequence[ApprovalPolicy]
) -> list[AuditEntry]:
    """``entries`` with ``break_glass`` set on those of a flag under a policy: changes that
    went through without a request because they reduce exposure (:func:`blocked_changes`
    found nothing to block)."""
    flags = state.document.flags
    marked: list[AuditEntry] = []
    for entry in entries:
        changed = entry.before is not None or entry.plan is not None  # not a creation
        if (
            changed
            and entry.kind == "flag"
            and guarding_policy(policies, entry.key, flags.get(entry.key))
        ):
            marked.append(msgspec.structs.replace(entry, break_glass=True))
        else:
            marked.append(entry)
    return marked

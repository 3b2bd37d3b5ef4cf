"""The audit log's two rules: how a change is recorded (:func:`audit_entry`) and how a
recorded change of a flag reads in a report (:func:`change_summary`)."""

from __future__ import annotations

from typing import Any

import msgspec

from flagport.engine import Flag, Segment
from flagport_server.auth import Actor
from flagport_server.stores.base import AuditEntry, AuditKind

__all__ = ["audit_entry", "change_summary", "percentage_text"]


def _body(value: Flag | Segment | dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    return msgspec.to_builtins(value)  # type: ignore[no-any-return]


def audit_entry(
    actor: Actor,
    action: str,
    key: str,
    at: str,
    *,
    kind: AuditKind = "flag",
    reason: str | None = None,
    before: Flag | Segment | dict[str, Any] | None = None,
    after: Flag | Segment | dict[str, Any] | None = None,
) -> AuditEntry:
    """The entry recording that ``actor`` made ``action`` on ``key`` at ``at``: ``before``
    and ``after`` are the flag or segment bodies as exported (``None``: absent)."""
    return AuditEntry(
        actor=actor.name,
        token_id=actor.token_id,
        action=action,
        key=key,
        at=at,
        kind=kind,
        reason=reason,
        before=_body(before),
        after=_body(after),
        request_id=actor.request_id,
    )


def change_summary(entry: AuditEntry) -> str | None:
    """ "off -> on, 10 % -> 50 %" for an entry that changed what a flag serves, else None
    (a change request's entries are keyed by the flag too, but change nothing; nor does
    a notice, such as a flag found stale)."""
    if entry.kind != "flag":
        return None
    before, after = entry.before, entry.after
    if after is not None and before is None:
        state = "on" if after.get("enabled") else "off"
        return f"created ({state}, {after.get('percentage')} %)"
    if before is not None and after is None:
        return "deleted"
    if before is None or after is None:
        return None
    parts = []
    if bool(before.get("enabled")) != bool(after.get("enabled")):
        parts.append("on" if after.get("enabled") else "off")
    old, new = before.get("percentage", 100), after.get("percentage", 100)
    if old != new:
        parts.append(f"{percentage_text(old)} % -> {percentage_text(new)} %")
    return ", ".join(parts) or None


def percentage_text(value: Any) -> str:
    """A percentage as reports write it: ``12.5``, ``50``."""
    if isinstance(value, int | float):
        return f"{float(value):.3f}".rstrip("0").rstrip(".")
    return str(value)

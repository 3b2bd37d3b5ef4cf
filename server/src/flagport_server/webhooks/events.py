"""Which event an audit entry is (:func:`event_of`: the one mapping), and which events a
webhook may subscribe to (:func:`check_events`).

Entries of kinds this server does not know yet (written by a newer one, or by a feature
added later, such as change requests) still become events: kind ``K`` with action ``A`` is
``K.A`` (``A`` itself when it already starts with ``K.``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from flagport.rollout.decision import DRIVER
from flagport_server.errors import InvalidInput
from flagport_server.stores.base import AuditEntry
from flagport_server.stores.webhook_records import WebhookRecord

__all__ = [
    "ALL_EVENTS",
    "EVENTS",
    "MAX_EVENT_NAMES",
    "OPEN_FAMILIES",
    "TEST_EVENT",
    "check_events",
    "event_of",
    "wanted",
]

#: The events the audit log's known kinds make, with what each is.
EVENTS: Final = {
    "flag.changed": "a flag was created, changed (state, targets, rules, PUT) or deleted",
    "segment.changed": "a segment was created, changed or deleted",
    "token.changed": "a token was created or revoked, or the server secret rotated",
    "webhook.changed": "a webhook was added or removed",
    "import.applied": "an import (or the seed) changed a flag or a segment",
    "rollout.step": "a rollout plan moved: created, started, advanced, completed, paused, "
    "resumed, aborted",
    "rollout.action": "the driver acted on a guard or the max hold: rollback, step back, "
    "pause, with its evidence",
    "flag.stale": "the daily check found a flag newly stale",
}
#: Every event.
ALL_EVENTS: Final = "*"
#: Families whose events are named by their audit action (any ``family.action``): the change
#: requests of the approvals feature (``request.created``, ``request.approved``...).
OPEN_FAMILIES: Final = frozenset({"request"})
#: ``webhook test`` sends this one (never from the audit log).
TEST_EVENT: Final = "webhook.test"
MAX_EVENT_NAMES: Final = 32

#: Transitions a plan makes on schedule; the driver's other transitions are its actions.
_STEPS: Final = frozenset(
    {"plan-create", "plan-start", "plan-advance", "plan-complete", "plan-hold-restart"}
)
_FAMILIES: Final = frozenset(name.split(".")[0] for name in EVENTS) | OPEN_FAMILIES
_ACTION: Final = re.compile(r"[a-z][a-z0-9_-]{0,63}")


def event_of(entry: AuditEntry) -> str:
    """The event audit entry ``entry`` is (docs/spec.md, "Webhooks", lists them)."""
    # A plain str: entries of kinds added after this server are events too.
    kind: str = entry.kind
    action = entry.action
    if kind == "notice":
        return action  # a notice names its event: flag.stale
    if action.startswith("plan-"):
        automatic = entry.actor == DRIVER and action not in _STEPS
        return "rollout.action" if automatic else "rollout.step"
    if action == "import" or kind == "snapshot":
        return "import.applied"
    if kind == "flag":
        return "flag.changed"
    if kind == "segment":
        return "segment.changed"
    if kind == "token":
        return "webhook.changed" if action.startswith("webhook.") else "token.changed"
    return action if action.startswith(f"{kind}.") else f"{kind}.{action}"


def check_events(names: Sequence[str], path: str = "$.events") -> tuple[str, ...]:
    """``names`` as a webhook keeps them (sorted, once each); :class:`InvalidInput` naming the
    first unknown one. Besides the names of :data:`EVENTS`: ``*`` (every event),
    ``family.*`` (every event of a family) and any ``request.<action>``."""
    if not names:
        raise InvalidInput("events must name at least one event (or * for all)", path)
    if len(names) > MAX_EVENT_NAMES:
        raise InvalidInput(f"events names at most {MAX_EVENT_NAMES} events", path)
    for index, name in enumerate(names):
        if not _known(name):
            raise InvalidInput(
                f"unknown event {name[:80]!r}: one of {', '.join(EVENTS)}, * (all), "
                f"FAMILY.* or request.ACTION",
                f"{path}[{index}]",
            )
    return tuple(sorted(set(names)))


def _known(name: str) -> bool:
    if name == ALL_EVENTS or name in EVENTS:
        return True
    family, dot, action = name.partition(".")
    if not dot or family not in _FAMILIES:
        return False
    return action == "*" or (family in OPEN_FAMILIES and _ACTION.fullmatch(action) is not None)


def wanted(record: WebhookRecord, entry: AuditEntry, event: str) -> bool:
    """Whether webhook ``record`` wants ``entry`` (event ``event``): one of its events, and
    with a tag filter, a flag carrying the tag before or after the change."""
    family = event.split(".", maxsplit=1)[0]
    if not any(e in (ALL_EVENTS, event, f"{family}.*") for e in record.events):
        return False
    if record.tag is None:
        return True
    for body in (entry.before, entry.after):
        tags = body.get("tags") if body is not None else None
        if isinstance(tags, list) and record.tag in tags:
            return True
    return False

"""The records a store keeps for webhooks (docs/spec.md, "Webhooks";
docs/adr/0028-webhooks-over-the-audit-log.md): the webhook itself, its cursor over audit
ids, and the delivery state of each audit entry it was sent (or tried).

There is no second log: what is delivered is the audit entry, read back by id. A webhook's
cursor is the highest audit id at or below which every entry is delivered, dead or not
wanted by the webhook (its events and tag filter); it only moves forward.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

__all__ = [
    "DELIVERED_KEPT",
    "MAX_WEBHOOKS",
    "DeliveryStatus",
    "WebhookDelivery",
    "WebhookFormat",
    "WebhookRecord",
]

#: Webhooks one store holds at most: each is a task and an HTTP request per change.
MAX_WEBHOOKS: Final = 20
#: Delivered entries kept per webhook (``flags webhook deliveries`` shows them); pending and
#: dead ones are kept until delivered or the webhook is removed.
DELIVERED_KEPT: Final = 50

WebhookFormat = Literal["json", "slack"]
DeliveryStatus = Literal["pending", "delivered", "dead"]


class WebhookRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """A webhook as stored. ``secret`` is the shared HMAC key: kept so that the server can
    sign, shown once when the webhook is added, never again (only ``secret_hint``)."""

    id: str
    url: str
    secret: str
    created_at: str
    events: tuple[str, ...] = ("*",)
    tag: str | None = None
    format: WebhookFormat = "json"
    #: Who added it (the token's name), for the list.
    created_by: str | None = None

    @property
    def secret_hint(self) -> str:
        """Enough of the secret to tell two apart, too little to use: its last 4 characters."""
        return "…" + self.secret[-4:]


class WebhookDelivery(msgspec.Struct, frozen=True, omit_defaults=True):
    """The delivery of audit entry ``audit_id`` to webhook ``webhook_id``.

    ``pending``: tried and failed, tried again at ``next_try_at`` (epoch seconds);
    ``delivered``: a 2xx answer; ``dead``: still failing once the retry window had passed
    since the change (kept as a dead letter, ``flags webhook deliveries --failed``)."""

    webhook_id: str
    audit_id: int
    event: str
    status: DeliveryStatus
    attempts: int
    first_try_at: float
    last_try_at: float
    next_try_at: float | None = None
    #: The receiver's last HTTP status (None: no answer) and why it failed, if it did.
    last_status: int | None = None
    last_error: str | None = None

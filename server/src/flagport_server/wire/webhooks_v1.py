"""Admin API v1 wire models of webhooks (``/admin/v1/webhooks``; docs/spec.md, "Webhooks")."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from flagport.engine import MAX_TAG_LENGTH, PRINTABLE_PATTERN
from flagport_server.stores.webhook_records import WebhookDelivery
from flagport_server.wire.fields import Reason

__all__ = [
    "DeliveryList",
    "WebhookCreate",
    "WebhookCreated",
    "WebhookList",
    "WebhookRemoved",
    "WebhookTested",
    "WebhookView",
]

EventName = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class WebhookCreate(msgspec.Struct, forbid_unknown_fields=True):
    #: An http(s) URL, not this server itself (checked beyond its length).
    url: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
    #: Event names (``flag.changed``...), ``*`` (all, the default) or ``family.*``.
    events: Annotated[list[EventName], msgspec.Meta(min_length=1, max_length=32)] | None = None
    #: Only changes of flags carrying this tag.
    tag: (
        Annotated[
            str,
            msgspec.Meta(min_length=1, max_length=MAX_TAG_LENGTH, pattern=PRINTABLE_PATTERN),
        ]
        | None
    ) = None
    format: Literal["json", "slack"] = "json"
    #: The shared HMAC-SHA256 key, 16-256 bytes; made by the server when left out. Shown
    #: once in the answer, never again.
    secret: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=PRINTABLE_PATTERN)] | None
    ) = None
    reason: Reason | None = None


class WebhookView(msgspec.Struct, kw_only=True):
    id: str
    #: The URL without credentials, query or token-like path segments.
    url_hint: str
    events: list[str]
    tag: str | None
    format: str
    #: The secret's last characters, to tell two apart.
    secret_hint: str
    created_at: str
    created_by: str | None = None
    #: The audit id up to which every entry is delivered, dead or not wanted.
    cursor: int | None = None


class WebhookCreated(msgspec.Struct):
    webhook: WebhookView
    #: The shared secret, shown this once.
    secret: str
    snapshot_version: int


class WebhookList(msgspec.Struct):
    webhooks: list[WebhookView]


class WebhookRemoved(WebhookView, kw_only=True):
    snapshot_version: int


class WebhookTested(msgspec.Struct):
    """A ``webhook.test`` delivery's outcome: a 2xx answer is ``delivered``."""

    delivered: bool
    status: int | None
    error: str | None
    elapsed_ms: float


class DeliveryList(msgspec.Struct):
    deliveries: list[WebhookDelivery]

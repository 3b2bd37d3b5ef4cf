"""The admin API's webhooks (``/admin/v1/webhooks``; docs/spec.md, "Webhooks"): add, list,
remove, test, deliveries, redeliver. Changes need the admin scope; reads the viewer scope.
Each handler decodes, calls the webhook service, encodes."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, Response, Router, delete, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, PathParameter, QueryParameter

from flagport_server.auth import ADMIN, TOKEN_REQUIRED, VIEWER, Actor, requires, scope_guard
from flagport_server.bodies import CONFIGURATION_JSON
from flagport_server.routes.admin import ReasonQuery, strict_body
from flagport_server.stores.webhook_records import WebhookDelivery, WebhookRecord
from flagport_server.webhooks.service import WebhookService
from flagport_server.webhooks.urls import url_hint
from flagport_server.wire.fields import MAX_REQUEST_INT
from flagport_server.wire.webhooks_v1 import (
    DeliveryList,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
    WebhookRemoved,
    WebhookTested,
    WebhookView,
)

__all__ = ["webhooks_router"]

#: The app's WebhookService, injected by name (``create_app``'s dependencies).
Webhooks = NamedDependency[WebhookService]
WebhookRequest = Request[Any, Any, State]
WebhookId = Annotated[str | None, QueryParameter(required=False, max_length=64)]


def _actor(request: WebhookRequest) -> Actor:
    actor: Actor = request.state.actor
    return actor


def _view(record: WebhookRecord, cursor: int | None = None) -> WebhookView:
    return WebhookView(
        id=record.id,
        url_hint=url_hint(record.url),
        events=list(record.events),
        tag=record.tag,
        format=record.format,
        secret_hint=record.secret_hint,
        created_at=record.created_at,
        created_by=record.created_by,
        cursor=cursor,
    )


@get("/", opt=requires(VIEWER), summary="List webhooks (never their secrets)")
async def list_webhooks(webhooks: Webhooks) -> WebhookList:
    records = await webhooks.webhooks()
    cursors = await webhooks.cursors(records)
    return WebhookList(webhooks=[_view(r, cursors[r.id]) for r in records])


@post("/", status_code=201, summary="Add a webhook; its secret is shown once")
async def add_webhook(
    data: JSONBody[WebhookCreate], request: WebhookRequest, webhooks: Webhooks
) -> Response[WebhookCreated]:
    body = await strict_body(request, WebhookCreate)
    record, version = await webhooks.add(
        body.url, body.events, body.tag, body.format, body.secret, _actor(request), body.reason
    )
    # The secret is in this answer only: no cache may keep it.
    return Response(
        WebhookCreated(webhook=_view(record), secret=record.secret, snapshot_version=version),
        status_code=201,
        headers={"Cache-Control": "no-store"},
    )


@delete("/{webhook_id:str}", status_code=200, summary="Remove a webhook and its deliveries")
async def remove_webhook(
    webhook_id: FromPath[str],
    request: WebhookRequest,
    webhooks: Webhooks,
    reason: ReasonQuery = None,
) -> WebhookRemoved:
    record, version = await webhooks.remove(webhook_id, _actor(request), reason)
    return WebhookRemoved(**msgspec.structs.asdict(_view(record)), snapshot_version=version)


@post(
    "/{webhook_id:str}/test",
    status_code=200,
    summary="Send a signed webhook.test event now and report the answer",
)
async def test_webhook(
    webhook_id: FromPath[str], request: WebhookRequest, webhooks: Webhooks
) -> WebhookTested:
    result, elapsed = await webhooks.test(webhook_id, _actor(request))
    return WebhookTested(
        delivered=result.delivered,
        status=result.status,
        error=result.error,
        elapsed_ms=round(elapsed, 1),
    )


@get(
    "/deliveries",
    opt=requires(VIEWER),
    summary="Delivery states, newest first (failed: pending retries and dead letters)",
)
async def list_deliveries(
    webhooks: Webhooks,
    webhook: WebhookId = None,
    failed: Annotated[bool, QueryParameter(required=False)] = False,
    limit: Annotated[int, QueryParameter(required=False, ge=1, le=1000)] = 100,
) -> DeliveryList:
    found = await webhooks.deliveries(webhook, failed=failed, limit=limit)
    return DeliveryList(deliveries=found)


@post(
    "/{webhook_id:str}/deliveries/{audit_id:int}/redeliver",
    status_code=200,
    summary="Send a dead letter again now",
)
async def redeliver(
    webhook_id: FromPath[str],
    audit_id: Annotated[int, PathParameter(ge=1, le=MAX_REQUEST_INT)],
    webhooks: Webhooks,
) -> WebhookDelivery:
    return await webhooks.redeliver(webhook_id, audit_id)


webhooks_router = Router(
    path="/admin/v1/webhooks",
    guards=[scope_guard],
    security=TOKEN_REQUIRED,
    tags=["admin"],
    opt={CONFIGURATION_JSON: True, **requires(ADMIN)},
    route_handlers=[
        list_webhooks,
        add_webhook,
        remove_webhook,
        test_webhook,
        list_deliveries,
        redeliver,
    ],
)

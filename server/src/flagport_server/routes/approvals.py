"""The admin API's approvals (docs/spec.md, "Approvals"): policies
(``/admin/v1/approvals``) and change requests (``/admin/v1/requests``). Changes need the
admin scope; reads the viewer scope. Each handler decodes, calls the approval service,
encodes."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Router, delete, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from flagport_server.approvals import ApprovalService
from flagport_server.auth import ADMIN, TOKEN_REQUIRED, VIEWER, Actor, requires, scope_guard
from flagport_server.bodies import CONFIGURATION_JSON
from flagport_server.errors import InvalidInput
from flagport_server.routes.admin import strict_body
from flagport_server.stores.base import ApprovalPolicy, ChangeRequest
from flagport_server.wire.approvals_v1 import (
    ChangeRequestCreate,
    ChangeRequestList,
    ChangeRequestView,
    Decision,
    PolicyCreate,
    PolicyList,
    PolicyView,
    RequestDecided,
)

__all__ = ["approvals_router"]

#: The app's ApprovalService, injected by name (``create_app``'s dependencies).
Approvals = NamedDependency[ApprovalService]
ApprovalRequest = Request[Any, Any, State]


class PolicyWritten(msgspec.Struct):
    policy: PolicyView
    snapshot_version: int


class PolicyRemoved(msgspec.Struct):
    id: str
    snapshot_version: int


def _actor(request: ApprovalRequest) -> Actor:
    actor: Actor = request.state.actor
    return actor


def _policy_view(policy: ApprovalPolicy) -> PolicyView:
    return PolicyView(**msgspec.structs.asdict(policy))


def _request_view(found: ChangeRequest) -> ChangeRequestView:
    return ChangeRequestView(**msgspec.structs.asdict(found))


@get("/approvals", opt=requires(VIEWER), summary="List approval policies")
async def list_policies(approvals: Approvals) -> PolicyList:
    return PolicyList(policies=[_policy_view(p) for p in await approvals.policies()])


@post(
    "/approvals",
    status_code=201,
    summary="Put a flag, or every flag with a tag, under an approval policy",
)
async def add_policy(
    data: JSONBody[PolicyCreate], request: ApprovalRequest, approvals: Approvals
) -> PolicyWritten:
    body = await strict_body(request, PolicyCreate)
    if (body.flag is None) == (body.tag is None):
        raise InvalidInput("name exactly one of flag or tag", "$")
    actor = _actor(request)
    if body.flag is not None:
        policy, version = await approvals.require("flag", body.flag, actor, body.reason)
    else:
        assert body.tag is not None
        policy, version = await approvals.require("tag", body.tag, actor, body.reason)
    return PolicyWritten(policy=_policy_view(policy), snapshot_version=version)


@delete(
    "/approvals/{policy_id:str}",
    status_code=200,
    summary="Remove an approval policy (tag:T or flag:KEY)",
)
async def remove_policy(
    policy_id: FromPath[str], request: ApprovalRequest, approvals: Approvals
) -> PolicyRemoved:
    version = await approvals.remove(policy_id, _actor(request), None)
    return PolicyRemoved(id=policy_id, snapshot_version=version)


@get("/requests", opt=requires(VIEWER), summary="List change requests (newest last)")
async def list_requests(approvals: Approvals) -> ChangeRequestList:
    return ChangeRequestList(requests=[_request_view(r) for r in await approvals.requests()])


@get("/requests/{request_id:str}", opt=requires(VIEWER), summary="One change request")
async def get_request(request_id: FromPath[str], approvals: Approvals) -> ChangeRequestView:
    return _request_view(await approvals.request(request_id))


@post(
    "/requests",
    status_code=201,
    summary="File a change request for a second person to approve (expires in 24 h)",
)
async def file_request(
    data: JSONBody[ChangeRequestCreate], request: ApprovalRequest, approvals: Approvals
) -> RequestDecided:
    body = await strict_body(request, ChangeRequestCreate)
    filed, _ = await approvals.file(body.key, body.change, body.reason, _actor(request))
    return RequestDecided(request=_request_view(filed))


@post(
    "/requests/{request_id:str}/approve",
    status_code=200,
    summary="Approve a request (not one's own): its change is applied on the version it was "
    "filed on (412: file it again)",
)
async def approve_request(
    request_id: FromPath[str],
    request: ApprovalRequest,
    approvals: Approvals,
    data: JSONBody[Decision | None] = None,
) -> RequestDecided:
    body = await strict_body(request, Decision, Decision())
    applied, version = await approvals.approve(request_id, _actor(request), body.reason)
    return RequestDecided(request=_request_view(applied), snapshot_version=version)


@post("/requests/{request_id:str}/reject", status_code=200, summary="Reject a request")
async def reject_request(
    request_id: FromPath[str],
    request: ApprovalRequest,
    approvals: Approvals,
    data: JSONBody[Decision | None] = None,
) -> RequestDecided:
    body = await strict_body(request, Decision, Decision())
    rejected, version = await approvals.reject(request_id, _actor(request), body.reason)
    return RequestDecided(request=_request_view(rejected), snapshot_version=version)


approvals_router = Router(
    path="/admin/v1",
    guards=[scope_guard],
    security=TOKEN_REQUIRED,
    tags=["admin"],
    opt={CONFIGURATION_JSON: True, **requires(ADMIN)},
    route_handlers=[
        list_policies,
        add_policy,
        remove_policy,
        list_requests,
        get_request,
        file_request,
        approve_request,
        reject_request,
    ],
)

"""The admin API's rollout plans (``/admin/v1/rollouts``; docs/spec.md, "Guarded
rollouts"): start, list, status, pause, resume, abort. Changes need the admin scope; reads
the viewer scope. Each handler decodes, calls the plan service, encodes."""

from __future__ import annotations

from typing import Any

from litestar import Request, Router, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from flagport_server.auth import ADMIN, TOKEN_REQUIRED, VIEWER, Actor, requires, scope_guard
from flagport_server.bodies import CONFIGURATION_JSON
from flagport_server.plans import PlanService
from flagport_server.routes.admin import strict_body
from flagport_server.wire.admin_v1 import (
    PlanAbort,
    PlanChange,
    PlanCreate,
    PlanList,
    PlanView,
    PlanWriteResponse,
)

__all__ = ["rollouts_router"]

#: The admin service's PlanService, injected by name (``create_app``'s dependencies).
Plans = NamedDependency[PlanService]
RolloutRequest = Request[Any, Any, State]


def _actor(request: RolloutRequest) -> Actor:
    actor: Actor = request.state.actor
    return actor


@get("/", opt=requires(VIEWER), summary="List rollout plans with their readings")
async def list_plans(plans: Plans) -> PlanList:
    return await plans.list()


@get(
    "/{key:str}",
    opt=requires(VIEWER),
    summary="A plan's status: step, next step, every guard's reading",
)
async def plan_status(key: FromPath[str], plans: Plans) -> PlanView:
    return await plans.status(key)


@post("/", status_code=201, summary="Start a rollout plan on a flag (400 bad options)")
async def start_plan(
    data: JSONBody[PlanCreate], request: RolloutRequest, plans: Plans
) -> PlanWriteResponse:
    body = await strict_body(request, PlanCreate)
    plan, version = await plans.start(body, _actor(request))
    return PlanWriteResponse(plan=plan, snapshot_version=version)


@post("/{key:str}/pause", status_code=200, summary="Pause a plan (exposure unchanged)")
async def pause_plan(
    key: FromPath[str],
    request: RolloutRequest,
    plans: Plans,
    data: JSONBody[PlanChange | None] = None,
) -> PlanWriteResponse:
    body = await strict_body(request, PlanChange, PlanChange())
    plan, version = await plans.pause(key, _actor(request), body.reason)
    return PlanWriteResponse(plan=plan, snapshot_version=version)


@post(
    "/{key:str}/resume",
    status_code=200,
    summary="Resume a paused plan: the hold restarts, exposure is never lowered",
)
async def resume_plan(
    key: FromPath[str],
    request: RolloutRequest,
    plans: Plans,
    data: JSONBody[PlanChange | None] = None,
) -> PlanWriteResponse:
    body = await strict_body(request, PlanChange, PlanChange())
    plan, version = await plans.resume(key, _actor(request), body.reason)
    return PlanWriteResponse(plan=plan, snapshot_version=version)


@post(
    "/{key:str}/abort",
    status_code=200,
    summary="Abort a plan (rollback: disable the flag in the same commit)",
)
async def abort_plan(
    key: FromPath[str],
    request: RolloutRequest,
    plans: Plans,
    data: JSONBody[PlanAbort | None] = None,
) -> PlanWriteResponse:
    body = await strict_body(request, PlanAbort, PlanAbort())
    plan, version = await plans.abort(key, _actor(request), body.reason, rollback=body.rollback)
    return PlanWriteResponse(plan=plan, snapshot_version=version)


rollouts_router = Router(
    path="/admin/v1/rollouts",
    guards=[scope_guard],
    security=TOKEN_REQUIRED,
    tags=["admin"],
    opt={CONFIGURATION_JSON: True, **requires(ADMIN)},
    route_handlers=[list_plans, plan_status, start_plan, pause_plan, resume_plan, abort_plan],
)

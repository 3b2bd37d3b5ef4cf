"""The admin API (``/admin/v1``): flags, state changes, audit, tokens, propagation. Changes
need the admin scope; reads and ``explain`` the viewer scope.

Every write answers ``{"flag": {...}, "snapshot_version": N}`` (or the list it changed).
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from litestar import Request, Response, Router, delete, get, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter

from flagport.document import dump_document, load_document
from flagport.engine import Flag, Segment
from flagport_server.auth import ADMIN, TOKEN_REQUIRED, VIEWER, Actor, requires, scope_guard
from flagport_server.bodies import (
    CONFIGURATION_JSON,
    JSON_MEDIA_TYPES,
    YAML_MEDIA_TYPES,
    require_media_type,
)
from flagport_server.errors import InvalidInput
from flagport_server.recompile import collector_paused
from flagport_server.services import AdminService, flag_view
from flagport_server.stores.base import AuditQuery, TokenRecord
from flagport_server.token_expiry import token_status
from flagport_server.wire.admin_v1 import (
    AuditPage,
    DisableRequest,
    EnableRequest,
    ExplainRequest,
    FlagCreate,
    FlagList,
    FlagReplace,
    FlagView,
    FlagWriteResponse,
    ImportResponse,
    KillRequest,
    KillResponse,
    PropagationView,
    RulesRequest,
    SecretRotate,
    SecretRotated,
    SegmentList,
    SegmentView,
    SegmentWriteResponse,
    TargetsRequest,
    TokenCreate,
    TokenCreated,
    TokenList,
    TokenRevoked,
    TokenRotate,
    TokenRotated,
    TokenView,
)
from flagport_server.wire.fields import (
    MAX_REASON_LENGTH,
    MAX_REQUEST_INT,
    PRINTABLE_PATTERN,
    validation_problem,
)

__all__ = ["admin_router", "strict_body"]

#: The app's AdminService, injected by name (``create_app``'s dependencies).
Admin = NamedDependency[AdminService]

AdminRequest = Request[Any, Any, State]
#: ``?reason=``: the rule of the bodies' ``reason`` (wire.fields.Reason).
ReasonQuery = Annotated[
    str | None,
    QueryParameter(required=False, max_length=MAX_REASON_LENGTH, pattern=PRINTABLE_PATTERN),
]


T = TypeVar("T")


async def strict_body(request: AdminRequest, kind: type[T], default: T | None = None) -> T:
    """The body (parsed by the configuration's JSON rule: the router's ``CONFIGURATION_JSON``
    opt) converted with msgspec's strict rules. Litestar converts bodies leniently (``"10"``
    becomes ``10.0``, ``1`` becomes ``true``); the admin API refuses wrong JSON types
    instead, naming the field. The typed ``data`` parameters stay for the OpenAPI document
    (and Litestar's own checks run first)."""
    body = await request.body()
    if not body.strip() and default is not None:
        return default
    try:
        return msgspec.convert(await request.json(), type=kind, strict=True)
    except msgspec.ValidationError as error:
        raise InvalidInput(*validation_problem(str(error))) from None


def _actor(request: AdminRequest) -> Actor:
    actor: Actor = request.state.actor
    return actor


@get("/flags", opt=requires(VIEWER), summary="List flags")
async def list_flags(admin: Admin) -> FlagList:
    state = await admin.state()
    return FlagList(
        flags=[flag_view(k, f) for k, f in sorted(state.document.flags.items())],
        snapshot_version=state.document.version,
        unreadable=state.unreadable_flags,
    )


@post("/flags", status_code=201, summary="Create a flag (409 if it exists)")
async def create_flag(
    data: JSONBody[FlagCreate], request: AdminRequest, admin: Admin
) -> FlagWriteResponse:
    data = await strict_body(request, FlagCreate)
    fields = msgspec.structs.asdict(data)
    key, reason = fields.pop("key"), fields.pop("reason")
    flag = Flag(**fields)
    view, version = await admin.create_flag(key, flag, _actor(request), reason)
    return FlagWriteResponse(flag=view, snapshot_version=version)


@get(
    "/flags/{key:str}",
    opt=requires(VIEWER),
    summary="Get a flag (ETag is its version, for If-Match)",
)
async def get_flag(key: FromPath[str], admin: Admin) -> Response[FlagView]:
    flag, _ = await admin.get_flag(key)
    return Response(flag_view(key, flag), headers={"ETag": f'"{flag.version}"'})


@put(
    "/flags/{key:str}",
    summary='Replace a flag; needs If-Match: "<version>" (412 stale, 428 missing)',
)
async def replace_flag(
    key: FromPath[str],
    data: JSONBody[FlagReplace],
    request: AdminRequest,
    admin: Admin,
    if_match: Annotated[str | None, HeaderParameter(name="If-Match", required=False)] = None,
    reason: ReasonQuery = None,
) -> FlagWriteResponse:
    data = await strict_body(request, FlagReplace)
    fields = msgspec.structs.asdict(data)
    body_key = fields.pop("key")
    if body_key is not None and body_key != key:
        raise InvalidInput(f"the body names flag {body_key!r}, the path {key!r}", "$.key")
    view, version = await admin.replace_flag(key, Flag(**fields), if_match, _actor(request), reason)
    return FlagWriteResponse(flag=view, snapshot_version=version)


@delete(
    "/flags/{key:str}",
    status_code=200,
    summary="Delete a flag (a parent only with ?recursive=true)",
)
async def delete_flag(
    key: FromPath[str],
    request: AdminRequest,
    admin: Admin,
    recursive: Annotated[bool, QueryParameter(required=False)] = False,
    reason: ReasonQuery = None,
) -> dict[str, Any]:
    deleted, version = await admin.delete_flag(key, recursive, _actor(request), reason)
    return {"deleted": deleted, "snapshot_version": version}


@post("/flags/{key:str}/enable", status_code=200, summary="Enable (optionally at a percentage)")
async def enable_flag(
    key: FromPath[str],
    request: AdminRequest,
    admin: Admin,
    data: JSONBody[EnableRequest | None] = None,
) -> FlagWriteResponse:
    body = await strict_body(request, EnableRequest, EnableRequest())
    view, version = await admin.enable(key, body.percentage, _actor(request), body.reason)
    return FlagWriteResponse(flag=view, snapshot_version=version)


@post("/flags/{key:str}/disable", status_code=200, summary="Disable: the kill switch")
async def disable_flag(
    key: FromPath[str],
    request: AdminRequest,
    admin: Admin,
    data: JSONBody[DisableRequest | None] = None,
) -> FlagWriteResponse:
    body = await strict_body(request, DisableRequest, DisableRequest())
    views, version = await admin.disable([key], _actor(request), body.reason)
    return FlagWriteResponse(flag=views[0], snapshot_version=version)


@post("/kill", status_code=200, summary="Disable several flags at once (keys, a tag, or all)")
async def kill(data: JSONBody[KillRequest], request: AdminRequest, admin: Admin) -> KillResponse:
    data = await strict_body(request, KillRequest)
    views, version, unreadable = await admin.kill(
        data.keys, data.tag, data.all, _actor(request), data.reason
    )
    return KillResponse(flags=views, snapshot_version=version, unreadable=unreadable)


@get("/audit", opt=requires(VIEWER), summary="Audit log, newest first, paginated with before_id")
async def audit(
    admin: Admin,
    flag: Annotated[str | None, QueryParameter(required=False)] = None,
    actor: Annotated[str | None, QueryParameter(required=False)] = None,
    since: Annotated[str | None, QueryParameter(required=False)] = None,
    before_id: Annotated[
        int | None, QueryParameter(required=False, ge=1, le=MAX_REQUEST_INT)
    ] = None,
    limit: Annotated[int, QueryParameter(required=False, ge=1, le=1000)] = 100,
) -> AuditPage:
    if since is not None:
        import datetime

        try:
            datetime.datetime.fromisoformat(since)
        except ValueError:
            raise InvalidInput(
                f"since must be an ISO-8601 date-time, got {since!r}", "since"
            ) from None
    entries = await admin.audit(
        AuditQuery(key=flag, actor=actor, since=since, before_id=before_id, limit=limit)
    )
    next_id = entries[-1].id if len(entries) == limit else None
    return AuditPage(entries=entries, next_before_id=next_id)


def _token_view(record: TokenRecord) -> TokenView:
    return TokenView(
        id=record.id,
        name=record.name,
        scope=record.scope,
        created_at=record.created_at,
        revoked_at=record.revoked_at,
        expires_at=record.expires_at,
        rotated_at=record.rotated_at,
        status=token_status(record, time.time()),
    )


@get("/tokens", opt=requires(VIEWER), summary="List tokens (never their secrets)")
async def list_tokens(admin: Admin) -> TokenList:
    records = await admin.tokens()
    return TokenList(tokens=[_token_view(r) for r in records])


@post(
    "/tokens",
    status_code=201,
    summary="Create a token; the secret is shown once (every worker accepts it from "
    "snapshot_version: wait on /admin/v1/propagation)",
)
async def create_token(
    data: JSONBody[TokenCreate], request: AdminRequest, admin: Admin
) -> Response[TokenCreated]:
    data = await strict_body(request, TokenCreate)
    record, secret, version = await admin.create_token(
        data.name, data.scope, _actor(request), data.expires
    )
    # The secret is in this answer only: no cache (a proxy's, the browser's) may keep it.
    return Response(
        TokenCreated(token=_token_view(record), secret=secret, snapshot_version=version),
        status_code=201,
        headers={"Cache-Control": "no-store"},
    )


@delete(
    "/tokens/{token_id:str}",
    status_code=200,
    summary="Revoke a token (wait on /admin/v1/propagation for snapshot_version)",
)
async def revoke_token(
    token_id: FromPath[str], request: AdminRequest, admin: Admin
) -> TokenRevoked:
    record, version = await admin.revoke_token(token_id, _actor(request))
    return TokenRevoked(**msgspec.structs.asdict(_token_view(record)), snapshot_version=version)


@post(
    "/tokens/{token_id:str}/rotate",
    status_code=200,
    summary="Give a token a new secret (shown once); the old one stops working",
)
async def rotate_token(
    token_id: FromPath[str],
    request: AdminRequest,
    admin: Admin,
    data: JSONBody[TokenRotate | None] = None,
) -> Response[TokenRotated]:
    body = await strict_body(request, TokenRotate, TokenRotate())
    record, secret, version = await admin.rotate_token(
        token_id, _actor(request), body.expires, body.reason
    )
    return Response(
        TokenRotated(token=_token_view(record), secret=secret, snapshot_version=version),
        headers={"Cache-Control": "no-store"},
    )


@post(
    "/secret/rotate",
    status_code=200,
    summary="Replace the server secret: earlier stream tickets stop opening streams",
)
async def rotate_secret(
    request: AdminRequest, admin: Admin, data: JSONBody[SecretRotate | None] = None
) -> SecretRotated:
    body = await strict_body(request, SecretRotate, SecretRotate())
    at, version = await admin.rotate_server_secret(_actor(request), body.reason)
    return SecretRotated(rotated_at=at, snapshot_version=version)


@get(
    "/propagation",
    opt=requires(VIEWER),
    summary="Which live workers have applied a snapshot version",
)
async def propagation(
    admin: Admin, version: Annotated[int, QueryParameter(ge=0, le=MAX_REQUEST_INT)]
) -> PropagationView:
    return await admin.propagation(version)


@put("/flags/{key:str}/targets", summary="Set the flag's individual targets")
async def put_targets(
    key: FromPath[str], data: JSONBody[TargetsRequest], request: AdminRequest, admin: Admin
) -> FlagWriteResponse:
    data = await strict_body(request, TargetsRequest)
    view, version = await admin.set_targets(key, data.targets, _actor(request), data.reason)
    return FlagWriteResponse(flag=view, snapshot_version=version)


@put("/flags/{key:str}/rules", summary="Replace the flag's ordered rules")
async def put_rules(
    key: FromPath[str], data: JSONBody[RulesRequest], request: AdminRequest, admin: Admin
) -> FlagWriteResponse:
    data = await strict_body(request, RulesRequest)
    view, version = await admin.set_rules(key, data.rules, _actor(request), data.reason)
    return FlagWriteResponse(flag=view, snapshot_version=version)


@post(
    "/flags/{key:str}/explain",
    status_code=200,
    opt=requires(VIEWER),
    summary="Explain an evaluation step by step",
)
async def explain_flag(
    key: FromPath[str], data: JSONBody[ExplainRequest], request: AdminRequest, admin: Admin
) -> dict[str, Any]:
    data = await strict_body(request, ExplainRequest)
    return admin.explain(key, data.context)


def _segment_view(key: str, segment: Segment) -> SegmentView:
    return SegmentView(key=key, **msgspec.structs.asdict(segment))


@get("/segments", opt=requires(VIEWER), summary="List segments")
async def list_segments(admin: Admin) -> SegmentList:
    document = await admin.document()
    return SegmentList(
        segments=[_segment_view(k, s) for k, s in sorted(document.segments.items())],
        snapshot_version=document.version,
    )


@get("/segments/{key:str}", opt=requires(VIEWER), summary="Get a segment (ETag is its version)")
async def get_segment(key: FromPath[str], admin: Admin) -> Response[SegmentView]:
    segment = await admin.get_segment(key)
    return Response(_segment_view(key, segment), headers={"ETag": f'"{segment.version}"'})


@put("/segments/{key:str}", summary="Create or replace a segment (If-Match optional)")
async def put_segment(
    key: FromPath[str],
    data: JSONBody[Segment],
    request: AdminRequest,
    admin: Admin,
    if_match: Annotated[str | None, HeaderParameter(name="If-Match", required=False)] = None,
    reason: ReasonQuery = None,
) -> Response[SegmentWriteResponse]:
    data = await strict_body(request, Segment)
    segment, version, created = await admin.put_segment(
        key, data, if_match, _actor(request), reason
    )
    body = SegmentWriteResponse(segment=_segment_view(key, segment), snapshot_version=version)
    return Response(body, status_code=201 if created else 200)


@delete("/segments/{key:str}", status_code=200, summary="Delete a segment (409 while in use)")
async def delete_segment(
    key: FromPath[str],
    request: AdminRequest,
    admin: Admin,
    reason: ReasonQuery = None,
) -> dict[str, Any]:
    version = await admin.delete_segment(key, _actor(request), reason)
    return {"deleted": [key], "snapshot_version": version}


@get("/snapshot", opt=requires(VIEWER), summary="Export the configuration (config as code)")
async def export_snapshot(
    admin: Admin,
    volatile: Annotated[bool, QueryParameter(required=False)] = False,
    format: Annotated[Literal["json", "yaml"], QueryParameter(required=False)] = "json",
) -> Response[bytes]:
    document = await admin.document()
    media = "application/json" if format == "json" else "application/yaml"
    return Response(dump_document(document, format, volatile=volatile), media_type=media)


@post("/snapshot", status_code=200, summary="Import a configuration: returns the diff; atomic")
async def import_snapshot(
    request: AdminRequest,
    admin: Admin,
    dry_run: Annotated[bool, QueryParameter(required=False)] = False,
    prune: Annotated[bool, QueryParameter(required=False)] = True,
    reason: ReasonQuery = None,
    expect_versions: Annotated[
        bool,
        QueryParameter(
            required=False,
            description="With prune=false: each flag and segment carries the version last "
            "seen here (0: none); 412 naming the first that moved since (flags promote)",
        ),
    ] = False,
) -> ImportResponse:
    media = require_media_type(request, JSON_MEDIA_TYPES | YAML_MEDIA_TYPES)
    body = await request.body()
    with collector_paused():  # docs/adr/0020-incremental-compile.md
        # Parsed off the loop (a 15,000-flag document takes a few hundred milliseconds),
        # shape only: the import checks it (limits, then compile) once, beside what is stored.
        document = await asyncio.to_thread(
            load_document, body, "json" if media in JSON_MEDIA_TYPES else "yaml", strict=False
        )
        diff, version = await admin.import_document(
            document,
            dry_run=dry_run,
            prune=prune,
            actor=_actor(request),
            reason=reason,
            expect_versions=expect_versions,
        )
    return ImportResponse(
        dry_run=dry_run, applied=not dry_run and not diff.empty, diff=diff, snapshot_version=version
    )


admin_router = Router(
    path="/admin/v1",
    guards=[scope_guard],
    security=TOKEN_REQUIRED,
    tags=["admin"],
    # Reads (and explain) declare the viewer scope themselves.
    opt={CONFIGURATION_JSON: True, **requires(ADMIN)},
    route_handlers=[
        list_flags,
        create_flag,
        get_flag,
        replace_flag,
        delete_flag,
        enable_flag,
        disable_flag,
        kill,
        audit,
        list_tokens,
        create_token,
        revoke_token,
        rotate_token,
        rotate_secret,
        propagation,
        put_targets,
        put_rules,
        explain_flag,
        list_segments,
        get_segment,
        put_segment,
        delete_segment,
        export_snapshot,
        import_snapshot,
    ],
)

"""The OpenAPI document: its configuration, and the corrections Litestar cannot infer."""

from __future__ import annotations

from litestar import Litestar, Router
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import (
    Components,
    OpenAPIMediaType,
    OpenAPIType,
    RequestBody,
    Schema,
)

from flagport_server.auth import PUBLIC, SECURITY_SCHEMES, requires

__all__ = ["correct_openapi", "openapi_config"]


def openapi_config() -> OpenAPIConfig:
    """The OpenAPI configuration of one app (a fresh one each time: its router is mounted in
    the app, and a router is never shared between apps)."""
    return OpenAPIConfig(
        title="Flagport",
        version="1",
        description="Feature flags: OFREP evaluation, SDK feeds and the admin API.",
        # The document's own routes declare their scope like every route (docs/spec.md §5).
        openapi_router=Router(
            "/schema", route_handlers=[], include_in_schema=False, opt=requires(PUBLIC)
        ),
        render_plugins=[JsonRenderPlugin()],
        components=Components(security_schemes=SECURITY_SCHEMES),
    )


#: Routes whose JSON body may be left out (Litestar documents every body as required).
_OPTIONAL_BODIES = (
    "/admin/v1/flags/{key}/enable",
    "/admin/v1/flags/{key}/disable",
    "/admin/v1/secret/rotate",
    "/admin/v1/rollouts/{key}/pause",
    "/admin/v1/rollouts/{key}/resume",
    "/admin/v1/rollouts/{key}/abort",
)
#: The import reads its body itself (JSON or YAML), so Litestar cannot document it.
_IMPORT_PATH = "/admin/v1/snapshot"


def correct_openapi(app: Litestar) -> None:
    """Correct the OpenAPI document before it is first served."""
    paths = app.openapi_schema.paths or {}
    for path in _OPTIONAL_BODIES:
        item = paths.get(path)
        operation = item.post if item is not None else None
        if operation is not None and operation.request_body is not None:
            operation.request_body.required = False  # type: ignore[union-attr]
    item = paths.get(_IMPORT_PATH)
    if item is not None and item.post is not None:
        document = Schema(
            type=OpenAPIType.OBJECT,
            description="The whole configuration, as GET /admin/v1/snapshot exports it",
        )
        item.post.request_body = RequestBody(
            content={
                media: OpenAPIMediaType(schema=document)
                for media in ("application/json", "application/yaml")
            },
            required=True,
        )

"""How the route handlers declare their request parameters and bodies.

Litestar 2.25 deprecates the older declaration styles (``key: str`` inferred as a path
parameter, ``param: T = Parameter(query=...)``, ``data: T`` without a body marker) with a
``LitestarDeprecationWarning`` when the app is built; the pytest configuration turns that
warning into an error, and the first test here builds the app in process so a regression
fails even when no other test does. The second pins what the declarations put in the OpenAPI
document (names, aliases, where, required, bounds, defaults, bodies), so a change of
declaration style cannot quietly change the document that clients and schemathesis read.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from litestar.exceptions import LitestarDeprecationWarning
from litestar.testing import TestClient

from flagport_server.app import create_app
from flagport_server.settings import Settings


def _settings(tmp_path: Path) -> Settings:
    return Settings(store_url=f"sqlite:///{tmp_path / 'flagport.db'}", admin_token="t" * 32)


def test_the_app_builds_without_litestar_deprecation_warnings(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", LitestarDeprecationWarning)
        app = create_app(_settings(tmp_path))
        assert app.openapi_schema.paths


def _parameter(parameter: dict[str, Any]) -> str:
    schema = parameter["schema"]
    text = f"{parameter['in']}:{parameter['name']}{'!' if parameter['required'] else ''}"
    for key, label in (("default", "default"), ("minimum", "min"), ("maximum", "max")):
        if key in schema:
            value = schema[key]
            text += f" {label}={int(value) if isinstance(value, float) else value!r}"
    if "enum" in schema:
        text += f" enum={schema['enum']!r}"
    types = [s.get("type") for s in schema.get("oneOf", [schema])]
    return f"{text} {'|'.join(str(t) for t in types)}"


def _body(operation: dict[str, Any]) -> str | None:
    body = operation.get("requestBody")
    if body is None:
        return None
    described = []
    for media, content in body["content"].items():
        schema = content["schema"]
        names = [
            s.get("$ref", "").rsplit("/", 1)[-1] or s["type"] for s in schema.get("oneOf", [schema])
        ]
        described.append(f"{media} {'|'.join(names)}")
    return f"{', '.join(described)}{'!' if body.get('required') else ''}"


#: Every operation with parameters or a body: its parameters in order, then its body.
EXPECTED: dict[str, list[str | None]] = {
    "GET /admin/v1/audit": [
        "query:flag string|null",
        "query:actor string|null",
        "query:since string|null",
        "query:before_id min=1 max=9007199254740991 integer|null",
        "query:limit default=100 min=1 max=1000 integer",
        None,
    ],
    "POST /admin/v1/flags": ["application/json FlagCreate!"],
    "DELETE /admin/v1/flags/{key}": [
        "path:key! string",
        "query:recursive default=False boolean",
        "query:reason string|null",
        None,
    ],
    "GET /admin/v1/flags/{key}": ["path:key! string", None],
    "PUT /admin/v1/flags/{key}": [
        "path:key! string",
        "header:If-Match string|null",
        "query:reason string|null",
        "application/json FlagReplace!",
    ],
    "POST /admin/v1/flags/{key}/disable": [
        "path:key! string",
        "application/json DisableRequest|null",
    ],
    "POST /admin/v1/flags/{key}/enable": [
        "path:key! string",
        "application/json EnableRequest|null",
    ],
    "POST /admin/v1/flags/{key}/explain": ["path:key! string", "application/json ExplainRequest!"],
    "PUT /admin/v1/flags/{key}/rules": ["path:key! string", "application/json RulesRequest!"],
    "GET /admin/v1/flags/{key}/stats": [
        "path:key! string",
        "query:since default='24h' string",
        None,
    ],
    "PUT /admin/v1/flags/{key}/targets": ["path:key! string", "application/json TargetsRequest!"],
    "POST /admin/v1/kill": ["application/json KillRequest!"],
    "POST /admin/v1/secret/rotate": ["application/json SecretRotate|null"],
    "GET /admin/v1/rollouts/{key}": ["path:key! string", None],
    "POST /admin/v1/rollouts": ["application/json PlanCreate!"],
    "POST /admin/v1/rollouts/{key}/pause": ["path:key! string", "application/json PlanChange|null"],
    "POST /admin/v1/rollouts/{key}/resume": [
        "path:key! string",
        "application/json PlanChange|null",
    ],
    "POST /admin/v1/rollouts/{key}/abort": ["path:key! string", "application/json PlanAbort|null"],
    "POST /admin/v1/webhooks": ["application/json WebhookCreate!"],
    "DELETE /admin/v1/webhooks/{webhook_id}": [
        "path:webhook_id! string",
        "query:reason string|null",
        None,
    ],
    "POST /admin/v1/webhooks/{webhook_id}/test": ["path:webhook_id! string", None],
    "GET /admin/v1/webhooks/deliveries": [
        "query:webhook string|null",
        "query:failed default=False boolean",
        "query:limit default=100 min=1 max=1000 integer",
        None,
    ],
    "POST /admin/v1/webhooks/{webhook_id}/deliveries/{audit_id}/redeliver": [
        "path:webhook_id! string",
        "path:audit_id! min=1 max=9007199254740991 integer",
        None,
    ],
    "GET /admin/v1/propagation": ["query:version! min=0 max=9007199254740991 integer", None],
    "DELETE /admin/v1/segments/{key}": ["path:key! string", "query:reason string|null", None],
    "GET /admin/v1/segments/{key}": ["path:key! string", None],
    "PUT /admin/v1/segments/{key}": [
        "path:key! string",
        "header:If-Match string|null",
        "query:reason string|null",
        "application/json Segment!",
    ],
    "GET /admin/v1/snapshot": [
        "query:volatile default=False boolean",
        "query:format default='json' enum=['json', 'yaml'] string",
        None,
    ],
    "POST /admin/v1/snapshot": [
        "query:dry_run default=False boolean",
        "query:prune default=True boolean",
        "query:reason string|null",
        "query:expect_versions default=False boolean",
        "application/json object, application/yaml object!",
    ],
    "GET /admin/v1/stale": ["query:days default=30 min=1 max=3650 integer", None],
    "POST /admin/v1/tokens": ["application/json TokenCreate!"],
    "DELETE /admin/v1/tokens/{token_id}": ["path:token_id! string", None],
    "DELETE /admin/v1/approvals/{policy_id}": ["path:policy_id! string", None],
    "GET /admin/v1/requests/{request_id}": ["path:request_id! string", None],
    "POST /admin/v1/approvals": ["application/json PolicyCreate!"],
    "POST /admin/v1/requests": ["application/json ChangeRequestCreate!"],
    "POST /admin/v1/requests/{request_id}/approve": [
        "path:request_id! string",
        "application/json Decision|null!",
    ],
    "POST /admin/v1/requests/{request_id}/reject": [
        "path:request_id! string",
        "application/json Decision|null!",
    ],
    "POST /admin/v1/tokens/{token_id}/rotate": [
        "path:token_id! string",
        "application/json TokenRotate|null!",
    ],
    "POST /ofrep/v1/evaluate/flags": [
        "header:If-None-Match string|null",
        "query:flagConfigEtag string|null",
        "query:flagConfigLastModified string|null",
        "application/json EvaluationRequest!",
    ],
    "POST /ofrep/v1/evaluate/flags/{key}": [
        "path:key! string",
        "application/json EvaluationRequest!",
    ],
    "GET /v1/evaluate/{key}": ["path:key! string", None],
    "POST /v1/exposures": ["application/json ExposureBatch!"],
    "POST /v1/outcomes": ["application/json OutcomeBatch!"],
}


def test_declared_parameters_and_bodies_in_the_openapi_document(tmp_path: Path) -> None:
    with TestClient(create_app(_settings(tmp_path))) as client:
        answer = client.get("/schema/openapi.json")
    assert answer.status_code == 200, answer.text
    found: dict[str, list[str | None]] = {}
    for path, item in answer.json()["paths"].items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            parameters = [_parameter(p) for p in operation.get("parameters", [])]
            body = _body(operation)
            if parameters or body is not None:
                found[f"{method.upper()} {path}"] = [*parameters, body]
    assert found == EXPECTED

"""Every operation that takes a JSON body, walked from the OpenAPI document a real app serves
(issue 13): a ``text/plain`` body, no ``Content-Type``, a body over the route's limit, and CR/LF
in each string field of a valid body (and in each string query parameter) must all be refused
with a 4xx and change nothing: not the snapshot version, the audit log, the tokens, nor the
evaluation and exposure counts.

The valid bodies come from :data:`EXAMPLES`, keyed by operation id; the first test fails when
the document lists an operation the table lacks (or a POST/PUT/PATCH without a documented
body), so a new endpoint cannot be left out. Each example is sent as is too, and must
succeed: the refusals are then due to the one thing each case changed.

Free-form text is not walked (see ``free_form``): evaluation contexts (OFREP and explain:
any attribute an application sends, never stored or logged), reported units (context values,
only ever hashed into sketches) and variant values (any JSON a flag serves). An exposure's
``variant`` is judged item by item: an item naming no variant of the flag is listed in
``rejected`` (200) and counts nothing, so one stale item never drops a client's other counts.

CR/LF inside a flag's or segment's own fields is refused by the store's commit (the limits
of ``flagport.engine``), whichever route carried it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from flagport_server.app import create_app
from flagport_server.settings import Settings

ADMIN_TOKEN = "walker-admin-token-0123456789abcdef"

#: The configuration every case starts from (imported again when a case changed it).
BASELINE: dict[str, Any] = {
    "flags": {
        "walker-flag": {"enabled": True, "percentage": 50, "tags": ["walker"]},
        "walker-other": {"enabled": True},
    },
    "segments": {"walker-segment": {"included": ["u1"]}},
}

_CONDITION = {"attribute": "plan", "op": "in", "values": ["beta"]}
_RULE = {"name": "beta", "conditions": [_CONDITION], "variant": "on"}
_FLAG_FIELDS = {
    "description": "made by the walker",
    "enabled": True,
    "percentage": 25,
    "bucket_by": "userId",
    "salt": "walker-salt",
    "variants": {"on": True, "off": False},
    "on_variant": "on",
    "off_variant": "off",
    "targets": {"on": ["u1"]},
    "rules": [_RULE],
    "prerequisites": [{"key": "walker-other", "variant": "on"}],
    "tags": ["walker"],
    "owner": "team-walker",
}
#: An outcome batch's period, replaced by the last second when the batch is sent.
_PERIOD: list[float] = [0.0, 0.0]
_SEGMENT_FIELDS = {
    "description": "made by the walker",
    "included": ["u1"],
    "excluded": ["u2"],
    "conditions": [_CONDITION],
}


#: Actions on the resource their path names, which read no body at all (a body sent is
#: ignored): a webhook's test delivery and a dead letter's redelivery.
BODILESS = frozenset(
    {
        "POST /admin/v1/webhooks/{webhook_id}/test",
        "POST /admin/v1/webhooks/{webhook_id}/deliveries/{audit_id}/redeliver",
    }
)


@dataclass(frozen=True)
class Step:
    """A setup request; ``as_token``: sent with the walker's personal admin token of that
    name (the bootstrap token may neither file nor approve change requests); ``capture``:
    ``(path parameter, field)``: the parameter is set from the answer's ``field.id``."""

    method: str
    path: str
    body: Any
    as_token: str | None = None
    capture: tuple[str, str] | None = None


@dataclass(frozen=True)
class Example:
    """A valid request of one operation."""

    method: str
    #: The path template, as in the OpenAPI document.
    template: str
    body: Any
    path_params: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    #: Sends the flag's current version as If-Match.
    if_match: bool = False
    #: JSON paths (prefixes) of free-form text: not walked.
    free_form: tuple[str, ...] = ()
    #: JSON paths judged item by item: 200 with the item in ``rejected``, nothing counted.
    per_item: tuple[str, ...] = ()
    #: Requests (method, path, body) that make the example valid, sent after the reset.
    setup: tuple[tuple[str, str, Any] | Step, ...] = ()
    #: Sent with the walker's personal admin token of this name (see :class:`Step`).
    as_token: str | None = None
    #: Path parameters that are the id of the walker's personal token of that name.
    token_ids: dict[str, str] = field(default_factory=dict)


_PLAN = {
    "key": "walker-flag",
    "steps": "50,100",
    "hold": "1h",
    "guards": ["error_rate > 5% over 5m"],
}
_START_PLAN = (("POST", "/admin/v1/rollouts", _PLAN),)
_FILE_REQUEST = Step(
    "POST",
    "/admin/v1/requests",
    {"key": "walker-flag", "change": {"kind": "enable", "percentage": 70}, "reason": "walker"},
    as_token="alice",
    capture=("request_id", "request"),
)

EXAMPLES: dict[str, Example] = {
    "AdminV1RolloutsStartPlan": Example(
        "POST",
        "/admin/v1/rollouts",
        {**_PLAN, "window": "02:00-04:00", "tz": "UTC", "reason": "walker"},
    ),
    "AdminV1RolloutsKeyPausePausePlan": Example(
        "POST",
        "/admin/v1/rollouts/{key}/pause",
        {"reason": "walker"},
        path_params={"key": "walker-flag"},
        setup=_START_PLAN,
    ),
    "AdminV1RolloutsKeyResumeResumePlan": Example(
        "POST",
        "/admin/v1/rollouts/{key}/resume",
        {"reason": "walker"},
        path_params={"key": "walker-flag"},
        setup=(*_START_PLAN, ("POST", "/admin/v1/rollouts/walker-flag/pause", {})),
    ),
    "AdminV1RolloutsKeyAbortAbortPlan": Example(
        "POST",
        "/admin/v1/rollouts/{key}/abort",
        {"reason": "walker", "rollback": True},
        path_params={"key": "walker-flag"},
        setup=_START_PLAN,
    ),
    "AdminV1ApprovalsAddPolicy": Example(
        "POST", "/admin/v1/approvals", {"tag": "walker", "reason": "walker"}
    ),
    "AdminV1RequestsFileRequest": Example(
        "POST",
        "/admin/v1/requests",
        {"key": "walker-flag", "change": {"kind": "enable", "percentage": 60}, "reason": "walker"},
        as_token="alice",
    ),
    "AdminV1RequestsRequestIdApproveApproveRequest": Example(
        "POST",
        "/admin/v1/requests/{request_id}/approve",
        {"reason": "walker"},
        setup=(_FILE_REQUEST,),
        as_token="bob",
    ),
    "AdminV1RequestsRequestIdRejectRejectRequest": Example(
        "POST",
        "/admin/v1/requests/{request_id}/reject",
        {"reason": "walker"},
        setup=(_FILE_REQUEST,),
        as_token="bob",
    ),
    "AdminV1TokensTokenIdRotateRotateToken": Example(
        "POST",
        "/admin/v1/tokens/{token_id}/rotate",
        {"expires": "30d", "reason": "walker"},
        token_ids={"token_id": "carol"},
    ),
    "AdminV1FlagsCreateFlag": Example(
        "POST",
        "/admin/v1/flags",
        {"key": "walker-created", "reason": "walker", **_FLAG_FIELDS},
    ),
    "AdminV1FlagsKeyReplaceFlag": Example(
        "PUT",
        "/admin/v1/flags/{key}",
        {"key": "walker-flag", **_FLAG_FIELDS},
        path_params={"key": "walker-flag"},
        params={"reason": "walker"},
        if_match=True,
    ),
    "AdminV1FlagsKeyEnableEnableFlag": Example(
        "POST",
        "/admin/v1/flags/{key}/enable",
        {"percentage": 30, "reason": "walker"},
        path_params={"key": "walker-flag"},
    ),
    "AdminV1FlagsKeyDisableDisableFlag": Example(
        "POST",
        "/admin/v1/flags/{key}/disable",
        {"reason": "walker"},
        path_params={"key": "walker-flag"},
    ),
    "AdminV1KillKill": Example("POST", "/admin/v1/kill", {"tag": "walker", "reason": "walker"}),
    "AdminV1SecretRotateRotateSecret": Example(
        "POST", "/admin/v1/secret/rotate", {"reason": "walker"}
    ),
    "AdminV1WebhooksAddWebhook": Example(
        "POST",
        "/admin/v1/webhooks",
        {
            "url": "https://hooks.example/walker",
            "events": ["flag.changed"],
            "tag": "walker",
            "format": "json",
            "secret": "walker-secret-0123456789",
            "reason": "walker",
        },
    ),
    "AdminV1TokensCreateToken": Example(
        "POST", "/admin/v1/tokens", {"name": "walker-token", "scope": "evaluate"}
    ),
    "AdminV1FlagsKeyTargetsPutTargets": Example(
        "PUT",
        "/admin/v1/flags/{key}/targets",
        {"targets": {"on": ["u1", "u2"]}, "reason": "walker"},
        path_params={"key": "walker-flag"},
    ),
    "AdminV1FlagsKeyRulesPutRules": Example(
        "PUT",
        "/admin/v1/flags/{key}/rules",
        {"rules": [_RULE], "reason": "walker"},
        path_params={"key": "walker-flag"},
    ),
    "AdminV1FlagsKeyExplainExplainFlag": Example(
        "POST",
        "/admin/v1/flags/{key}/explain",
        {"context": {"targetingKey": "u1", "plan": "beta"}},
        path_params={"key": "walker-flag"},
        free_form=("$.context",),
    ),
    "AdminV1SegmentsKeyPutSegment": Example(
        "PUT",
        "/admin/v1/segments/{key}",
        _SEGMENT_FIELDS,
        path_params={"key": "walker-segment"},
        params={"reason": "walker"},
    ),
    "AdminV1SnapshotImportSnapshot": Example(
        "POST",
        "/admin/v1/snapshot",
        {
            "flags": {**BASELINE["flags"], "walker-imported": _FLAG_FIELDS},
            "segments": {"walker-segment": _SEGMENT_FIELDS},
        },
        params={"reason": "walker"},
    ),
    "OfrepV1EvaluateFlagsKeyOfrepSingle": Example(
        "POST",
        "/ofrep/v1/evaluate/flags/{key}",
        {"context": {"targetingKey": "u1"}},
        path_params={"key": "walker-flag"},
        free_form=("$.context",),
    ),
    "OfrepV1EvaluateFlagsOfrepBulk": Example(
        "POST",
        "/ofrep/v1/evaluate/flags",
        {"context": {"targetingKey": "u1"}},
        free_form=("$.context",),
    ),
    "V1ExposuresExposures": Example(
        "POST",
        "/v1/exposures",
        {"exposures": [{"key": "walker-flag", "variant": "on", "count": 3, "units": ["u1"]}]},
        free_form=("$.exposures[0].units",),
        per_item=("$.exposures[0].variant",),
    ),
    "V1OutcomesOutcomes": Example(
        "POST",
        "/v1/outcomes",
        {
            "period": _PERIOD,  # made fresh when sent (a stale period refuses every item)
            "items": [
                {
                    "key": "walker-flag",
                    "variant": "on",
                    "cohort": "treatment",
                    "requests": 2,
                    "failures": 1,
                    "latency_ms_sum": 30.5,
                    "latency_buckets": [0, 0, 2] + [0] * 10,
                }
            ],
            "events": [
                {
                    "key": "walker-flag",
                    "variant": "off",
                    "cohort": "control",
                    "name": "user_report",
                    "labels": {"severity": "critical"},
                    "count": 1,
                }
            ],
        },
        per_item=("$.items[0].variant", "$.events[0].variant", "$.events[0].labels"),
    ),
}


def _fresh(body: Any) -> Any:
    """``body`` with an outcome batch's period set to the last second."""
    if isinstance(body, dict) and body.get("period") is _PERIOD:
        now = time.time()
        return {**body, "period": [now - 1, now]}
    return body


# -- the app ---------------------------------------------------------------------------------


@dataclass
class Walker:
    client: TestClient[Litestar]
    #: Personal admin tokens by name: (id, secret), made once, kept for the module.
    tokens: dict[str, tuple[str, str]]
    #: Path parameters the last setup captured.
    captured: dict[str, str] = field(default_factory=dict)

    def reset(self) -> None:
        """Back to :data:`BASELINE` (a no-op, no commit, when nothing changed), with no
        live rollout plan and no approval policy."""
        for policy in self.client.get("/admin/v1/approvals").json()["policies"]:
            removed = self.client.delete(f"/admin/v1/approvals/{policy['id']}")
            assert removed.status_code == 200, removed.text
        answer = self.client.post(
            "/admin/v1/snapshot", json=BASELINE, params={"reason": "walker reset"}
        )
        assert answer.status_code == 200, answer.text
        for plan in self.client.get("/admin/v1/rollouts").json()["plans"]:
            if plan["status"] in ("scheduled", "running", "paused"):
                aborted = self.client.post(f"/admin/v1/rollouts/{plan['key']}/abort", json={})
                assert aborted.status_code == 200, aborted.text

    def _token(self, name: str) -> tuple[str, str]:
        if name not in self.tokens:
            made = self.client.post(
                "/admin/v1/tokens", json={"name": f"walker-{name}", "scope": "admin"}
            )
            assert made.status_code == 201, made.text
            self.tokens[name] = (made.json()["token"]["id"], made.json()["secret"])
        return self.tokens[name]

    def _headers(self, as_token: str | None) -> dict[str, str]:
        if as_token is None:
            return {}
        return {"Authorization": f"Bearer {self._token(as_token)[1]}"}

    def prepare(self, example: Example) -> None:
        # Tokens are made before the state is read.
        self.captured = {param: self._token(name)[0] for param, name in example.token_ids.items()}
        self._headers(example.as_token)
        for given in example.setup:
            step = given if isinstance(given, Step) else Step(*given)
            answer = self.client.request(
                step.method, step.path, json=step.body, headers=self._headers(step.as_token)
            )
            assert 200 <= answer.status_code < 300, answer.text
            if step.capture is not None:
                parameter, field_name = step.capture
                self.captured[parameter] = answer.json()[field_name]["id"]

    def path(self, example: Example) -> str:
        return example.template.format(**{**example.path_params, **self.captured})

    def state(self) -> dict[str, Any]:
        """What a refused request must leave as it was."""
        flags = self.client.get("/admin/v1/flags").json()
        audit = self.client.get("/admin/v1/audit", params={"limit": 1}).json()["entries"]
        tokens = self.client.get("/admin/v1/tokens").json()["tokens"]
        metrics = self.client.get("/metrics").text  # drains the evaluation counter first
        return {
            "snapshot_version": flags["snapshot_version"],
            "last_audit_id": audit[0]["id"] if audit else None,
            "tokens": len(tokens),
            "evaluations": _metric_total(metrics, "flagport_evaluations_total"),
            "exposures": _metric_total(metrics, "flagport_exposures_total"),
            "outcomes": _metric_total(metrics, "flagport_outcome_requests_total"),
        }

    def send(
        self,
        example: Example,
        *,
        content: bytes | None = None,
        content_type: str | None = "application/json",
        params: dict[str, str] | None = None,
    ) -> Any:
        headers = self._headers(example.as_token)
        if content_type is not None:
            headers["Content-Type"] = content_type
        if example.if_match:
            flag = self.client.get(f"/admin/v1/flags/{example.path_params['key']}")
            headers["If-Match"] = flag.headers["etag"]
        return self.client.request(
            example.method,
            self.path(example),
            content=json.dumps(_fresh(example.body)).encode() if content is None else content,
            headers=headers,
            params=example.params if params is None else params,
        )


def _metric_total(text: str, name: str) -> float:
    pattern = re.compile(rf"^{name}\{{[^}}]*\}} (\S+)$", re.M)
    return sum(float(value) for value in pattern.findall(text))


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Litestar]]:
    directory: Path = tmp_path_factory.mktemp("walker")
    # No rollout driver: a plan a case starts would otherwise take its first step on its own,
    # a commit that may land between a refused request's before and after.
    settings = Settings(
        store_url=f"sqlite:///{directory / 'flagport.db'}", admin_token=ADMIN_TOKEN, driver=False
    )
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        yield client


@pytest.fixture(scope="module")
def personal_tokens() -> dict[str, tuple[str, str]]:
    return {}


@pytest.fixture
def walker(app: TestClient[Litestar], personal_tokens: dict[str, tuple[str, str]]) -> Walker:
    walker = Walker(app, personal_tokens)
    walker.reset()
    return walker


# -- the document and the table --------------------------------------------------------------


def test_every_json_operation_has_an_example(app: TestClient[Litestar]) -> None:
    document = app.get("/schema/openapi.json").json()
    found: dict[str, tuple[str, str]] = {}
    undocumented: list[str] = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            body = operation.get("requestBody")
            if body is None:
                if (
                    method in ("post", "put", "patch")
                    and f"{method.upper()} {path}" not in BODILESS
                ):
                    undocumented.append(f"{method.upper()} {path}")
                continue
            if "application/json" in body["content"]:
                found[operation["operationId"]] = (method.upper(), path)
    assert not undocumented, (
        f"operations that read a body the document does not describe: {undocumented}"
    )
    expected = {op: (e.method, e.template) for op, e in EXAMPLES.items()}
    missing = sorted(set(found) - set(expected))
    assert not missing, f"JSON operations without an example in EXAMPLES: {missing}"
    assert found == expected


# -- the cases -------------------------------------------------------------------------------


def _strings(value: Any, path: str = "$") -> Iterator[tuple[str, str]]:
    """Every string leaf of a JSON value, with its JSON path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")


def _replaced(value: Any, target: str, new: str, path: str = "$") -> Any:
    if path == target:
        return new
    if isinstance(value, dict):
        return {k: _replaced(v, target, new, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_replaced(v, target, new, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(p in ("$", path) or path.startswith((p + ".", p + "[")) for p in prefixes)


def _forged(text: str) -> str:
    return f"{text[:1]}\r\nforged: line{text[1:]}"


@dataclass(frozen=True)
class Case:
    operation: str
    kind: str
    #: The JSON path or query parameter given CR/LF.
    where: str = ""


def _cases() -> Iterator[Any]:
    for operation, example in EXAMPLES.items():
        for kind in ("valid", "text/plain", "no content type", "over the body limit"):
            yield pytest.param(Case(operation, kind), id=f"{operation}-{kind}")
        for where, _ in _strings(example.body):
            if _under(where, example.free_form):
                continue
            yield pytest.param(
                Case(operation, "CR/LF in the body", where), id=f"{operation}-crlf-{where}"
            )
        for name in example.params:
            yield pytest.param(
                Case(operation, "CR/LF in the query", name), id=f"{operation}-crlf-?{name}"
            )


def _body_limit(app: TestClient[Litestar], method: str, template: str) -> int:
    for route in app.app.routes:
        handlers = getattr(route, "route_handler_map", {})
        if route.path_format == template and method in handlers:
            return int(handlers[method][0].resolve_request_max_body_size())
    raise AssertionError(f"no route for {method} {template}")


@pytest.mark.parametrize("case", list(_cases()))
def test_bad_bodies_are_refused_and_change_nothing(walker: Walker, case: Case) -> None:
    example = EXAMPLES[case.operation]
    walker.prepare(example)
    before = walker.state()
    if case.kind == "valid":
        answer = walker.send(example, content_type="application/json; charset=utf-8")
        assert 200 <= answer.status_code < 300, answer.text
        if case.operation in ("V1ExposuresExposures", "V1OutcomesOutcomes"):
            assert answer.json()["rejected"] == []
        return
    if case.kind == "text/plain":
        answer = walker.send(example, content_type="text/plain")
    elif case.kind == "no content type":
        answer = walker.send(example, content_type=None)
    elif case.kind == "over the body limit":
        limit = _body_limit(walker.client, example.method, example.template)
        body = json.dumps(example.body).encode()
        answer = walker.send(example, content=body + b" " * (limit + 1 - len(body)))
    elif case.kind == "CR/LF in the query":
        params = {**example.params, case.where: _forged(example.params[case.where])}
        answer = walker.send(example, params=params)
    else:
        value = dict(_strings(example.body))[case.where]
        body = _replaced(_fresh(example.body), case.where, _forged(value))
        answer = walker.send(example, content=json.dumps(body).encode())
        if _under(case.where, example.per_item):
            assert answer.status_code == 200, answer.text
            found = answer.json()
            assert [r["index"] for r in found["rejected"]] == [0], answer.text
            # An outcome batch's other item is counted (its requests); nothing else changes.
            counted = found.get("requests", 0)
            assert walker.state() == {**before, "outcomes": before["outcomes"] + counted}
            return
    assert 400 <= answer.status_code < 500, answer.text
    assert walker.state() == before

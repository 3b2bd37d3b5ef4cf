"""Schemathesis against the OpenAPI document a live server serves (issue 4, item 7): every
admin operation, called with the admin token on valid and invalid generated input, answers
without a server error (5xx).

Bounded: 25 valid and 10 invalid examples per operation, derandomized (the same cases every
run). The server is seeded with the portal flags, so generated path parameters sometimes hit real
flags. (``schemathesis.pytest.from_fixture`` does not run under pytest 9, so the operations
are walked here, one Hypothesis run each.)
"""

from __future__ import annotations

from typing import Any

import hypothesis
import hypothesis.errors
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.server._fixtures import live_server
from tests.support.server import PORTAL_FLAGS, RunningServer

server = live_server(seed=PORTAL_FLAGS)

#: Examples per operation: valid input reaches the handlers, invalid input the validation.
EXAMPLES = {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 10}


def settings(examples: int) -> hypothesis.settings:
    return hypothesis.settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        database=None,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],  # report, no shrinking
    )


def test_admin_api_has_no_server_errors(server: RunningServer) -> None:
    schema = schemathesis.openapi.from_url(server.url + "/schema/openapi.json")
    admin = schema.include(path_regex="^/admin/v1/")
    failures: dict[str, str] = {}
    labels: list[str] = []
    for result in admin.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)
        for mode, examples in EXAMPLES.items():

            @settings(examples)
            @hypothesis.given(case=operation.as_strategy(mode))
            def run(case: Any) -> None:
                case.call_and_validate(
                    headers=server.admin_headers, checks=[not_a_server_error], timeout=10
                )

            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                continue  # nothing to make invalid (no parameters, or only a free-form key)
            except (Exception, BaseExceptionGroup) as error:  # collect all, then report
                failures[f"{operation.label} ({mode.value})"] = str(error)[:2000]
    print(f"\nschemathesis: {len(labels)} admin operations")
    assert len(labels) >= 20, labels
    assert any("POST /admin/v1/snapshot" in label for label in labels), labels
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
    assert "Traceback" not in server.log()

"""The rollouts page's next move (ui.views.next_move): what a plan does next and when, in
the duration spelling the CLI uses."""

from __future__ import annotations

import pytest

from flagport.rollout.plan import Plan, PlanSpec, PlanStatus
from flagport_server.ui.views import next_move
from flagport_server.wire.admin_v1 import PlanView

NOW = 1_800_000_000.0


def _view(status: str, step: int, next_at: float | None) -> PlanView:
    plan = Plan(
        version=1,
        spec=PlanSpec(key="checkout", steps=(10.0, 25.0, 50.0, 100.0), hold=3600),
        status=PlanStatus(status),
        created_at=NOW - 7200,
        updated_at=NOW - 60,
    )
    return PlanView(
        key="checkout",
        status=status,
        step=step,
        steps=[10.0, 25.0, 50.0, 100.0],
        percentage=None,
        now=NOW,
        next_at=next_at,
        decision="hold",
        reason=None,
        guards=[],
        plan=plan,
    )


@pytest.mark.parametrize(
    ("status", "step", "next_at", "what", "due_in"),
    [
        ("scheduled", 0, NOW + 90, "start at 10\u202f%", "1m30s"),
        ("running", 1, NOW + 3599.5, "step to 25\u202f%", "59m59s"),
        ("running", 3, NOW + 5400, "step to 100\u202f%", "1h30m"),
        ("running", 4, NOW + 60, "complete", "1m"),
        # Due: it waits for the driver's next tick (or its guards' samples).
        ("running", 2, NOW - 30, "step to 50\u202f%", "now"),
        ("running", 2, NOW + 0.4, "step to 50\u202f%", "now"),
        # After a step back from the first step nothing is exposed: the next is the first.
        ("running", 0, NOW + 60, "step to 10\u202f%", "1m"),
    ],
)
def test_the_next_move_says_what_and_when(
    status: str, step: int, next_at: float, what: str, due_in: str
) -> None:
    move = next_move(_view(status, step, next_at))
    assert move is not None
    assert (move.what, move.due_in) == (what, due_in)
    assert move.at.endswith("Z")


@pytest.mark.parametrize(
    ("status", "next_at"),
    [("paused", NOW + 60), ("completed", None), ("aborted", None), ("running", None)],
)
def test_a_plan_waiting_for_a_person_or_finished_has_no_next_move(
    status: str, next_at: float | None
) -> None:
    assert next_move(_view(status, 2, next_at)) is None

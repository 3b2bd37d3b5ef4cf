"""Admin API v1 wire models of approvals (``/admin/v1/approvals``, ``/admin/v1/requests``;
docs/spec.md, "Approvals"). Kept apart from :mod:`admin_v1` only for size: the same surface.

A change request carries the change as the matching admin call takes it, tagged by
``kind``: ``enable`` (``percentage``), ``put`` (a whole flag, as ``PUT /flags/{key}``),
``targets``, ``rules``, ``delete``, ``segment`` (a whole segment, ``key`` naming it),
``rollout-start`` (a plan's options) and ``rollout-resume``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from flagport.engine import Flag, Rule, Segment
from flagport.engine.models import KEY_PATTERN, MAX_KEY_LENGTH
from flagport.rollout.options import PlanOptions
from flagport_server.wire.fields import PRINTABLE_PATTERN, Reason

__all__ = [
    "ChangeRequestCreate",
    "ChangeRequestList",
    "ChangeRequestView",
    "Decision",
    "DeleteChange",
    "EnableChange",
    "PolicyCreate",
    "PolicyList",
    "PolicyView",
    "PutChange",
    "RequestChange",
    "RequestDecided",
    "RolloutResumeChange",
    "RolloutStartChange",
    "RulesChange",
    "SegmentChange",
    "TargetsChange",
]

_Key = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_KEY_LENGTH, pattern=KEY_PATTERN)]


class PolicyCreate(msgspec.Struct, forbid_unknown_fields=True):
    """Guard one flag (``flag``) or every flag with a tag (``tag``): name exactly one."""

    flag: _Key | None = None
    tag: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=PRINTABLE_PATTERN)] | None
    ) = None
    reason: Reason | None = None


class PolicyView(msgspec.Struct, omit_defaults=True):
    id: str
    kind: str
    target: str
    created_at: str
    created_by: str
    reason: str | None = None


class PolicyList(msgspec.Struct):
    policies: list[PolicyView]


class _Change(msgspec.Struct, forbid_unknown_fields=True, tag_field="kind"):
    pass


class EnableChange(_Change, tag="enable"):
    percentage: Annotated[float, msgspec.Meta(ge=0, le=100)] | None = None


class PutChange(_Change, tag="put"):
    """The whole flag, as ``PUT /admin/v1/flags/{key}`` takes it."""

    flag: Flag


class TargetsChange(_Change, tag="targets"):
    targets: dict[str, list[str]]


class RulesChange(_Change, tag="rules"):
    rules: list[Rule]


class DeleteChange(_Change, tag="delete"):
    pass


class SegmentChange(_Change, tag="segment"):
    """The whole segment named by the request's ``key``."""

    segment: Segment


class RolloutStartChange(_Change, tag="rollout-start"):
    """``flags rollout start``'s options; ``plan.key`` must be the request's ``key``."""

    plan: PlanOptions


class RolloutResumeChange(_Change, tag="rollout-resume"):
    pass


RequestChange = (
    EnableChange
    | PutChange
    | TargetsChange
    | RulesChange
    | DeleteChange
    | SegmentChange
    | RolloutStartChange
    | RolloutResumeChange
)


class ChangeRequestCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A change to ``key`` (a flag, or a segment for a ``segment`` change) for a second
    person to approve; ``reason`` is required (it is what the approver reads)."""

    key: _Key
    change: RequestChange
    reason: Reason


class Decision(msgspec.Struct, forbid_unknown_fields=True):
    """An approval or a rejection; the body may be left out."""

    reason: Reason | None = None


class ChangeRequestView(msgspec.Struct, omit_defaults=True):
    id: str
    key: str
    change: dict[str, Any]
    reason: str
    requested_by: str
    requested_by_id: str
    created_at: str
    expires_at: str
    status: Literal["pending", "applied", "rejected", "expired", "failed"]
    version: int | None = None
    decided_by: str | None = None
    decided_by_id: str | None = None
    decided_at: str | None = None
    decision: str | None = None
    #: True (status ``applied``) while the approval's change is being committed; a request
    #: cut short by a stopped server is settled, applied or failed, a minute after.
    applying: bool = False


class ChangeRequestList(msgspec.Struct):
    requests: list[ChangeRequestView]


class RequestDecided(msgspec.Struct, omit_defaults=True):
    """The request after the decision and, for an approval, the snapshot version that
    carries the change it applied."""

    request: ChangeRequestView
    snapshot_version: int | None = None

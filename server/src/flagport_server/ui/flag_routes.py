"""The admin UI's page of one flag (``/ui/flags/{key}``; docs/spec.md section 14): its
state with the kill switch, the edits (enable / percentage after a confirmation that
estimates the units it moves, targets, rules), its stats as SVG charts, its audit trail and
``explain``. Every edit carries the flag version it was made on and goes through the admin
service's compare-and-set (``expected``): a change made meanwhile in another browser is
shown, never overwritten. The kill switch is :func:`flagport_server.ui.routes.kill_switch`
(no version: it always applies).

A refused edit (a percentage typed as "fifty", targets that are not JSON, a version
conflict, an approval policy holding the change) renders the page again with the newer
state and the problem at its field; nothing is changed."""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec
from litestar import get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter
from litestar.response import Redirect, Template

from flagport_server.approvals import ApprovalService
from flagport_server.auth import ADMIN, VIEWER
from flagport_server.errors import ApprovalRequired, InvalidInput, VersionConflict
from flagport_server.stats.reports import StatsService
from flagport_server.ui.common import (
    Admin,
    Csrf,
    UiRequest,
    check_csrf,
    current_user,
    page,
    read_form,
    ui_opts,
)
from flagport_server.ui.flag_view import (
    ESTIMATE_WINDOW,
    EVALUATION_WINDOWS,
    MAX_UNIT,
    flag_page_view,
    parse_percentage,
    percentage_estimate,
)
from flagport_server.wire.admin_v1 import RulesRequest, TargetsRequest
from flagport_server.wire.fields import Reason, validation_problem

__all__ = ["FLAG_ROUTES", "TARGETING_BODY_LIMIT", "flag_path"]

Stats = NamedDependency[StatsService]
Approvals = NamedDependency[ApprovalService]

#: Targets and rules are JSON in a textarea: larger than the other forms, still bounded (the
#: configuration's own limits apply when the change is validated).
TARGETING_BODY_LIMIT: Final = 64 * 1024
#: A flag version, as the hidden field carries it.
Version = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,12}$")]


def flag_path(key: str) -> str:
    """The page of flag ``key`` (keys are letters, digits, ``.``, ``_`` and ``-``: nothing
    to quote)."""
    return f"/ui/flags/{key}"


class PercentageForm(msgspec.Struct, forbid_unknown_fields=True):
    csrf: Csrf
    version: Version
    percentage: Annotated[str, msgspec.Meta(max_length=32)]
    reason: Reason | None = None
    #: Absent: show the confirmation with the estimate; ``yes``: apply.
    confirmed: Annotated[str, msgspec.Meta(pattern="^yes$")] | None = None


class TargetingForm(msgspec.Struct, forbid_unknown_fields=True):
    """Targets or rules as the API's JSON (validated by its request models)."""

    csrf: Csrf
    version: Version
    value: Annotated[str, msgspec.Meta(max_length=TARGETING_BODY_LIMIT)]
    reason: Reason | None = None


async def _render(
    request: UiRequest,
    admin: Admin,
    stats: Stats,
    approvals: Approvals,
    key: str,
    *,
    status: int = 200,
    window: str = "6h",
    before_id: int | None = None,
    unit: str = "",
    field: str | None = None,
    problem: str | None = None,
    typed: dict[str, str] | None = None,
) -> Template:
    """The page of ``key``; with ``problem``, at ``field`` (a form's field) or above the page
    (a conflict, an approval required), and what was ``typed`` kept in the form."""
    view = await flag_page_view(
        admin,
        stats,
        key,
        await approvals.policies(),
        window=window,
        before_id=before_id,
        unit=unit,
    )
    return page(
        "flag.html",
        request,
        status,
        view=view,
        windows=list(EVALUATION_WINDOWS),
        field=field,
        problem=problem,
        typed=typed or {},
        before_id=before_id,
    )


def _conflict_text(key: str, error: VersionConflict) -> str:
    return (
        f"flag {key!r} was changed by someone else after you loaded this page (you edited "
        f"version {error.expected}, it is now version {error.actual}): nothing was "
        "overwritten. Below is the newer state; make your change again if it still applies."
    )


@get("/flags/{key:str}", opt=ui_opts(VIEWER), include_in_schema=False)
async def flag_page(
    key: FromPath[str],
    request: UiRequest,
    admin: Admin,
    stats: Stats,
    approvals: Approvals,
    window: Annotated[
        str, QueryParameter(required=False, pattern="^(" + "|".join(EVALUATION_WINDOWS) + ")$")
    ] = "6h",
    before_id: Annotated[int | None, QueryParameter(required=False, ge=1, le=2**53)] = None,
    unit: Annotated[str, QueryParameter(required=False, max_length=MAX_UNIT)] = "",
) -> Template:
    """The flag; ``window`` of the evaluations chart, ``before_id`` pages the audit trail
    back, ``unit``: a targeting key to explain the evaluation of."""
    return await _render(
        request, admin, stats, approvals, key, window=window, before_id=before_id, unit=unit
    )


async def _apply(
    request: UiRequest,
    admin: Admin,
    stats: Stats,
    approvals: Approvals,
    key: str,
    field: str,
    typed: dict[str, str],
    change: Any,
) -> Template | Redirect:
    """Await ``change`` (an admin service call); refused, the page again saying why."""
    try:
        await change
    except VersionConflict as error:
        return await _render(
            request,
            admin,
            stats,
            approvals,
            key,
            status=409,
            problem=_conflict_text(key, error),
        )
    except ApprovalRequired as error:
        return await _render(
            request,
            admin,
            stats,
            approvals,
            key,
            status=error.status_code,
            problem=f"Approval required: {error.detail}",
        )
    except InvalidInput as error:
        return await _render(
            request,
            admin,
            stats,
            approvals,
            key,
            status=400,
            field=field,
            problem=error.detail,
            typed=typed,
        )
    return Redirect(flag_path(key), status_code=303)


@post("/flags/{key:str}/percentage", opt=ui_opts(ADMIN), include_in_schema=False)
async def set_percentage(
    key: FromPath[str], request: UiRequest, admin: Admin, stats: Stats, approvals: Approvals
) -> Template | Redirect:
    """Enable at a percentage: first a confirmation saying how many units it adds or
    removes (:func:`~flagport_server.ui.flag_view.percentage_estimate`), then the admin
    service's enable at the version the form was made on."""
    user = current_user(request)
    form: PercentageForm = await read_form(request, PercentageForm)
    check_csrf(request, user.session, form.csrf)
    typed = {"percentage": form.percentage, "reason": form.reason or ""}
    try:
        percentage = parse_percentage(form.percentage)
    except InvalidInput as error:
        return await _render(
            request,
            admin,
            stats,
            approvals,
            key,
            status=400,
            field="percentage",
            problem=error.detail,
            typed=typed,
        )
    expected = int(form.version)
    if form.confirmed is None:
        flag, _ = await admin.get_flag(key)
        if flag.version != expected:
            return await _render(
                request,
                admin,
                stats,
                approvals,
                key,
                status=409,
                problem=_conflict_text(key, VersionConflict("flag", key, expected, flag.version)),
            )
        report = await stats.flag_report(key, ESTIMATE_WINDOW)
        return page(
            "flag_confirm.html",
            request,
            key=key,
            flag=flag,
            form=form,
            estimate=percentage_estimate(report.units_seen, flag, percentage),
        )
    return await _apply(
        request,
        admin,
        stats,
        approvals,
        key,
        "percentage",
        typed,
        admin.enable(key, percentage, user.actor, form.reason or None, expected),
    )


#: The API's model of each targeting textarea: its JSON is read under the model's one field.
_TARGETING_MODELS: Final[dict[str, type[Any]]] = {"targets": TargetsRequest, "rules": RulesRequest}


def _targeting(form: TargetingForm, field: str) -> Any:
    """The textarea's JSON as ``field`` (``targets`` or ``rules``), converted by the API's
    model."""
    try:
        value = msgspec.json.decode(form.value)
        return msgspec.convert({field: value}, type=_TARGETING_MODELS[field], strict=True)
    except msgspec.ValidationError as error:  # a DecodeError too: first
        raise InvalidInput(*validation_problem(str(error))) from None
    except msgspec.DecodeError as error:
        raise InvalidInput(f"{field} must be JSON: {error}", field) from None


async def _replace_targeting(
    key: str,
    request: UiRequest,
    admin: Admin,
    stats: Stats,
    approvals: Approvals,
    field: Literal["targets", "rules"],
) -> Template | Redirect:
    """One form posts each targeting textarea: read, check, then replace that field
    (a bad value renders the page again with what was typed and the problem)."""
    user = current_user(request)
    form: TargetingForm = await read_form(request, TargetingForm)
    check_csrf(request, user.session, form.csrf)
    typed = {field: form.value, "reason": form.reason or ""}
    try:
        parsed = _targeting(form, field)
    except InvalidInput as error:
        return await _render(
            request,
            admin,
            stats,
            approvals,
            key,
            status=400,
            field=field,
            problem=error.detail,
            typed=typed,
        )
    reason, version = form.reason or None, int(form.version)
    if field == "targets":
        write = admin.set_targets(key, parsed.targets, user.actor, reason, version)
    else:
        write = admin.set_rules(key, parsed.rules, user.actor, reason, version)
    return await _apply(request, admin, stats, approvals, key, field, typed, write)


@post(
    "/flags/{key:str}/targets",
    opt=ui_opts(ADMIN),
    include_in_schema=False,
    request_max_body_size=TARGETING_BODY_LIMIT + 4096,
)
async def set_targets(
    key: FromPath[str], request: UiRequest, admin: Admin, stats: Stats, approvals: Approvals
) -> Template | Redirect:
    """Replace the flag's individual targets (``{variant: [unit, ...]}``)."""
    return await _replace_targeting(key, request, admin, stats, approvals, "targets")


@post(
    "/flags/{key:str}/rules",
    opt=ui_opts(ADMIN),
    include_in_schema=False,
    request_max_body_size=TARGETING_BODY_LIMIT + 4096,
)
async def set_rules(
    key: FromPath[str], request: UiRequest, admin: Admin, stats: Stats, approvals: Approvals
) -> Template | Redirect:
    """Replace the flag's ordered rules (the API's rule objects)."""
    return await _replace_targeting(key, request, admin, stats, approvals, "rules")


FLAG_ROUTES: Final = [flag_page, set_percentage, set_targets, set_rules]

"""Cohorts (docs/spec.md section 13, "Cohorts" and "Cohort metadata"): which unit is in a
plan's treatment or control, and the flat metadata an answer carries so that a client can
report its requests for the plan.

Treatment is the plan flag's on variant served by the flag's own split, control its off
variant served by that split: a result with reason ``SPLIT`` (or ``STATIC`` when the split is
0 % or 100 %) that no gate decided. Units decided by a gating ancestor or prerequisite (the
result carries ``gatedBy``), by targets or rules (``TARGETING_MATCH``), a disabled flag
(``DISABLED``) or an error are in neither.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Final

from flagport.engine.models import EvaluationResult, Flag, Reason
from flagport.rollout.outcomes import Cohort

__all__ = [
    "COHORT_KEY",
    "FLAG_KEY",
    "VARIANT_KEY",
    "cohort_metadata",
    "cohort_of",
    "plan_flag_of",
]

#: The metadata entries of an answer in a plan's cohort (OFREP metadata values are flat).
FLAG_KEY: Final = "rolloutFlag"
COHORT_KEY: Final = "rolloutCohort"
VARIANT_KEY: Final = "rolloutVariant"

_OWN_SPLIT: Final = (Reason.SPLIT, Reason.STATIC)


def cohort_of(result: EvaluationResult, flag: Flag) -> Cohort | None:
    """The cohort ``result`` (the plan flag's own answer for a unit) puts the unit in."""
    if result.reason not in _OWN_SPLIT or result.error_code is not None:
        return None
    if result.metadata is not None and "gatedBy" in result.metadata:
        return None
    if result.variant == flag.on_variant:
        return Cohort.TREATMENT
    if result.variant == flag.off_variant:
        return Cohort.CONTROL
    return None


def cohort_metadata(plan_key: str, cohort: Cohort, variant: str) -> dict[str, str]:
    """The entries an answer in ``plan_key``'s ``cohort`` carries."""
    return {FLAG_KEY: plan_key, COHORT_KEY: cohort.value, VARIANT_KEY: variant}


def plan_flag_of(flags: Mapping[str, Flag], plan_keys: Collection[str]) -> dict[str, str]:
    """Every flag whose answers report for a plan, with that plan's flag: the plan flags
    themselves, their dotted descendants (``ui-improvements.dropdown-fixes`` under
    ``ui-improvements``) and the flags that name one as a prerequisite. A flag under
    several plans reports for the nearest: itself, then its closest ancestor, then its
    first prerequisite."""
    plans = set(plan_keys) & flags.keys()
    if not plans:
        return {}
    reporting: dict[str, str] = {}
    for key, flag in flags.items():
        if key in plans:
            reporting[key] = key
            continue
        parts = key.split(".")
        for end in range(len(parts) - 1, 0, -1):
            ancestor = ".".join(parts[:end])
            if ancestor in plans:
                reporting[key] = ancestor
                break
        else:
            for prerequisite in flag.prerequisites:
                if prerequisite.key in plans:
                    reporting[key] = prerequisite.key
                    break
    return reporting

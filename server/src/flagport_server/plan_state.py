"""How rollout-plan mutations change a store's plans (docs/spec.md, "Guarded rollouts"):
the one home of that rule for whoever builds a state a commit makes without reading the
store back (``runtime.committed_state``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from flagport.rollout.plan import Plan
from flagport_server.stores.base import Mutation

__all__ = ["committed_plans", "plan_keys"]


def plan_keys(mutations: Sequence[Mutation]) -> set[str]:
    """The flag keys whose plan ``mutations`` write."""
    return {mutation.key for mutation in mutations if mutation.kind == "plan"}


def committed_plans(plans: Mapping[str, Plan], mutations: Sequence[Mutation]) -> dict[str, Plan]:
    """``plans`` once ``mutations`` are committed onto them, in key order (as loaded)."""
    after = dict(plans)
    for mutation in mutations:
        if mutation.kind != "plan":
            continue
        if isinstance(mutation.value, Plan):
            after[mutation.key] = mutation.value
        else:
            after.pop(mutation.key, None)
    return dict(sorted(after.items()))

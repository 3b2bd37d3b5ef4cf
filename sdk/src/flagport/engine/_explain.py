"""Explain an evaluation step by step (``flags explain``, ``POST .../explain``).

The trace walks the same compiled pieces the evaluator uses (gates, targets, rule matchers,
splits), and the result it reports is always the evaluator's own, so the explanation cannot
drift from what the engine serves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mmh3

from flagport.engine._bucketing import bucket_of_hash, point_of_hash
from flagport.engine._common import unit_text
from flagport.engine._flag import CompiledFlag, Split
from flagport.engine._snapshot import CompiledSnapshot
from flagport.engine.models import EvaluationResult

__all__ = ["explain"]


def _result(result: EvaluationResult) -> dict[str, Any]:
    out: dict[str, Any] = {
        "value": result.value,
        "variant": result.variant,
        "reason": result.reason.value,
    }
    if result.error_code is not None:
        out["error_code"] = result.error_code.value
        out["error_message"] = result.error_message
    if result.metadata:
        out["metadata"] = result.metadata
    return out


def _split_trace(flag: CompiledFlag, split: Split, context: Mapping[str, Any]) -> dict[str, Any]:
    trace: dict[str, Any] = {"threshold": split.threshold, "percentage": split.threshold / 1000}
    if split.weighted:
        trace["weights"] = dict(
            zip(
                split.variants,
                [b - a for a, b in zip([0, *split.cumulative], split.cumulative, strict=False)],
                strict=True,
            )
        )
    if not split.needs_unit():
        trace["needs_unit"] = False
        return trace
    trace["bucket_by"] = flag.bucket_by
    unit = unit_text(context.get(flag.bucket_by))
    if type(unit) is not str:  # missing, or not a usable unit (the result says which)
        trace["unit"] = None
        trace["included"] = None
        return trace
    hash_input = flag.prefix + unit
    hashed = mmh3.hash(hash_input, 0, False)
    bucket = bucket_of_hash(hashed)
    trace.update(
        unit=unit,
        hash_input=hash_input,
        hash=hashed,
        bucket=bucket,
        included=bucket < split.threshold,
    )
    if split.weighted and bucket < split.threshold:
        point = point_of_hash(mmh3.hash(hash_input, 1, False), split.total)
        trace["weight_point"] = point
        trace["weight_total"] = split.total
    return trace


def _explain_flag(
    flag: CompiledFlag, context: Mapping[str, Any], now: float | None
) -> dict[str, Any]:
    trace: dict[str, Any] = {"key": flag.key, "salt": flag.prefix[:-1]}
    if flag.broken is not None:
        trace["broken"] = str(flag.broken)
    gates = []
    for gate in flag.declared_gates:
        upstream = gate.flag.evaluate(context, now)
        gates.append(
            {
                "kind": gate.kind,
                "required_variant": gate.variant,
                "passes": upstream.error_code is None and gate.passes(upstream),
                **_explain_flag(gate.flag, context, now),
            }
        )
    if gates:
        trace["gates"] = gates
    blocking = next((gate["key"] for gate in gates if not gate["passes"]), None)
    if blocking is not None:  # the flag's own steps were never reached
        trace["steps"] = [{"step": "gated", "by": blocking}]
        trace["result"] = _result(flag.evaluate(context, now))
        return trace
    steps: list[dict[str, Any]] = [{"step": "enabled", "value": flag.enabled}]
    targeted = None
    if flag.enabled and flag.targets:
        key_text = unit_text(context.get("targetingKey"))
        targeted = flag.targets.get(key_text) if type(key_text) is str else None
        steps.append({"step": "targets", "targetingKey": key_text, "matched": targeted})
    if flag.enabled and targeted is None:
        for index, rule in enumerate(flag.rules):
            conditions = [bool(matcher(context, now)) for matcher in rule.conditions]
            entry: dict[str, Any] = {
                "step": "rule",
                "index": index,
                "name": rule.name,
                "conditions": conditions,
                "matched": all(conditions),
            }
            if rule.variant is not None:
                entry["variant"] = rule.variant
            elif rule.split is not None and all(conditions):
                entry["split"] = _split_trace(flag, rule.split, context)
            steps.append(entry)
            if all(conditions):
                break
        else:
            steps.append({"step": "split", **_split_trace(flag, flag.split, context)})
    trace["steps"] = steps
    trace["result"] = _result(flag.evaluate(context, now))
    return trace


def explain(
    snapshot: CompiledSnapshot, key: str, context: Mapping[str, Any], now: float | None = None
) -> dict[str, Any]:
    """A JSON-ready trace of how ``key`` evaluates for ``context``: each ancestor and
    prerequisite considered, each rule and condition, hash input, hash, bucket, threshold,
    the result and its reason. Unknown keys give just the (FLAG_NOT_FOUND) result."""
    flag = snapshot.flag(key)
    if flag is None:
        return {"key": key, "result": _result(snapshot.evaluate(key, context, now))}
    return {"snapshot_version": snapshot.version, **_explain_flag(flag, context, now)}
